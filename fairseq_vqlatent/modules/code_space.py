"""The projection of z_e into the code space, where the bottleneck works.

    z_e [B, L, D] --Linear--> [B, L, d] --normalisation--> the bottleneck's input

The normalisation fixes the scale of the code space; a fresh projection has a
small, drifting one, which flattens the soft-EM posterior softmax(-||z - e||^2).

- ``layer``: LayerNorm without affine, per latent. It leaves the projection free
  to map every latent to nearly one point: the commitment loss pulls z_e towards
  its codes, and a constant z_e satisfies it best. Measured on Multi30k: used
  codes 1% of their norm apart, and a decoder whose output no code changes
  (docs/design.md, "Collapse").
- ``batch``: BatchNorm without affine over the batch's real latents, per
  dimension (Łańcucki et al. 2020, "Robust training of vector quantized
  bottleneck models"). Every dimension keeps unit variance across latents, so
  the code space cannot shrink to a point. Inference uses the running statistics.
"""

import torch
from torch import Tensor, nn


class MaskedBatchNorm(nn.Module):
    """BatchNorm1d over the non-padding positions of [B, L, d]; padding stays as it is."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False)

    def forward(self, x: Tensor, padding_mask: Tensor) -> Tensor:
        real = ~padding_mask
        if self.training and int(real.sum()) < 2:  # one latent has no variance to normalise by
            return x
        out = torch.zeros_like(x)
        out[real] = self.norm(x[real]).to(x.dtype)
        return out


class CodeSpaceProjection(nn.Module):
    def __init__(self, dim: int, code_dim: int, norm: str = "layer"):
        super().__init__()
        if norm not in ("layer", "batch"):
            raise ValueError(f"unknown code-space normalisation {norm!r}")
        self.linear = nn.Linear(dim, code_dim)
        self.layer_norm = nn.LayerNorm(code_dim, elementwise_affine=False) if norm == "layer" else None
        self.batch_norm = MaskedBatchNorm(code_dim) if norm == "batch" else None

    def forward(self, z_e: Tensor, padding_mask: Tensor) -> Tensor:
        """z_e [B, L, D], padding mask [B, L] -> [B, L, d]."""
        x = self.linear(z_e)
        return self.layer_norm(x) if self.layer_norm is not None else self.batch_norm(x, padding_mask)
