"""Monte-Carlo soft EM (Roy et al. 2018, "Theory and experiments on vector
quantized autoencoders").

E-step: draw m codes per position from Multinomial(logits = -||z_e - e_k||^2);
the responsibilities r are the mean of the m one-hots. The EMA M-step uses the
fractional r, the decoder receives the average of the m sampled embeddings, and
the prior is trained on r: a sample-based label smoothing of the latent loss.
"""

import torch
from torch import Tensor

from .base import register_bottleneck
from .code_space import code_space_from_config
from .em_bottleneck import EMBottleneck, posterior_weights
from .ema_codebook import EMACodebook


def sample_responsibilities(logits: Tensor, num_samples: int) -> Tensor:
    """logits [N, K] -> r [N, K]: the mean of ``num_samples`` sampled one-hots."""
    samples = torch.multinomial(logits.float().softmax(-1), num_samples, replacement=True)  # [N, m]
    r = torch.zeros(logits.shape, device=logits.device)
    return r.scatter_add_(1, samples, torch.full(samples.shape, 1.0 / num_samples, device=logits.device))


@register_bottleneck("soft_em")
class SoftEMBottleneck(EMBottleneck):
    def __init__(
        self, codebook: EMACodebook, commitment_beta: float, num_samples: int, diversity: float = 0.0,
        sharpness: float = 0.0, **code_space,
    ):
        super().__init__(codebook, commitment_beta, diversity, sharpness, **code_space)
        self.num_samples = num_samples

    @classmethod
    def from_config(cls, cfg, dim: int) -> "SoftEMBottleneck":
        code_dim, space = code_space_from_config(cfg, dim)
        return cls(EMACodebook.from_config(cfg, code_dim), cfg.commitment_beta, cfg.num_samples,
                   *posterior_weights(cfg), **space)

    def e_step(self, logits: Tensor, codes: Tensor) -> Tensor:
        return sample_responsibilities(logits, self.num_samples)
