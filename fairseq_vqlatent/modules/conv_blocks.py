"""1-D convolution blocks of the compressing encoder and the decompressor.

All work on [B, T, D] with a padding mask [B, T] (True at padding). Padding is
zeroed after every convolution so that a position's output never depends on how
much padding its batch happened to have.
"""

import torch.nn.functional as F
from torch import Tensor, nn


def zero_padding(x: Tensor, padding_mask: Tensor) -> Tensor:
    return x.masked_fill(padding_mask.unsqueeze(-1), 0.0)


class ConvLayer(nn.Module):
    """ReLU -> Conv1d -> LayerNorm, the unit of the reference implementation."""

    def __init__(self, conv: nn.Module, dim: int):
        super().__init__()
        self.conv = conv
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:  # [B, T, D] -> [B, T', D]
        x = self.conv(F.relu(x).transpose(1, 2)).transpose(1, 2)
        return self.norm(x)


class ResidualConvBlock(nn.Module):
    """x + dropout(depth x [ReLU -> conv(k=3) -> LayerNorm])."""

    def __init__(self, dim: int, dropout: float, depth: int = 3, kernel_size: int = 3):
        super().__init__()
        self.layers = nn.ModuleList(
            ConvLayer(nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2), dim)
            for _ in range(depth)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, padding_mask: Tensor) -> Tensor:
        y = x
        for layer in self.layers:
            y = zero_padding(layer(y), padding_mask)
        return x + self.dropout(y)


class Downsample(nn.Module):
    """Halves the length: ReLU -> conv(k=2, stride 2) -> LayerNorm. Needs an even length."""

    def __init__(self, dim: int):
        super().__init__()
        self.layer = ConvLayer(nn.Conv1d(dim, dim, 2, stride=2), dim)

    def forward(self, x: Tensor, padding_mask: Tensor):
        B, T = padding_mask.shape
        mask = padding_mask.view(B, T // 2, 2).all(-1)  # a latent is padding if all it covers is
        return zero_padding(self.layer(x), mask), mask


class Upsample(nn.Module):
    """Doubles the length: ReLU -> transposed conv(k=2, stride 2) -> LayerNorm."""

    def __init__(self, dim: int):
        super().__init__()
        self.layer = ConvLayer(nn.ConvTranspose1d(dim, dim, 2, stride=2), dim)

    def forward(self, x: Tensor, padding_mask: Tensor):
        mask = padding_mask.repeat_interleave(2, dim=1)
        return zero_padding(self.layer(x), mask), mask
