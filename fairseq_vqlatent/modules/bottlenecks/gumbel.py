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

from .base import BottleneckOutput, full_precision, one_hot_float, register_bottleneck
from .code_space import code_space_from_config
from .codebook_bottleneck import CodebookBottleneck
from .learned_codebook import LearnedCodebook
from .schedules import geometric_anneal


@register_bottleneck("gumbel")
class GumbelBottleneck(CodebookBottleneck):
    def __init__(self, codebook: LearnedCodebook, temperature_start: float, temperature_end: float, anneal_updates: int,
                 **code_space):
        super().__init__(codebook, **code_space)
        self.tau_start, self.tau_end, self.anneal_updates = temperature_start, temperature_end, anneal_updates
        self.temperature = self.tau_start

    @classmethod
    def from_config(cls, cfg, dim: int) -> "GumbelBottleneck":
        code_dim, space = code_space_from_config(cfg, dim)
        return cls(LearnedCodebook.from_config(cfg, code_dim), cfg.temperature_start, cfg.temperature_end,
                   cfg.anneal_updates, **space)

    def set_num_updates(self, num_updates: int) -> None:
        self.temperature = geometric_anneal(self.tau_start, self.tau_end, num_updates, self.anneal_updates)

    def quantize(self, z_code: Tensor, padding_mask: Tensor) -> BottleneckOutput:
        z = z_code[~padding_mask]  # [N, D]
        with full_precision(z):
            self.prepare_codebook(z)
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
        return self.output(z_q, codes, posterior, z_q.new_zeros(()).float(), padding_mask)
