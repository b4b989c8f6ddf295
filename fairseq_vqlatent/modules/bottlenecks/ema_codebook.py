"""A codebook learned by the EMA form of the (soft) k-means M-step.

With per-batch assignments r [N, K] (one-hot for hard EM, fractional for soft
EM) and data z [N, D]:

    n_k = sum_i r_ik                   m_k_batch = sum_i r_ik z_i
    N_k <- g N_k + (1 - g) n_k          m_k <- g m_k + (1 - g) m_k_batch
    N~_k = (N_k + eps) / (n + K eps) * n,   n = sum_k N_k   (Laplace smoothing)
    e_k = m_k / N~_k

With g = 0 one update is exactly the M-step.

With ``cosine=True`` data and codes live on the sphere of radius sqrt(D) (the
scale of a LayerNorm'd vector): ``to_sphere`` is applied to z before the E-step
and to every code after the M-step (spherical k-means). Then every code has the
same norm, and the mean of a big cluster, shorter than its points, can no longer
be nearer to unrelated points than their own codes are.

The batch statistics are summed
over data-parallel workers before the update, so every worker holds the same
codebook. All statistics are fp32 whatever the model is cast to. k-means
initialisation and dead-code re-seeding come from :class:`Codebook`.

What counts as a dead code: with ``dead_by="assignment"`` a code whose EMA count
of assignments falls below the threshold. Under soft EM those counts are
fractional, and a code that sits among the crowd of codes near the latents keeps
a share of every latent's samples although it is never any latent's nearest code,
the one decoding uses: it stays "alive" and unused. ``dead_by="mode"`` counts, in
a running count of its own, how often each code is the posterior mode (the
nearest code), so re-seeding moves exactly the codes that decoding never picks.
Under hard EM the two are the same count.
"""

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import VQLatentError
from .codebook import Codebook, all_reduce_sum_, batch_statistics, ema_


def laplace_smoothed(counts: Tensor, eps: float) -> Tensor:
    n = counts.sum()
    return (counts + eps) / (n + counts.numel() * eps) * n


def to_sphere(x: Tensor) -> Tensor:
    """[..., D] -> the same directions at norm sqrt(D)."""
    return F.normalize(x, dim=-1) * math.sqrt(x.size(-1))


class EMACodebook(Codebook):
    def __init__(
        self,
        num_codes: int,
        dim: int,
        decay: float,
        eps: float,
        init: str = "kmeans",
        dead_threshold: float = 0.0,
        cosine: bool = False,
        dead_by: str = "assignment",
    ):
        super().__init__(num_codes, dim, decay, init=init, dead_threshold=dead_threshold)
        if dead_by not in ("assignment", "mode"):
            raise VQLatentError(f"unknown --dead-code-by {dead_by!r} (assignment or mode)")
        self.eps = eps
        self.cosine = cosine
        self.dead_by = dead_by
        if dead_by == "mode":  # only then: checkpoints without it load as before
            self.register_buffer("mode_count", torch.ones(num_codes))  # [K] EMA of nearest-code counts
        # The compressor ends in a LayerNorm, so z_e is on a unit-variance scale:
        # start the codes there. With count 1 and sum e_k, a code nobody picks
        # stays where it is instead of being divided by a vanishing count.
        embed = self.normalize(torch.randn(num_codes, dim))
        self.register_buffer("embed", embed)  # [K, D]
        self.register_buffer("ema_sum", embed.clone())  # [K, D]

    @classmethod
    def from_config(cls, cfg, dim: int) -> "EMACodebook":
        return cls(
            cfg.codebook_size,
            dim,
            cfg.ema_decay,
            cfg.ema_epsilon,
            init=getattr(cfg, "codebook_init", "kmeans"),
            dead_threshold=getattr(cfg, "dead_code_threshold", 0.0),
            cosine=getattr(cfg, "cosine_codes", False),
            dead_by=getattr(cfg, "dead_code_by", "assignment"),
        )

    def usage(self) -> Tensor:
        return self.mode_count if self.dead_by == "mode" else self.ema_count

    def normalize(self, x: Tensor) -> Tensor:
        """Onto the sphere for cosine codes; the identity otherwise."""
        return to_sphere(x) if self.cosine else x

    @torch.no_grad()
    def _set_codes(self, index: Tensor, values: Tensor) -> None:
        values = self.normalize(values.float())
        super()._set_codes(index, values)
        self.ema_sum[index] = values
        if self.dead_by == "mode":
            self.mode_count[index] = 1.0

    @torch.no_grad()
    def update(self, assign: Tensor, z: Tensor, contribute: bool = True, modes: Optional[Tensor] = None) -> None:
        """One EMA M-step from assignments [N, K] of data [N, D]; ``modes`` [N], the
        nearest codes, are counted for ``dead_by="mode"``."""
        self.last_reseeded = 0
        stats = list(batch_statistics(assign, z))  # counts [K], sums [K, D]
        if self.dead_by == "mode":
            if modes is None:
                raise ValueError("dead_by='mode' needs the nearest codes (modes) of the batch")
            stats.append(torch.bincount(modes, minlength=self.num_codes).float())
        if not contribute:
            for s in stats:
                s.zero_()
        all_reduce_sum_(*stats)
        counts, sums = stats[:2]
        if counts.sum() == 0:  # nobody had data (dummy batches): no step, not even the decay
            return
        ema_(self.ema_count, counts, self.decay)
        if self.dead_by == "mode":
            ema_(self.mode_count, stats[2], self.decay)
        ema_(self.ema_sum, sums, self.decay)
        self.embed.copy_(self.normalize(self.ema_sum / laplace_smoothed(self.ema_count, self.eps).unsqueeze(1)))
        self.reseed_dead_codes(z if contribute else z[:0])
