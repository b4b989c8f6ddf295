"""Finite scalar quantization (Mentzer et al. 2023, "Finite Scalar Quantization:
VQ-VAE Made Simple"), through vector-quantize-pytorch's ``FSQ``.

z_e is projected to len(levels) dimensions, each bounded (tanh) and rounded to
one of L_i values, straight-through; the code is the tuple of levels, so
K = prod(L_i) and ``--codebook-size`` is ignored. There is no codebook to learn,
hence none to collapse, no commitment loss and no dead codes. The prior is
trained on the one-hot code.
"""

from typing import List

from torch import Tensor
from vector_quantize_pytorch import FSQ

from ...errors import VQLatentError
from .base import Bottleneck, BottleneckOutput, one_hot_float, register_bottleneck, scatter_positions
from .code_space import code_space_from_config


def parse_levels(spec: str) -> List[int]:
    try:
        levels = [int(x) for x in str(spec).split(",")]
    except ValueError:
        levels = []
    if not levels or any(level < 2 for level in levels):
        raise VQLatentError(f"--fsq-levels must be comma-separated integers >= 2 (e.g. 8,5,5,5), got {spec!r}")
    return levels


@register_bottleneck("fsq")
class FSQBottleneck(Bottleneck):
    def __init__(self, dim: int, levels: List[int], **code_space):
        super().__init__(dim, **code_space)
        # vector-quantize-pytorch places two levels only with its symmetric grid
        self.fsq = FSQ(levels=levels, dim=dim, preserve_symmetry=2 in levels)
        self.num_codes = int(self.fsq.codebook_size)

    @classmethod
    def from_config(cls, cfg, dim: int) -> "FSQBottleneck":
        code_dim, space = code_space_from_config(cfg, dim)
        return cls(code_dim, parse_levels(cfg.fsq_levels), **space)

    def quantize(self, z_code: Tensor, padding_mask: Tensor) -> BottleneckOutput:
        z = z_code[~padding_mask].unsqueeze(0)  # [1, N, D]: FSQ works on sequences
        z_q, codes = self.fsq(z)
        z_q, codes = z_q.squeeze(0), codes.squeeze(0).long()  # [N, D], [N]
        return BottleneckOutput(
            z_q=scatter_positions(z_q, padding_mask),
            codes=scatter_positions(codes, padding_mask),
            code_targets=scatter_positions(one_hot_float(codes, self.num_codes), padding_mask),
            loss=z_q.new_zeros(()).float(),
        )

    def code_vectors(self, codes: Tensor) -> Tensor:
        return self.fsq.indices_to_codes(codes)
