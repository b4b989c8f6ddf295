"""Hard EM (k-means) vector quantization with an EMA codebook (van den Oord et al.
2017; Kaiser et al. 2018): nearest code, straight-through gradient, commitment loss."""

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


@register_bottleneck("vq")
class VQBottleneck(Bottleneck):
    def __init__(self, dim: int, cfg):
        super().__init__()
        self.num_codes = cfg.codebook_size
        self.beta = cfg.commitment_beta
        self.codebook = EMACodebook.from_config(cfg, dim)

    def forward(self, z_e: Tensor, padding_mask: Tensor) -> BottleneckOutput:
        z = z_e[~padding_mask]  # [N, D]
        with torch.no_grad(), full_precision(z):
            if self.training:
                self.codebook.maybe_initialize(z, contribute=self.learn_from_batch)
            codes = self.codebook.distances(z).argmin(-1)  # [N]
            assign = one_hot_float(codes, self.num_codes)  # [N, K]
            e_c = self.codebook.lookup(codes).to(z.dtype)  # [N, D], before the update
            if self.training:
                self.codebook.update(assign, z, contribute=self.learn_from_batch)
        z_q = z + (e_c - z).detach()  # straight-through
        return BottleneckOutput(
            z_q=scatter_positions(z_q, padding_mask),
            codes=scatter_positions(codes, padding_mask),
            code_targets=scatter_positions(assign, padding_mask),
            loss=self.beta * commitment_loss(z, e_c),
            dead_codes=self.codebook.num_dead_codes(),
            reseeded_codes=self.codebook.last_reseeded if self.training else 0,
        )

    def embed_codes(self, codes: Tensor) -> Tensor:
        return self.codebook.lookup(codes)
