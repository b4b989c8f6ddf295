"""Codebook bottlenecks learned by EM.

An E-step turns the distances to the codes into responsibilities r [N, K]; the
decoder receives sum_k r_k e_k through a straight-through estimator; the EMA
codebook takes the M-step with r. Hard and soft EM differ only in the E-step.
In eval mode the E-step is the posterior mode, so evaluation is deterministic.
"""

import torch
from torch import Tensor

from .base import (
    Bottleneck,
    BottleneckOutput,
    commitment_loss,
    full_precision,
    one_hot_float,
    scatter_positions,
)
from .ema_codebook import EMACodebook


class EMBottleneck(Bottleneck):
    def __init__(self, dim: int, cfg):
        super().__init__()
        self.num_codes = cfg.codebook_size
        self.beta = cfg.commitment_beta
        self.codebook = EMACodebook.from_config(cfg, dim)

    def e_step(self, logits: Tensor, codes: Tensor) -> Tensor:
        """Training-time responsibilities r [N, K] from logits -||z - e_k||^2 [N, K]
        and the nearest codes [N]."""
        raise NotImplementedError

    def forward(self, z_e: Tensor, padding_mask: Tensor) -> BottleneckOutput:
        z = self.codebook.normalize(z_e[~padding_mask])  # [N, D]
        with torch.no_grad(), full_precision(z):
            if self.training:
                self.codebook.maybe_initialize(z, contribute=self.learn_from_batch)
            logits = -self.codebook.distances(z)  # [N, K]
            codes = logits.argmax(-1)  # [N] nearest code, the posterior mode
            r = self.e_step(logits, codes) if self.training else one_hot_float(codes, self.num_codes)
            e_avg = (r @ self.codebook.embed).to(z.dtype)  # [N, D], before the M-step
            if self.training:
                self.codebook.update(r, z, contribute=self.learn_from_batch)
        z_q = z + (e_avg - z).detach()  # straight-through
        return BottleneckOutput(
            z_q=scatter_positions(z_q, padding_mask),
            codes=scatter_positions(codes, padding_mask),
            code_targets=scatter_positions(r, padding_mask),
            loss=self.beta * commitment_loss(z, e_avg),
            dead_codes=self.codebook.num_dead_codes(),
            reseeded_codes=self.codebook.last_reseeded if self.training else 0,
        )

    def embed_codes(self, codes: Tensor) -> Tensor:
        return self.codebook.lookup(codes)
