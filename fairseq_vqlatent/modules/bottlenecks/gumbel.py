"""Gumbel-softmax over a codebook (Jang et al. 2017; Maddison et al. 2017), as
compared in Roy et al. 2018.

The logits are negative squared distances to K learned codes. In training the
decoder receives the relaxed sample y @ E, y = softmax((logits + Gumbel noise) / tau),
with tau annealed from ``--temperature-start`` to ``--temperature-end`` over
``--anneal-updates``; in eval mode it receives the nearest code. The prior is
trained on the posterior softmax(logits). The codes learn by gradient descent.
"""

import torch.nn.functional as F
from torch import Tensor

from .base import Bottleneck, BottleneckOutput, full_precision, one_hot_float, register_bottleneck, scatter_positions
from .learned_codebook import LearnedCodebook
from .schedules import geometric_anneal


@register_bottleneck("gumbel")
class GumbelBottleneck(Bottleneck):
    def __init__(self, dim: int, cfg):
        super().__init__()
        self.num_codes = cfg.codebook_size
        self.codebook = LearnedCodebook.from_config(cfg, dim)
        self.tau_start, self.tau_end, self.anneal_updates = cfg.temperature_start, cfg.temperature_end, cfg.anneal_updates
        self.temperature = self.tau_start

    def set_num_updates(self, num_updates: int) -> None:
        self.temperature = geometric_anneal(self.tau_start, self.tau_end, num_updates, self.anneal_updates)

    def forward(self, z_e: Tensor, padding_mask: Tensor) -> BottleneckOutput:
        z = z_e[~padding_mask]  # [N, D]
        with full_precision(z):
            if self.training:
                # Before the codes enter this step's graph: both write the parameter in place.
                self.codebook.maybe_initialize(z, contribute=self.learn_from_batch)
                self.codebook.reseed_dead_codes(z.detach() if self.learn_from_batch else z[:0])
            logits = -self.codebook.distances(z)  # [N, K], fp32, differentiable in z and the codes
            posterior = logits.softmax(-1)
            if self.training:
                y = F.gumbel_softmax(logits, tau=self.temperature, hard=False)  # [N, K]
                codes = y.argmax(-1)
                self.codebook.count_usage(one_hot_float(codes, self.num_codes), contribute=self.learn_from_batch)
            else:
                codes = logits.argmax(-1)
                y = one_hot_float(codes, self.num_codes)
            z_q = (y @ self.codebook.embed.float()).to(z.dtype)  # [N, D]
        return BottleneckOutput(
            z_q=scatter_positions(z_q, padding_mask),
            codes=scatter_positions(codes, padding_mask),
            code_targets=scatter_positions(posterior.detach(), padding_mask),
            loss=z_q.new_zeros(()).float(),
            dead_codes=self.codebook.num_dead_codes(),
            reseeded_codes=self.codebook.last_reseeded if self.training else 0,
        )

    def embed_codes(self, codes: Tensor) -> Tensor:
        return self.codebook.lookup(codes)
