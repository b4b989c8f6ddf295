"""Gaussian-mixture vector quantization trained with the aggregated-posterior
bound, ALBO ("Gaussian Mixture Vector Quantization with Aggregated Categorical
Posterior"; here in its first use for translation).

A head on z_e emits a proxy z^ and raw weights w~, w = softplus(w~) [N, D]:

    logits_k = -sum_d w_d (z^_d - mu_k,d)^2         q(c | x) = softmax(logits)
    c ~ Gumbel-softmax(logits, tau), tau annealed 2.0 -> 0.1 (straight-through one-hot)
    sigma_c^2 = ||z^ - mu_c||^2 / (2 sigma^2 D)     (adaptive: small when z^ sits on its code)
    z = mu_c + sigma_c * eps  in training,   z = mu_argmax  at eval
    loss = gamma * ||z - mu_c||^2 + beta * KL(q_bar || uniform)

q_bar is q averaged over the batch's non-padding latents: the aggregated
posterior, which spreads usage over the codebook without the per-position
entropy term (deliberately absent, it fights the Gumbel estimator). No EMA and
no commitment loss: the means mu are a parameter, k-means-initialised on z^.
Losses follow the package's conventions: squared distances are averaged over
dimensions and summed over latents, and the KL counts once per latent.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import BottleneckOutput, full_precision, kl_to_uniform, register_bottleneck
from .code_space import code_space_from_config
from .codebook_bottleneck import CodebookBottleneck
from .learned_codebook import LearnedCodebook
from .schedules import geometric_anneal


def weighted_distance_logits(z_hat: Tensor, weights: Tensor, means: Tensor) -> Tensor:
    """-sum_d w_d (z^_d - mu_kd)^2 for z^, w [N, D] and means [K, D] -> [N, K], without an [N, K, D] tensor."""
    return -(
        (weights * z_hat.pow(2)).sum(-1, keepdim=True)
        - 2.0 * (weights * z_hat) @ means.t()
        + weights @ means.pow(2).t()
    )


def adaptive_scale(z_hat: Tensor, mu_c: Tensor, sigma2: float) -> Tensor:
    """sigma_c = sqrt(||z^ - mu_c||^2 / (2 sigma^2 D)) [N, 1]. The tiny offset keeps the
    gradient of the square root finite where z^ sits exactly on its code (k-means
    centres and re-seeded codes are encoder outputs)."""
    sq = (z_hat - mu_c).pow(2).sum(-1, keepdim=True) / (2 * sigma2 * z_hat.size(-1))
    return (sq + 1e-12).sqrt()


@register_bottleneck("gmvq")
class GaussianMixtureBottleneck(CodebookBottleneck):
    def __init__(
        self,
        codebook: LearnedCodebook,
        gamma: float,
        beta: float,
        sigma: float,
        temperature_start: float,
        temperature_end: float,
        anneal_updates: int,
        **code_space,
    ):
        super().__init__(codebook, **code_space)  # the means mu
        self.dim = codebook.dim
        self.head = nn.Linear(self.dim, 2 * self.dim)  # -> z^, w~
        self.gamma, self.beta, self.sigma2 = gamma, beta, sigma**2
        self.tau_start, self.tau_end, self.anneal_updates = temperature_start, temperature_end, anneal_updates
        self.temperature = self.tau_start

    @classmethod
    def from_config(cls, cfg, dim: int) -> "GaussianMixtureBottleneck":
        code_dim, space = code_space_from_config(cfg, dim)
        return cls(LearnedCodebook.from_config(cfg, code_dim), cfg.gmvq_gamma, cfg.gmvq_beta, cfg.gmvq_sigma,
                   cfg.temperature_start, cfg.temperature_end, cfg.anneal_updates, **space)

    def set_num_updates(self, num_updates: int) -> None:
        self.temperature = geometric_anneal(self.tau_start, self.tau_end, num_updates, self.anneal_updates)

    def quantize(self, z_code: Tensor, padding_mask: Tensor) -> BottleneckOutput:
        z = z_code[~padding_mask]  # [N, D]
        with full_precision(z):
            z_hat, raw_weights = self.head(z).float().chunk(2, dim=-1)  # [N, D] each
            self.prepare_codebook(z_hat)  # the means are fitted to the proxies
            logits = weighted_distance_logits(z_hat, F.softplus(raw_weights), self.codebook.embed.float())
            q = logits.softmax(-1)  # [N, K]
            means = self.codebook.embed.float()
            if self.training:
                y = F.gumbel_softmax(logits, tau=self.temperature, hard=True)  # one-hot, soft gradients
                codes = y.argmax(-1)
                mu_c = y @ means  # [N, D]
                sigma_c = adaptive_scale(z_hat, mu_c, self.sigma2)
                z_q = mu_c + sigma_c * torch.randn_like(mu_c)
                self.codebook.count_usage(y.detach(), contribute=self.learn_from_batch)
            else:
                codes = logits.argmax(-1)
                mu_c = z_q = means[codes]
            latent_reg = (z_q - mu_c).pow(2).mean(-1).sum()
            kl = kl_to_uniform(q.mean(0)) * len(z) if len(z) > 0 else q.new_zeros(())
            loss = self.gamma * latent_reg + self.beta * kl
        return self.output(z_q.to(z.dtype), codes, q, loss, padding_mask)
