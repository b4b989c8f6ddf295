"""The output decoder: a Transformer decoder whose input is the decompressed
latent sequence rather than shifted target tokens, so every output position is
predicted in one pass (as fairseq's NAT decoders do)."""

from typing import Optional

import torch
import torch.nn.functional as F
from fairseq.models.transformer import TransformerDecoderBase
from torch import Tensor

from ..errors import VQLatentError
from . import lean_transformer


def output_targets(target: Tensor, output_padding_mask: Tensor, pad: int, eos: int) -> Tensor:
    """target [B, T] (right-padded, EOS-terminated) -> [B, T_out]: padded to the
    decoder's T_out = L * 2^n_c positions, the slots after EOS inside each
    sentence's last latent block filled with EOS, the rest padding."""
    T_out = output_padding_mask.size(1)
    target = F.pad(target, (0, T_out - target.size(1)), value=pad)
    return target.masked_fill(target.eq(pad) & ~output_padding_mask, eos)


class OneShotDecoder(TransformerDecoderBase):
    def __init__(self, cfg, dictionary, embed_tokens, causal: bool):
        super().__init__(cfg, dictionary, embed_tokens)
        self.causal = causal

    def forward(
        self,
        decoder_input: Tensor,
        padding_mask: Optional[Tensor] = None,
        encoder_out: Optional[dict] = None,
        features_only: bool = False,
        vocab: Optional[Tensor] = None,
        **unused,
    ):
        """decoder_input [B, T, D], padding_mask [B, T] -> logits [B, T, V], or [B, T, V'] for
        the types ``vocab`` [V'] alone (a shortlist: the projection costs V' / V as much)."""
        if not torch.is_floating_point(decoder_input):
            raise VQLatentError(
                "a vqlatent_transformer decodes in one shot from latent codes, not token by token: "
                "decode it with --task translation_vqlatent"
            )
        x = self.extract_features(decoder_input, padding_mask, encoder_out)
        if features_only:
            return x
        return self.output_layer(x) if vocab is None else F.linear(x, self.output_projection.weight[vocab])

    def extract_features(self, decoder_input: Tensor, padding_mask: Optional[Tensor], encoder_out: Optional[dict]):
        B, T, _ = decoder_input.shape
        if padding_mask is None:
            padding_mask = decoder_input.new_zeros(B, T, dtype=torch.bool)
        x = decoder_input
        if self.embed_positions is not None:
            # Positions count non-padding slots, as they do for tokens.
            slots = torch.where(padding_mask, self.padding_idx, self.padding_idx + 1)
            x = x + self.embed_positions(slots)
        if encoder_out is not None and lean_transformer.supports(self):
            return self._lean_features(x, padding_mask, encoder_out)
        x = self.dropout_module(x).transpose(0, 1)  # [T, B, D]

        enc = encoder_out["encoder_out"][0] if encoder_out is not None else None
        enc_mask = (
            encoder_out["encoder_padding_mask"][0]
            if encoder_out is not None and len(encoder_out["encoder_padding_mask"]) > 0
            else None
        )
        self_attn_mask = self.buffered_future_mask(x) if self.causal else None
        self_attn_padding_mask = padding_mask if padding_mask.any() else None
        for layer in self.layers:
            x, _, _ = layer(
                x, enc, enc_mask, None, self_attn_mask=self_attn_mask, self_attn_padding_mask=self_attn_padding_mask
            )
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return x.transpose(0, 1)  # [B, T, D]

    def _lean_features(self, x: Tensor, padding_mask: Tensor, encoder_out: dict) -> Tensor:
        """extract_features at inference, through modules/lean_transformer.py: x [B, T, D] -> [B, T, D]."""
        T = x.size(1)
        looks = ~padding_mask[:, None, None, :] if padding_mask.any() else None  # [B, 1, 1, T]
        if self.causal:
            past = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            looks = past if looks is None else looks & past
        sources, source_mask = lean_transformer.source_attention_inputs(self.layers, encoder_out)
        for layer, source in zip(self.layers, sources):
            x = lean_transformer.decoder_layer(
                layer, x, lean_transformer.full_self_attention(layer, looks), source, source_mask
            )
        return self.layer_norm(x) if self.layer_norm is not None else x
