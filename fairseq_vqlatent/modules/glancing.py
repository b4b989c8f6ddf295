"""Glancing training (GLAT: Qian et al. 2021, "Glancing Transformer for
Non-Autoregressive Neural Machine Translation").

A one-shot decoder learns every position at once, without the neighbours'
words that an autoregressive decoder conditions on. GLAT first decodes without
gradients, then shows the decoder some target words at its input: the more of
its own prediction was wrong, the more words it sees (eq. 5, N = ratio *
Hamming distance), at random positions. Only the hidden positions are scored
(eq. 3), so the decoder learns to fill in words from partial context. At
inference it sees no targets, as before.

Measured with the latent model on Multi30k: oracle codes (the compressor's
own, from the reference) decode no better than the prior's, so the gap to the
teacher is the one-shot decoder's (benchmarks/results/one-shot-gap-multi30k.md).
"""

import torch
from torch import Tensor


def glance_counts(predicted: Tensor, target: Tensor, real: Tensor, ratio: float) -> Tensor:
    """predicted, target, real [B, T] -> [B] target words to reveal: floor(ratio * wrong)."""
    wrong = ((predicted != target) & real).sum(1)
    return (wrong.float() * ratio).long()


def glance_mask(predicted: Tensor, target: Tensor, real: Tensor, ratio: float) -> Tensor:
    """[B, T] True at the positions whose target word the decoder is shown: for
    sentence b, glance_counts[b] positions drawn uniformly among its real ones."""
    counts = glance_counts(predicted, target, real, ratio)
    noise = torch.rand(real.shape, device=real.device).masked_fill(~real, 2.0)  # padding ranks last
    ranks = noise.argsort(1).argsort(1)  # [B, T] each position's place in a random order
    return ranks < counts.unsqueeze(1)


def glance(decoder_input: Tensor, target_embedding: Tensor, mask: Tensor) -> Tensor:
    """decoder_input, target_embedding [B, T, D], mask [B, T] -> the input with the
    target's embedding where mask is True."""
    return torch.where(mask.unsqueeze(-1), target_embedding.to(decoder_input.dtype), decoder_input)
