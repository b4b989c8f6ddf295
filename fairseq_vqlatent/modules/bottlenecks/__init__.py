"""Discretization bottlenecks. Importing a module registers its bottleneck."""

from .base import BOTTLENECK_REGISTRY, Bottleneck, BottleneckOutput, build_bottleneck, register_bottleneck
from . import fsq, gmvq, gumbel, semhash, soft_em, vq  # noqa: F401  (registration)

__all__ = ["BOTTLENECK_REGISTRY", "Bottleneck", "BottleneckOutput", "build_bottleneck", "register_bottleneck"]
