"""The compressing encoder: target tokens -> z_e, 2^n_c times shorter."""

import math
from typing import Optional, Tuple

import torch.nn.functional as F
from fairseq.modules import MultiheadAttention, PositionalEmbedding
from torch import Tensor, nn

from .conv_blocks import Downsample, ResidualConvBlock, zero_padding


def latent_length(target_length: int, compress_steps: int) -> int:
    """Latents needed for a target of ``target_length`` tokens (EOS included)."""
    return math.ceil(target_length / 2**compress_steps)


class Compressor(nn.Module):
    """Embeddings (+ positions) -> n_c residual conv blocks -> [optional
    attention to the source] -> n_c strided convs, each halving the length."""

    def __init__(self, cfg, embed_tokens: nn.Embedding, dim: int, max_positions: int):
        super().__init__()
        self.compress_steps = cfg.compress_steps
        self.padding_idx = embed_tokens.padding_idx
        self.embed_tokens = embed_tokens
        self.embed_scale = math.sqrt(dim)
        self.embed_positions = PositionalEmbedding(max_positions, dim, self.padding_idx, learned=False)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            ResidualConvBlock(dim, cfg.conv_dropout) for _ in range(cfg.compress_steps)
        )
        self.source_attention = None
        if cfg.compress_attend_source:
            self.source_attention = MultiheadAttention(
                dim, cfg.encoder_attention_heads, dropout=cfg.attention_dropout, encoder_decoder_attention=True
            )
            self.source_attention_norm = nn.LayerNorm(dim)
        self.downsample = nn.ModuleList(Downsample(dim) for _ in range(cfg.compress_steps))

    def forward(self, target: Tensor, encoder_out: Optional[dict] = None) -> Tuple[Tensor, Tensor]:
        """target [B, T] (right-padded) -> z_e [B, L, D], latent padding mask [B, L]."""
        factor = 2**self.compress_steps
        T = target.size(1)
        target = F.pad(target, (0, latent_length(T, self.compress_steps) * factor - T), value=self.padding_idx)
        mask = target.eq(self.padding_idx)  # [B, L * factor]

        x = self.embed_scale * self.embed_tokens(target) + self.embed_positions(target)
        x = zero_padding(self.dropout(x), mask)
        for block in self.blocks:
            x = block(x, mask)
        if self.source_attention is not None:
            x = zero_padding(x + self._attend_source(x, encoder_out), mask)
        for down in self.downsample:
            x, mask = down(x, mask)
        return x, mask

    def _attend_source(self, x: Tensor, encoder_out: dict) -> Tensor:
        q = self.source_attention_norm(x).transpose(0, 1)  # [T, B, D]
        enc = encoder_out["encoder_out"][0]
        enc_mask = encoder_out["encoder_padding_mask"][0] if encoder_out["encoder_padding_mask"] else None
        y, _ = self.source_attention(q, enc, enc, key_padding_mask=enc_mask, need_weights=False)
        return self.dropout(y.transpose(0, 1))
