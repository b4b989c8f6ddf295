"""Monte-Carlo soft EM (Roy et al. 2018, "Theory and experiments on vector
quantized autoencoders").

E-step: draw m codes per position from Multinomial(logits = -||z_e - e_k||^2);
the responsibilities r are the mean of the m one-hots. M-step: the EMA codebook
update with fractional counts r. The decoder receives the average of the m
sampled embeddings (straight-through), and the prior is trained on r, a
sample-based label smoothing of the latent loss. At eval the E-step takes the
posterior mode, so evaluation is deterministic.
"""

import torch
from torch import Tensor

from .base import (
    Bottleneck,
    BottleneckOutput,
    commitment_loss,
    full_precision,
    one_hot_float,
    register_bottleneck,
    scatter_positions,
)
from .ema_codebook import EMACodebook


def sample_responsibilities(logits: Tensor, num_samples: int) -> Tensor:
    """logits [N, K] -> r [N, K]: the mean of ``num_samples`` sampled one-hots."""
    samples = torch.multinomial(logits.float().softmax(-1), num_samples, replacement=True)  # [N, m]
    r = torch.zeros(logits.shape, device=logits.device)
    return r.scatter_add_(1, samples, torch.full(samples.shape, 1.0 / num_samples, device=logits.device))


@register_bottleneck("soft_em")
class SoftEMBottleneck(Bottleneck):
    def __init__(self, dim: int, cfg):
        super().__init__()
        self.num_codes = cfg.codebook_size
        self.num_samples = cfg.num_samples
        self.beta = cfg.commitment_beta
        self.codebook = EMACodebook.from_config(cfg, dim)

    def forward(self, z_e: Tensor, padding_mask: Tensor) -> BottleneckOutput:
        z = z_e[~padding_mask]  # [N, D]
        with torch.no_grad(), full_precision(z):
            if self.training:
                self.codebook.maybe_initialize(z, contribute=self.learn_from_batch)
            logits = -self.codebook.distances(z)  # [N, K]
            codes = logits.argmax(-1)  # [N] posterior mode
            if self.training:
                r = sample_responsibilities(logits, self.num_samples)  # [N, K]
            else:
                r = one_hot_float(codes, self.num_codes)
            e_avg = (r @ self.codebook.embed).to(z.dtype)  # [N, D], before the update
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
