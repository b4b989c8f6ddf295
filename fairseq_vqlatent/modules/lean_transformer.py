"""Inference-only forward of fairseq's Transformer decoder layers over plain tensors.

fairseq's layers keep incremental state in nested dictionaries keyed by module ids,
check shapes and options at every call, and attend through
F.multi_head_attention_forward even for a single query. At batch 1 on a CPU that
bookkeeping, not arithmetic, is most of a prior step and of the one-shot decoder
pass (benchmarks/results/profile-multi30k.md). This file runs the same weights in a
few tensor ops per sublayer, batch first:

    source attention over keys and values projected once per batch;
    self-attention over a key/value cache allocated once for the whole code budget;
    torch's scaled_dot_product_attention for both.

It covers the layers our models build: post- or pre-norm, no scaled heads, scaled
residuals, cross-self-attention or quantization noise. ``supports`` says so, and
callers keep fairseq's modules for anything else, in training, and inside
``fairseq_layers()``. Outputs equal fairseq's to float tolerance
(tests/test_lean_transformer.py).
"""

import contextlib
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_enabled = True


@contextlib.contextmanager
def fairseq_layers():
    """Run fairseq's own layer modules inside the block (a baseline for timing and tests)."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


def _layer_supported(layer: nn.Module) -> bool:
    if getattr(layer, "encoder_attn", None) is None:  # every decoder of ours reads the source
        return False
    return (
        getattr(layer, "c_attn", None) is None
        and getattr(layer, "attn_ln", None) is None
        and getattr(layer, "ffn_layernorm", None) is None
        and getattr(layer, "w_resid", None) is None
        and not getattr(layer, "cross_self_attention", False)
        and all(a.bias_k is None and not a.add_zero_attn and a.qkv_same_dim
                for a in (layer.self_attn, layer.encoder_attn))
    )


def supports(decoder: nn.Module) -> bool:
    """Whether this fairseq Transformer decoder, in eval mode, can take the lean path now."""
    return (
        _enabled
        and not decoder.training
        and getattr(decoder, "quant_noise", None) is None
        and getattr(decoder, "adaptive_softmax", None) is None
        and all(_layer_supported(layer) for layer in decoder.layers)
    )


# ------------------------------------------------------------------ attention


def _heads(x: Tensor, num_heads: int) -> Tensor:
    """[B, T, D] -> [B, H, T, D / H]"""
    B, T, D = x.shape
    return x.view(B, T, num_heads, D // num_heads).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    """[B, H, T, D / H] -> [B, T, D]"""
    B, H, T, d = x.shape
    return x.transpose(1, 2).reshape(B, T, H * d)


def keys_values(attn: nn.Module, x: Tensor) -> Tuple[Tensor, Tensor]:
    """x [B, T, D] -> keys, values [B, H, T, D / H] of a fairseq MultiheadAttention."""
    return (_heads(F.linear(x, attn.k_proj.weight, attn.k_proj.bias), attn.num_heads),
            _heads(F.linear(x, attn.v_proj.weight, attn.v_proj.bias), attn.num_heads))


def attend(attn: nn.Module, x: Tensor, keys: Tensor, values: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """Queries from x [B, Tq, D] over keys, values [B, H, Tk, D / H] -> [B, Tq, D]. ``mask``
    [B, 1, Tq or 1, Tk] is True where a query may look. fairseq scales q by 1/sqrt(D / H),
    as scaled_dot_product_attention does."""
    q = _heads(F.linear(x, attn.q_proj.weight, attn.q_proj.bias), attn.num_heads)
    out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
    return F.linear(_merge_heads(out), attn.out_proj.weight, attn.out_proj.bias)


def source_attention_inputs(layers, encoder_out: dict) -> Tuple[List[Tuple[Tensor, Tensor]], Optional[Tensor]]:
    """Every layer's source keys and values, and the source mask [B, 1, 1, S] (None without padding)."""
    enc = encoder_out["encoder_out"][0].transpose(0, 1)  # [B, S, D]
    masks = encoder_out["encoder_padding_mask"]
    mask = ~masks[0][:, None, None, :] if len(masks) > 0 and masks[0].any() else None
    return [keys_values(layer.encoder_attn, enc) for layer in layers], mask


# ------------------------------------------------------------------ one layer


def _sublayer(layer_norm: nn.Module, normalize_before: bool, x: Tensor, f: Callable[[Tensor], Tensor]) -> Tensor:
    """A residual sublayer as fairseq arranges it: LN before f (pre-norm) or after the sum."""
    if normalize_before:
        return x + f(layer_norm(x))
    return layer_norm(x + f(x))


def decoder_layer(
    layer: nn.Module,
    x: Tensor,
    self_attention: Callable[[Tensor], Tensor],
    source: Tuple[Tensor, Tensor],
    source_mask: Optional[Tensor],
) -> Tensor:
    """fairseq's TransformerDecoderLayerBase in eval mode: x [B, T, D] -> [B, T, D].
    ``self_attention`` maps the (normalised) input to the attention's output, so that
    the caller decides what it attends over: a cache, a causal or a padding mask."""
    pre = layer.normalize_before
    x = _sublayer(layer.self_attn_layer_norm, pre, x, self_attention)
    x = _sublayer(layer.encoder_attn_layer_norm, pre, x,
                  lambda h: attend(layer.encoder_attn, h, source[0], source[1], source_mask))
    return _sublayer(layer.final_layer_norm, pre, x, lambda h: layer.fc2(layer.activation_fn(layer.fc1(h))))


def full_self_attention(layer: nn.Module, mask: Optional[Tensor]) -> Callable[[Tensor], Tensor]:
    """Self-attention over the whole input, for a one-shot pass; ``mask`` [B, 1, T or 1, T]."""
    def f(h: Tensor) -> Tensor:
        keys, values = keys_values(layer.self_attn, h)
        return attend(layer.self_attn, h, keys, values, mask)
    return f


# ------------------------------------------------------------------ a whole decoder


def embed(decoder: nn.Module, tokens: Tensor, positions: Optional[Tensor]) -> Tensor:
    """tokens [B, T] and their position embeddings [1 or B, T, D] -> the first layer's input [B, T, D]."""
    x = decoder.embed_scale * decoder.embed_tokens(tokens)
    if decoder.project_in_dim is not None:
        x = decoder.project_in_dim(x)
    if positions is not None:
        x = x + positions
    if decoder.layernorm_embedding is not None:
        x = decoder.layernorm_embedding(x)
    return x


def output(decoder: nn.Module, x: Tensor) -> Tensor:
    """The last layer's output [..., D] -> logits [..., V]."""
    if decoder.layer_norm is not None:
        x = decoder.layer_norm(x)
    if decoder.project_out_dim is not None:
        x = decoder.project_out_dim(x)
    return decoder.output_layer(x)


def causal_features(decoder: nn.Module, tokens: Tensor, sources: List[Tuple[Tensor, Tensor]],
                    source_mask: Optional[Tensor]) -> Tensor:
    """Every prefix of tokens [B, T] in one causal pass, no cache -> the last layer's output
    [B, T, D]. ``sources`` and ``source_mask`` as source_attention_inputs gives them."""
    positions = None
    if decoder.embed_positions is not None:  # positions padding_idx + 1, + 2, ... as fairseq's
        positions = decoder.embed_positions(torch.full_like(tokens, decoder.padding_idx + 1))
    x = embed(decoder, tokens, positions)
    past = torch.ones(tokens.size(1), tokens.size(1), dtype=torch.bool, device=tokens.device).tril()
    for layer, source in zip(decoder.layers, sources):
        x = decoder_layer(layer, x, full_self_attention(layer, past), source, source_mask)
    return x


# ------------------------------------------------------------------ the prior, step by step


class IncrementalDecoder:
    """A fairseq TransformerDecoderBase run one token at a time, all rows in step:
    ``step(tokens [B])`` -> logits [B, V] for the next token. The source keys and values
    are projected once, and each layer's self-attention cache [B, H, budget, D / H] is
    allocated once and filled in place."""

    def __init__(self, decoder: nn.Module, encoder_out: dict, steps: int):
        self.decoder = decoder
        self.sources, self.source_mask = source_attention_inputs(decoder.layers, encoder_out)
        keys = self.sources[0][0]
        B = keys.size(0)
        self.caches = []
        for layer in decoder.layers:
            H, D = layer.self_attn.num_heads, layer.self_attn.embed_dim
            self.caches.append(keys.new_empty(2, B, H, steps, D // H))
        self.positions = None
        if decoder.embed_positions is not None:  # positions padding_idx + 1, + 2, ... as fairseq's
            tokens = torch.full((1, steps), decoder.padding_idx + 1, dtype=torch.long, device=keys.device)
            self.positions = decoder.embed_positions(tokens)  # [1, steps, D]
        self.t = 0

    def step(self, tokens: Tensor) -> Tensor:
        d, t = self.decoder, self.t
        positions = self.positions[:, t : t + 1] if self.positions is not None else None
        x = embed(d, tokens.unsqueeze(1), positions)  # [B, 1, D]
        for layer, cache, source in zip(d.layers, self.caches, self.sources):
            x = decoder_layer(layer, x, self._cached_attention(layer, cache, t), source, self.source_mask)
        self.t += 1
        return output(d, x[:, 0])

    def reorder(self, rows: Tensor) -> None:
        """Keep the rows ``rows`` [B'] of the caches and sources, in that order (beam search)."""
        self.caches = [cache.index_select(1, rows) for cache in self.caches]
        self.sources = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in self.sources]
        if self.source_mask is not None:
            self.source_mask = self.source_mask.index_select(0, rows)

    @staticmethod
    def _cached_attention(layer: nn.Module, cache: Tensor, t: int) -> Callable[[Tensor], Tensor]:
        def f(h: Tensor) -> Tensor:
            key, value = keys_values(layer.self_attn, h)  # [B, H, 1, D / H]
            cache[0, :, :, t : t + 1] = key
            cache[1, :, :, t : t + 1] = value
            return attend(layer.self_attn, h, cache[0, :, :, : t + 1], cache[1, :, :, : t + 1])
        return f
