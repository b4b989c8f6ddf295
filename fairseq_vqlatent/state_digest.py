"""A digest of a model's whole state, to check that data-parallel workers agree.

fairseq's DDP wrappers average gradients but never synchronise buffers, and the
codebooks are buffers updated by our own all-reduce. Two workers that drift apart
train silently wrong, so `--state-digest-dir DIR` makes every worker write
DIR/rank-R.txt (update count and SHA-256 of every parameter and buffer) at each
validation; the files must be equal.
"""

import hashlib
import os

import torch
import torch.distributed as dist

from .modules.bottlenecks.codebook import POOL_KEY


def state_digest(model: torch.nn.Module) -> str:
    """SHA-256 over every tensor of the state dict, by name, bit for bit."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name.endswith(POOL_KEY):  # each worker pools its own encoder outputs until k-means
            continue
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def write_state_digest(model: torch.nn.Module, directory: str, num_updates: int) -> str:
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"rank-{rank}.txt")
    with open(path, "a") as f:
        f.write(f"{num_updates} {state_digest(model)}\n")
    return path
