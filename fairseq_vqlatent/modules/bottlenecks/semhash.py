"""Improved semantic hashing (Kaiser & Bengio 2018, "Discrete autoencoders for
sequence models"), as compared in Roy et al. 2018.

Each latent is log2(K) bits. A dense layer gives x; in training Gaussian noise
is added and the saturating sigmoid s(x) = clip(1.2 sigmoid(x) - 0.1, 0, 1)
gives soft bits, whose rounding (straight-through) gives hard bits. The decoder
sees soft bits with a probability that falls linearly from 0.5 to 0 over
``--anneal-updates`` and hard bits otherwise, so it ends training on what it gets
at inference: the noiseless bits 1[x > 0]. The embedding of bits b is
A b + B (1 - b), as in tensor2tensor; the code is the bit pattern as an integer.
There is no codebook, so nothing to initialise or re-seed.
"""

import math

import torch
from torch import Tensor, nn

from ...errors import VQLatentError
from .base import Bottleneck, BottleneckOutput, one_hot_float, register_bottleneck, scatter_positions
from .code_space import code_space_from_config
from .schedules import linear_anneal

SOFT_BITS_START = 0.5


def saturating_sigmoid(x: Tensor) -> Tensor:
    return (1.2 * torch.sigmoid(x) - 0.1).clamp(0.0, 1.0)


def bits_to_codes(bits: Tensor) -> Tensor:
    """bits [..., n] in {0, 1} -> codes [...] = sum_i bits_i 2^i."""
    powers = 2 ** torch.arange(bits.size(-1), device=bits.device)
    return (bits.long() * powers).sum(-1)


def codes_to_bits(codes: Tensor, num_bits: int) -> Tensor:
    """codes [...] -> bits [..., n] (float)."""
    powers = 2 ** torch.arange(num_bits, device=codes.device)
    return ((codes.unsqueeze(-1) // powers) % 2).float()


@register_bottleneck("semhash")
class SemanticHashingBottleneck(Bottleneck):
    def __init__(self, dim: int, num_codes: int, noise_std: float, anneal_updates: int, **code_space):
        super().__init__(dim, **code_space)
        num_bits = round(math.log2(num_codes))
        if 2**num_bits != num_codes:
            raise VQLatentError(f"--bottleneck semhash needs a power of two for --codebook-size, not {num_codes}")
        self.num_codes, self.num_bits = num_codes, num_bits
        self.noise_std = noise_std
        self.anneal_updates = anneal_updates
        self.soft_prob = SOFT_BITS_START
        self.to_bits = nn.Linear(dim, num_bits)
        self.embed_on = nn.Linear(num_bits, dim)  # A: what a set bit contributes
        self.embed_off = nn.Linear(num_bits, dim, bias=False)  # B: what a cleared bit contributes

    @classmethod
    def from_config(cls, cfg, dim: int) -> "SemanticHashingBottleneck":
        if getattr(cfg, "dead_code_threshold", 0.0) > 0:
            raise VQLatentError("--dead-code-threshold applies to codebook bottlenecks; semhash has no codebook")
        code_dim, space = code_space_from_config(cfg, dim)
        return cls(code_dim, cfg.codebook_size, cfg.semhash_noise, cfg.anneal_updates,
                   **space)

    def set_num_updates(self, num_updates: int) -> None:
        self.soft_prob = linear_anneal(SOFT_BITS_START, 0.0, num_updates, self.anneal_updates)

    def embed_bits(self, bits: Tensor) -> Tensor:
        return self.embed_on(bits) + self.embed_off(1.0 - bits)

    def quantize(self, z_code: Tensor, padding_mask: Tensor) -> BottleneckOutput:
        z = z_code[~padding_mask]  # [N, D]
        x = self.to_bits(z)  # [N, n]
        if self.training:
            soft = saturating_sigmoid(x + self.noise_std * torch.randn_like(x))
            hard = (soft > 0.5).to(soft.dtype)
            straight_through = hard + soft - soft.detach()
            use_soft = torch.rand(len(z), 1, device=z.device) < self.soft_prob  # per latent
            bits = torch.where(use_soft, soft, straight_through)
        else:
            hard = (x > 0).to(x.dtype)
            bits = hard
        codes = bits_to_codes(hard)
        z_q = self.embed_bits(bits)
        return BottleneckOutput(
            z_q=scatter_positions(z_q, padding_mask),
            codes=scatter_positions(codes, padding_mask),
            code_targets=scatter_positions(one_hot_float(codes, self.num_codes), padding_mask),
            loss=z_q.new_zeros(()).float(),
        )

    def code_vectors(self, codes: Tensor) -> Tensor:
        return self.embed_bits(codes_to_bits(codes, self.num_bits).to(self.embed_on.weight.dtype))
