"""Let torch>=2.6's weights-only loading read fairseq checkpoints.

fairseq saves argparse-configured models (its own ``transformer``, i.e. the
teacher) with an ``argparse.Namespace`` inside, and with --eval-bleu it stores
the best BLEU as a numpy scalar (its BLEU statistics are numpy arrays). Allow
exactly those classes, rather than switching weights-only loading off: loading
an untrusted pickle stays refused. numpy arrays rebuilt this way hold plain
data; an array of Python objects would still need globals that stay refused.
"""

import argparse

import numpy
import torch


def _numpy_scalar_globals():
    multiarray = getattr(getattr(numpy, "_core", None), "multiarray", None) or numpy.core.multiarray
    plain = [type(numpy.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
    return [multiarray._reconstruct, numpy.ndarray, numpy.dtype, *plain]


def allow_fairseq_checkpoints() -> None:
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:
        add([argparse.Namespace, *_numpy_scalar_globals()])
