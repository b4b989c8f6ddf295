"""The decompressing decoder: z_q [B, L, D] -> [B, L * 2^n_c, D]."""

from typing import Tuple

from torch import Tensor, nn

from .conv_blocks import ResidualConvBlock, Upsample


class Decompressor(nn.Module):
    """n_c x (residual conv block, transposed conv doubling the length)."""

    def __init__(self, cfg, dim: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            ResidualConvBlock(dim, cfg.conv_dropout) for _ in range(cfg.compress_steps)
        )
        self.upsample = nn.ModuleList(Upsample(dim) for _ in range(cfg.compress_steps))

    def forward(self, z_q: Tensor, latent_padding_mask: Tensor) -> Tuple[Tensor, Tensor]:
        x, mask = z_q, latent_padding_mask
        for block, up in zip(self.blocks, self.upsample):
            x, mask = up(block(x, mask), mask)
        return x, mask
