"""Let torch>=2.6's weights-only loading read fairseq checkpoints.

fairseq saves argparse-configured models (its own ``transformer``, i.e. the
teacher) with an ``argparse.Namespace`` inside. Allow exactly that class, rather
than switching weights-only loading off: loading an untrusted pickle stays refused.
"""

import argparse

import torch


def allow_fairseq_checkpoints() -> None:
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:
        add([argparse.Namespace])
