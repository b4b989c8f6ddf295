"""Codebook bottlenecks learned by EM.

An E-step turns the distances to the codes into responsibilities r [N, K]; the
decoder receives sum_k r_k e_k through a straight-through estimator; the EMA
codebook takes the M-step with r. Hard and soft EM differ only in the E-step.
In eval mode the E-step is the posterior mode, so evaluation is deterministic.

The EMA M-step moves codes towards the encoder outputs they own but never moves
an encoder output towards a code nobody uses, so usage can collapse onto a few
codes. ``diversity`` > 0 adds KL(q_bar || uniform) for the batch's aggregated
posterior q_bar = mean_n softmax(-||z_n - e_k||^2), the E-step's own distribution,
once per latent: the diversity loss of wav2vec 2.0 (Baevski et al. 2020) and
gmvq's ALBO term. Its gradient reaches z (the encoder) and not the codebook.

Diversity alone can spread usage while each latent's own posterior stays wide, so
that the m sampled codes disagree and the decoder learns to ignore their average.
``sharpness`` > 0 adds E_n[H(q_n)], the posterior's entropy per latent. With equal
weights the two terms are -I(z; c) + log K, the mutual information objective of
IMSAT (Hu et al. 2017, "Learning discrete representations via information
maximizing self-augmented training"): codes used alike over the batch, and each
latent sure of its own.
"""

import torch
from torch import Tensor

from .base import BottleneckOutput, commitment_loss, full_precision, kl_to_uniform, one_hot_float
from .code_space import code_space_from_config
from .codebook import squared_distances
from .codebook_bottleneck import CodebookBottleneck
from .ema_codebook import EMACodebook


class EMBottleneck(CodebookBottleneck):
    codebook: EMACodebook

    def __init__(
        self, codebook: EMACodebook, commitment_beta: float, diversity: float = 0.0, sharpness: float = 0.0,
        **code_space,
    ):
        super().__init__(codebook, **code_space)
        self.beta = commitment_beta
        self.diversity = diversity
        self.sharpness = sharpness

    @classmethod
    def from_config(cls, cfg, dim: int) -> "EMBottleneck":
        code_dim, space = code_space_from_config(cfg, dim)
        return cls(EMACodebook.from_config(cfg, code_dim), cfg.commitment_beta, *posterior_weights(cfg), **space)

    def e_step(self, logits: Tensor, codes: Tensor) -> Tensor:
        """Training-time responsibilities r [N, K] from logits -||z - e_k||^2 [N, K]
        and the nearest codes [N]."""
        raise NotImplementedError

    def quantize(self, z_code: Tensor, padding_mask: Tensor) -> BottleneckOutput:
        z = self.codebook.normalize(z_code[~padding_mask])  # [N, D]
        with torch.no_grad(), full_precision(z):
            self.prepare_codebook(z)
            logits = -self.codebook.distances(z)  # [N, K]
            codes = logits.argmax(-1)  # [N] nearest code, the posterior mode
            r = self.e_step(logits, codes) if self.training else one_hot_float(codes, self.num_codes)
            e_avg = (r @ self.codebook.embed).to(z.dtype)  # [N, D], before the M-step
        loss = self.beta * commitment_loss(z, e_avg)
        if (self.diversity > 0 or self.sharpness > 0) and self.training and len(z) > 0:
            loss = loss + self.posterior_loss(z)
        if self.training:  # the M-step, then re-seeding of the codes it left unused
            with torch.no_grad(), full_precision(z):
                self.codebook.update(r, z, contribute=self.learn_from_batch, modes=codes)
        z_q = z + (e_avg - z).detach()  # straight-through
        return self.output(z_q, codes, r, loss, padding_mask)

    def log_posterior(self, z: Tensor, codes: Tensor) -> Tensor:
        """z [N, d] (normalised) and codes [K, d] -> log q(c | z) = log softmax_k(-||z - e_k||^2) [N, K]:
        the distribution soft EM samples from."""
        return (-squared_distances(z, codes)).log_softmax(-1)

    def posterior_loss(self, z: Tensor) -> Tensor:
        """z [N, D] -> N * (diversity * KL(q_bar || uniform) + sharpness * mean_n H(q_n)),
        differentiable in z. The codes are copied: the M-step changes them in place
        before the backward pass."""
        with full_precision(z):
            log_q = self.log_posterior(z, self.codebook.embed.clone())  # [N, K]
            q = log_q.exp()
            loss = self.diversity * kl_to_uniform(q.mean(0)) - self.sharpness * (q * log_q).sum(-1).mean()
        return loss * len(z)


def posterior_weights(cfg) -> tuple:
    """(diversity, sharpness) from a config; checkpoints from before them lack them."""
    return getattr(cfg, "code_diversity", 0.0), getattr(cfg, "code_sharpness", 0.0)
