"""What every codebook shares, however its codes are learned: k-means
initialisation, usage counts, and re-seeding of dead codes, all identical on
every data-parallel worker.

Random codes far from the encoder's outputs let the first code that wins take
every position (the reference implementation's dead-code problem). With
``init="kmeans"`` the codebook instead starts as k-means on the encoder outputs
of the first training batches: seeds broadcast from worker 0, then Lloyd
iterations whose statistics are all-reduced. Codes can also die later, when the
encoder moves away from them: with ``dead_threshold > 0`` a code whose EMA usage
count falls below it is re-seeded with a current encoder output (chosen on
worker 0 and broadcast).

Subclasses say how codes are stored and learned: ``EMACodebook`` (buffers, EMA
M-step) and ``LearnedCodebook`` (a parameter trained by gradient descent).
"""

from typing import Tuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ...errors import VQLatentError


def squared_distances(z: Tensor, embed: Tensor) -> Tensor:
    """z [N, D], embed [K, D] -> [N, K] squared L2 distances, in fp32."""
    z, embed = z.float(), embed.float()
    return (
        z.pow(2).sum(-1, keepdim=True)
        - 2.0 * z @ embed.t()
        + embed.pow(2).sum(-1).unsqueeze(0)
    ).clamp_min_(0.0)


def batch_statistics(assign: Tensor, z: Tensor) -> Tuple[Tensor, Tensor]:
    """assign [N, K], z [N, D] -> counts [K], sums [K, D] (fp32)."""
    assign = assign.float()
    return assign.sum(0), assign.t() @ z.float()


def ema_(running: Tensor, batch: Tensor, decay: float) -> None:
    running.mul_(decay).add_(batch, alpha=1.0 - decay)


def _world_size() -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    from fairseq.distributed import utils as distributed_utils

    return distributed_utils.get_data_parallel_world_size()


def broadcast_from_first_(tensor: Tensor) -> None:
    if _world_size() > 1:
        from fairseq.distributed import utils as distributed_utils

        group = distributed_utils.get_data_parallel_group()
        src = dist.get_global_rank(group, 0)
        distributed_utils.broadcast(tensor, src=src, group=group)


def all_reduce_sum_(*tensors: Tensor) -> None:
    """Sum tensors in place over the data-parallel group (no-op on one worker)."""
    if _world_size() <= 1:
        return
    from fairseq.distributed import utils as distributed_utils

    flat = torch.cat([t.reshape(-1) for t in tensors])
    distributed_utils.all_reduce(flat, group=distributed_utils.get_data_parallel_group())
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def kmeans_(centers: Tensor, data: Tensor, iterations: int) -> None:
    """Lloyd's algorithm in place on centers [K, D]; statistics summed over workers.
    A center that attracts no point keeps its seed."""
    for _ in range(iterations):
        codes = squared_distances(data, centers).argmin(-1)
        counts = torch.bincount(codes, minlength=len(centers)).float()
        sums = torch.zeros_like(centers).index_add_(0, codes, data)
        all_reduce_sum_(counts, sums)
        used = counts > 0
        centers[used] = sums[used] / counts[used].unsqueeze(1)


POOL_KEY = "kmeans_pool"  # a worker's own encoder outputs, not yet used by k-means


class Codebook(nn.Module):
    """K codes of dimension D with usage counts. Subclasses create ``embed`` [K, D]
    (a buffer or a parameter) and may extend ``_set_codes``."""

    KMEANS_POOL = 2  # pool this many encoder outputs per code before k-means
    KMEANS_ITERATIONS = 10

    embed: Tensor

    def __init__(self, num_codes: int, dim: int, decay: float, init: str = "kmeans", dead_threshold: float = 0.0):
        super().__init__()
        if init not in ("kmeans", "random"):
            raise VQLatentError(f"unknown --codebook-init {init!r} (kmeans or random)")
        self.num_codes, self.dim, self.decay = num_codes, dim, decay
        self.dead_threshold = dead_threshold
        self.last_reseeded = 0
        # Every code starts as one pseudo-observation of itself (count 1).
        self.register_buffer("ema_count", torch.ones(num_codes))  # [K]
        self.register_buffer("initialized", torch.tensor(init == "random"))
        self._pool = []  # encoder outputs waiting for k-means: in the state dict while there are any

    # A run stopped while the pool fills (about 16 updates for 512 codes on Multi30k) lost it,
    # and k-means then ran on other data: the resumed run drifted from one run. The pool is
    # saved while it exists; trained models have none, and averaging leaves it out.
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self._pool and not keep_vars:  # torch.onnx.export's tracer reads state_dict(keep_vars=True): weights only
            destination[prefix + POOL_KEY] = torch.cat(self._pool)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        pool = state_dict.pop(prefix + POOL_KEY, None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self._pool = [pool.to(self.ema_count.device).float()] if pool is not None and len(pool) else []

    def _apply(self, fn, *args, **kwargs):
        # model.half() / .bfloat16() must not touch the statistics buffers: they
        # follow fn's device only. Parameters are the optimizer's business.
        def device_only(t: Tensor) -> Tensor:
            return t.to(fn(t.new_empty(0)).device)

        kept = {k: b for k, b in self._buffers.items() if b is not None and b.is_floating_point()}
        for k in kept:
            self._buffers[k] = None
        super()._apply(fn, *args, **kwargs)
        for k, b in kept.items():
            self._buffers[k] = device_only(b)
        return self

    def distances(self, z: Tensor) -> Tensor:
        return squared_distances(z, self.embed)

    def lookup(self, codes: Tensor) -> Tensor:
        return self.embed[codes]

    @torch.no_grad()
    def _set_codes(self, index: Tensor, values: Tensor) -> None:
        """Place new codes (k-means init, re-seeding), each as one observation of itself."""
        self.embed.data[index] = values.to(self.embed.dtype)
        self.ema_count[index] = 1.0

    @torch.no_grad()
    def maybe_initialize(self, z: Tensor, contribute: bool = True) -> None:
        """Pool z [N, D]; once every worker holds enough, run k-means (all workers at once)."""
        if bool(self.initialized):
            return
        if contribute:
            self._pool.append(z.detach().float())
        pooled = sum(len(p) for p in self._pool)
        waiting = torch.tensor([float(pooled < self.KMEANS_POOL * self.num_codes)], device=z.device)
        all_reduce_sum_(waiting)
        if waiting.item() > 0:
            return
        data, self._pool = torch.cat(self._pool), []
        centers = data[torch.randperm(len(data), device=data.device)[: self.num_codes]].clone()
        broadcast_from_first_(centers)
        kmeans_(centers, data, self.KMEANS_ITERATIONS)
        self._set_codes(torch.arange(self.num_codes, device=centers.device), centers)
        self.initialized.fill_(True)

    @torch.no_grad()
    def before_step(self, z: Tensor, contribute: bool = True) -> None:
        """Upkeep before a training step's E-step, on z [N, D]: k-means initialisation.
        Codebooks that re-seed before the step (not after their M-step) extend it."""
        self.maybe_initialize(z, contribute=contribute)

    @torch.no_grad()
    def count_usage(self, assign: Tensor, contribute: bool = True) -> Tensor:
        """All-reduced counts [K] of assignments [N, K]; updates the EMA usage unless
        no worker had data (dummy batches), which must not even decay it."""
        counts = assign.detach().float().sum(0)
        if not contribute:
            counts.zero_()
        all_reduce_sum_(counts)
        if counts.sum() > 0:
            ema_(self.ema_count, counts, self.decay)
        return counts

    @torch.no_grad()
    def reseed_dead_codes(self, z: Tensor) -> int:
        """Re-seed codes whose usage fell below the threshold with rows of z [N, D]
        (worker 0's, broadcast). Returns how many were re-seeded."""
        self.last_reseeded = 0
        if self.dead_threshold <= 0:
            return 0
        dead = (self.usage() < self.dead_threshold).nonzero().flatten()  # same on every worker
        if len(dead) == 0:
            return 0
        # worker 0 picks the new codes among its encoder outputs; a worker without data says so
        picks = torch.zeros(len(dead) + 1, self.dim, device=self.ema_count.device)
        if len(z) > 0:
            picks[:-1] = z[torch.randint(len(z), (len(dead),), device=z.device)].float()
            picks[-1, 0] = 1.0
        broadcast_from_first_(picks)
        if picks[-1, 0] == 0:
            return 0
        self._set_codes(dead, picks[:-1])
        self.last_reseeded = len(dead)
        return len(dead)

    def usage(self) -> Tensor:
        """[K] the running counts that decide whether a code is dead."""
        return self.ema_count

    def num_dead_codes(self) -> int:
        """Codes whose running usage fell below 1% of a uniform share."""
        usage = self.usage()
        return int((usage < 0.01 * usage.sum() / self.num_codes).sum())
