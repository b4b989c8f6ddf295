"""The interface every discretization bottleneck implements.

A bottleneck turns the compressing encoder's output ``z_e`` into what the
decompressor sees (``z_q``), a hard code per latent position (what the prior
reads and, at inference, predicts), soft code targets for the prior, and its own
auxiliary loss. It quantizes in its code space, between its own ``project_in``
and ``project_out`` (code_space.py). Adding a bottleneck means one file with a
subclass of :class:`Bottleneck` (or :class:`CodebookBottleneck`, for codes that
are rows of a codebook) decorated with :func:`register_bottleneck`; it implements
``quantize`` and ``code_vectors`` in the code space. Constructors take explicit
arguments; ``from_config`` is the one place that reads fairseq's options.
"""

import math
from dataclasses import dataclass, replace
from typing import Callable, Dict, Optional, Type

import torch
from torch import Tensor, nn

from ...errors import VQLatentError
from .code_space import code_space_projections

BOTTLENECK_REGISTRY: Dict[str, Type["Bottleneck"]] = {}


def register_bottleneck(name: str) -> Callable[[Type["Bottleneck"]], Type["Bottleneck"]]:
    def register(cls):
        if name in BOTTLENECK_REGISTRY:
            raise ValueError(f"bottleneck {name!r} is registered twice")
        BOTTLENECK_REGISTRY[name] = cls
        return cls

    return register


def build_bottleneck(name: str, dim: int, cfg) -> "Bottleneck":
    if name not in BOTTLENECK_REGISTRY:
        known = ", ".join(sorted(BOTTLENECK_REGISTRY))
        raise VQLatentError(f"unknown --bottleneck {name!r}; known: {known}")
    return BOTTLENECK_REGISTRY[name].from_config(cfg, dim)


@dataclass
class BottleneckOutput:
    z_q: Tensor  # [B, L, D] input of the decompressor (code space inside quantize); gradients reach z_e
    codes: Tensor  # [B, L] long, one hard code per latent (0 at padding)
    code_targets: Tensor  # [B, L, K] detached prior targets; each non-padding row sums to 1
    loss: Tensor  # scalar auxiliary loss, summed over non-padding latents
    dead_codes: int = 0  # codes whose running usage has all but vanished
    reseeded_codes: int = 0  # codes re-seeded from encoder outputs by this step


class Bottleneck(nn.Module):
    """Base class: subclasses set ``num_codes`` and implement ``from_config``,
    ``quantize`` and ``code_vectors``, in the code space of dimension ``code_dim``.
    ``model_dim`` (default: ``code_dim``) is z_e's, and ``code_norm`` how
    ``project_in`` normalises (code_space.py); subclasses pass the two on as
    ``**code_space``."""

    num_codes: int

    def __init__(self, code_dim: int, model_dim: Optional[int] = None, code_norm: str = "batch"):
        super().__init__()
        self.project_in, self.project_out = code_space_projections(model_dim or code_dim, code_dim, code_norm)
        # Cleared for fairseq's dummy batches: the bottleneck still joins the
        # workers' all-reduce (or the others would wait forever) but adds nothing.
        self.learn_from_batch = True

    @classmethod
    def from_config(cls, cfg, dim: int) -> "Bottleneck":
        """The bottleneck that fairseq's options ``cfg`` describe, on z_e of dimension ``dim``."""
        raise NotImplementedError

    def forward(self, z_e: Tensor, padding_mask: Tensor) -> BottleneckOutput:
        """z_e: [B, L, D]; padding_mask: [B, L], True at padding. z_q comes back in [B, L, D],
        zero at padding (project_out has a bias)."""
        out = self.quantize(self.project_in(z_e, padding_mask), padding_mask)
        z_q = self.project_out(out.z_q).masked_fill(padding_mask.unsqueeze(-1), 0.0)
        return replace(out, z_q=z_q)

    def embed_codes(self, codes: Tensor) -> Tensor:
        """codes: [B, L] long -> [B, L, D], what ``z_q`` is at inference."""
        vectors = self.code_vectors(codes)
        # An EMA codebook stays fp32 under --fp16 (codebook.py); project_out does not.
        weight = getattr(self.project_out, "weight", None)
        return self.project_out(vectors if weight is None else vectors.to(weight.dtype))

    def quantize(self, z_code: Tensor, padding_mask: Tensor) -> BottleneckOutput:
        """z_code: [B, L, d], z_e in the code space -> BottleneckOutput with z_q [B, L, d]."""
        raise NotImplementedError

    def code_vectors(self, codes: Tensor) -> Tensor:
        """codes: [B, L] long -> their vectors in the code space [B, L, d]."""
        raise NotImplementedError

    def set_num_updates(self, num_updates: int) -> None:
        """Schedules (temperatures, mixing) follow fairseq's update counter."""


def full_precision(x: Tensor):
    """Codebook math in fp32 even inside fairseq's --amp autocast region."""
    return torch.autocast(x.device.type, enabled=False)


def scatter_positions(values: Tensor, padding_mask: Tensor, fill: float = 0.0) -> Tensor:
    """Put per-position rows [N, ...] back at the non-padding slots of [B, L, ...]."""
    B, L = padding_mask.shape
    out = values.new_full((B, L) + values.shape[1:], fill)
    out[~padding_mask] = values
    return out


def kl_to_uniform(q_bar: Tensor) -> Tensor:
    """KL(q_bar || uniform) = sum_k q_k log(K q_k) for an aggregated posterior q_bar [K]:
    log K when one code takes every latent, 0 when all are used alike."""
    return (q_bar * (q_bar.clamp_min(1e-12).log() + math.log(q_bar.numel()))).sum()


def commitment_loss(z_e: Tensor, target: Tensor) -> Tensor:
    """Sum over positions of the mean squared distance to a stop-gradient target.

    The mean over dimensions keeps the term on the scale of a per-token
    cross-entropy whatever the model width; the sum over positions matches
    fairseq's convention of summed losses normalised by the sample size.
    """
    return (z_e.float() - target.detach().float()).pow(2).mean(-1).sum()


def one_hot_float(codes: Tensor, num_codes: int) -> Tensor:
    return torch.nn.functional.one_hot(codes, num_codes).float()
