"""Hard EM (k-means) vector quantization with an EMA codebook (van den Oord et al.
2017; Kaiser et al. 2018): each position takes its nearest code."""

from torch import Tensor

from .base import one_hot_float, register_bottleneck
from .em_bottleneck import EMBottleneck


@register_bottleneck("vq")
class VQBottleneck(EMBottleneck):
    def e_step(self, logits: Tensor, codes: Tensor) -> Tensor:
        return one_hot_float(codes, self.num_codes)
