"""Let torch>=2.6's weights-only loading read fairseq checkpoints.

fairseq saves argparse-configured models (its own ``transformer``, i.e. the
teacher) with an ``argparse.Namespace`` inside, and with --eval-bleu it stores
the best BLEU as a numpy scalar (its BLEU statistics are numpy arrays). Allow
exactly those classes, rather than switching weights-only loading off: loading
an untrusted pickle stays refused. numpy arrays rebuilt this way hold plain
data; an array of Python objects would still need globals that stay refused.
"""

import argparse
import os

import numpy
import torch

from .errors import VQLatentError, checkpoint_error


def _numpy_scalar_globals():
    multiarray = getattr(getattr(numpy, "_core", None), "multiarray", None) or numpy.core.multiarray
    plain = [type(numpy.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
    return [multiarray._reconstruct, numpy.ndarray, numpy.dtype, *plain]


def allow_fairseq_checkpoints() -> None:
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:
        add([argparse.Namespace, *_numpy_scalar_globals()])


def read_checkpoint(path: str, what: str = "checkpoint") -> dict:
    """fairseq's load_checkpoint_to_cpu (weights-only), with every way it can fail said in one line."""
    from fairseq import checkpoint_utils

    if not os.path.isfile(path):
        raise VQLatentError(f"{what} {path} does not exist")
    if os.path.getsize(path) == 0:
        raise VQLatentError(f"{what} {path} is empty (0 bytes): copy it again, or use another")
    try:
        return checkpoint_utils.load_checkpoint_to_cpu(path)
    except Exception as e:
        raise checkpoint_error(e, path, what) from None
