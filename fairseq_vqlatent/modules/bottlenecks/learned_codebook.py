"""A codebook trained by gradient descent (Gumbel-softmax, GM-VQ).

The codes are a parameter the optimizer updates like any weight, so workers stay
identical through fairseq's gradient all-reduce. Usage is still counted (an EMA
of all-reduced assignment counts) for the dead-code threshold, and k-means
initialisation and re-seeding write the parameter directly, on all workers alike.
"""

import torch
from torch import Tensor, nn

from ...errors import VQLatentError
from .codebook import Codebook


class LearnedCodebook(Codebook):
    def __init__(self, num_codes: int, dim: int, decay: float, init: str = "kmeans", dead_threshold: float = 0.0):
        super().__init__(num_codes, dim, decay, init=init, dead_threshold=dead_threshold)
        self.embed = nn.Parameter(torch.randn(num_codes, dim))  # [K, D], unit scale like the LayerNorm'd z_e

    @torch.no_grad()
    def before_step(self, z: Tensor, contribute: bool = True) -> None:
        # Both write the parameter in place, so both happen before it enters the step's graph.
        super().before_step(z, contribute)
        self.reseed_dead_codes(z if contribute else z[:0])

    @classmethod
    def from_config(cls, cfg, dim: int) -> "LearnedCodebook":
        if getattr(cfg, "dead_code_by", "assignment") != "assignment":
            # their assignments are already the codes decoding picks, or a posterior (gmvq) by design
            raise VQLatentError("--dead-code-by mode applies to the EM bottlenecks (soft_em, vq)")
        return cls(
            cfg.codebook_size,
            dim,
            cfg.ema_decay,
            init=getattr(cfg, "codebook_init", "kmeans"),
            dead_threshold=getattr(cfg, "dead_code_threshold", 0.0),
        )
