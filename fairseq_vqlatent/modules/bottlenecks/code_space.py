"""The projections into and out of the code space, where a bottleneck quantizes.
Every bottleneck owns a pair (``project_in``, ``project_out``), as quantizers do in
vector-quantize-pytorch:

    z_e [B, L, D] --Linear--> [B, L, d] --normalisation--> quantization
    z_q [B, L, d] --Linear--> [B, L, D] the decompressor's input

With d = D and LayerNorm there is nothing to do on the way in: the compressor's
output is LayerNorm'd already.

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

from typing import Tuple

import torch
from torch import Tensor, nn

from .codebook import all_reduce_sum_


def batch_moments(x: Tensor):
    """x [N, d] -> (count, mean [d], biased variance [d]) over every data-parallel worker.

    The sums are all-reduced so that all workers normalise alike and keep equal
    running statistics (fairseq's DDP never synchronises buffers). Gradients flow
    through this worker's own share of the sums."""
    local = torch.cat([x.new_full((1,), float(x.size(0))), x.sum(0), x.pow(2).sum(0)])  # [1 + 2d]
    total = local.detach().clone()
    all_reduce_sum_(total)
    stats = local + (total - local).detach()
    d = x.size(1)
    n, mean = stats[0], stats[1 : 1 + d] / stats[0].clamp_min(1)
    var = (stats[1 + d :] / stats[0].clamp_min(1) - mean.pow(2)).clamp_min(0)
    return n, mean, var


class MaskedBatchNorm(nn.Module):
    """Batch normalisation without affine over the real (non-padding) positions of
    [B, L, d], synchronised over workers; padding stays zero."""

    def __init__(self, dim: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))

    def forward(self, x: Tensor, padding_mask: Tensor) -> Tensor:
        real = x[~padding_mask].float()  # [N, d]
        mean, var = self.running_mean, self.running_var
        if self.training:
            n, batch_mean, batch_var = batch_moments(real)  # every worker joins, even with no latents
            if n >= 2:  # one latent has no variance to normalise by
                mean, var = batch_mean, batch_var
                with torch.no_grad():
                    self.running_mean.lerp_(batch_mean, self.momentum)
                    self.running_var.lerp_(batch_var * n / (n - 1), self.momentum)
        out = torch.zeros_like(x)
        out[~padding_mask] = ((real - mean) / torch.sqrt(var + self.eps)).to(x.dtype)
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


class SameSpace(nn.Module):
    """``project_in`` when the code space is z_e's own (d = D, LayerNorm'd already)."""

    def forward(self, z_e: Tensor, padding_mask: Tensor) -> Tensor:
        return z_e


def code_space_from_config(cfg, dim: int) -> Tuple[int, dict]:
    """(--code-dim, or z_e's own dimension ``dim`` when it is 0; the code-space
    arguments every bottleneck's constructor passes on to ``Bottleneck``)."""
    # Checkpoints from before --code-norm have no such option: they used LayerNorm.
    norm = getattr(cfg, "code_norm", None) or "layer"
    return getattr(cfg, "code_dim", 0) or dim, dict(model_dim=dim, code_norm=norm)


def code_space_projections(model_dim: int, code_dim: int, norm: str = "layer") -> Tuple[nn.Module, nn.Module]:
    """(project_in: ([B, L, D], mask) -> [B, L, d], project_out: [B, L, d] -> [B, L, D])."""
    same = model_dim == code_dim
    project_in = SameSpace() if same and norm == "layer" else CodeSpaceProjection(model_dim, code_dim, norm)
    return project_in, nn.Identity() if same else nn.Linear(code_dim, model_dim)
