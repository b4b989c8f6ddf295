"""A codebook learned by the EMA form of the (soft) k-means M-step.

With per-batch assignments r [N, K] (one-hot for hard EM, fractional for soft
EM) and data z [N, D]:

    n_k = sum_i r_ik                   m_k_batch = sum_i r_ik z_i
    N_k <- g N_k + (1 - g) n_k          m_k <- g m_k + (1 - g) m_k_batch
    N~_k = (N_k + eps) / (n + K eps) * n,   n = sum_k N_k   (Laplace smoothing)
    e_k = m_k / N~_k

With g = 0 one update is exactly the M-step. The batch statistics are summed
over data-parallel workers before the update, so every worker holds the same
codebook. All statistics are fp32 whatever the model is cast to.

Random codes far from the encoder's outputs let the first code that wins take
every position (the reference implementation's dead-code problem). With
``init="kmeans"`` the codebook instead starts as k-means on the encoder outputs
of the first training batches: seeds broadcast from worker 0, then Lloyd
iterations whose statistics are all-reduced like the M-step's. Codes can also
die later, when the encoder moves away from them: with ``dead_threshold > 0`` a
code whose EMA count falls below it is re-seeded with a current encoder output
(chosen on worker 0 and broadcast, so all workers stay identical).
"""

from typing import Tuple

import torch
import torch.distributed as dist
from torch import Tensor, nn


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


def laplace_smoothed(counts: Tensor, eps: float) -> Tensor:
    n = counts.sum()
    return (counts + eps) / (n + counts.numel() * eps) * n


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


class EMACodebook(nn.Module):
    KMEANS_POOL = 2  # pool this many encoder outputs per code before k-means
    KMEANS_ITERATIONS = 10

    def __init__(
        self, num_codes: int, dim: int, decay: float, eps: float, init: str = "kmeans", dead_threshold: float = 0.0
    ):
        super().__init__()
        self.dead_threshold = dead_threshold
        self.last_reseeded = 0
        if init not in ("kmeans", "random"):
            raise ValueError(f"unknown codebook init {init!r}")
        self.num_codes, self.dim, self.decay, self.eps = num_codes, dim, decay, eps
        # The compressor ends in a LayerNorm, so z_e is on a unit-variance scale:
        # start the codes there. Each code starts as one pseudo-observation of
        # itself (count 1, sum e_k), so a code nobody picks stays where it is
        # instead of being divided by a vanishing count.
        embed = torch.randn(num_codes, dim)
        self.register_buffer("embed", embed)  # [K, D]
        self.register_buffer("ema_count", torch.ones(num_codes))  # [K]
        self.register_buffer("ema_sum", embed.clone())  # [K, D]
        self.register_buffer("initialized", torch.tensor(init == "random"))
        self._pool = []  # encoder outputs waiting for k-means (not saved)

    @classmethod
    def from_config(cls, cfg, dim: int) -> "EMACodebook":
        return cls(
            cfg.codebook_size,
            dim,
            cfg.ema_decay,
            cfg.ema_epsilon,
            init=getattr(cfg, "codebook_init", "kmeans"),
            dead_threshold=getattr(cfg, "dead_code_threshold", 0.0),
        )

    def _apply(self, fn, *args, **kwargs):
        # model.half() / .bfloat16() must not touch the statistics: follow fn's device only.
        def device_only(t: Tensor) -> Tensor:
            if not t.is_floating_point():
                return fn(t)
            return t.to(fn(t.new_empty(0)).device)

        return super()._apply(device_only, *args, **kwargs)

    def distances(self, z: Tensor) -> Tensor:
        return squared_distances(z, self.embed)

    def lookup(self, codes: Tensor) -> Tensor:
        return self.embed[codes]

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
        self.embed.copy_(centers)
        self.ema_sum.copy_(centers)
        self.ema_count.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def update(self, assign: Tensor, z: Tensor, contribute: bool = True) -> None:
        """One EMA M-step from assignments [N, K] of data [N, D]."""
        self.last_reseeded = 0
        counts, sums = batch_statistics(assign, z)
        if not contribute:
            counts.zero_()
            sums.zero_()
        all_reduce_sum_(counts, sums)
        if counts.sum() == 0:  # nobody had data (dummy batches): no step, not even the decay
            return
        ema_(self.ema_count, counts, self.decay)
        ema_(self.ema_sum, sums, self.decay)
        self.embed.copy_(self.ema_sum / laplace_smoothed(self.ema_count, self.eps).unsqueeze(1))
        self.last_reseeded = self._reseed_dead_codes(z if contribute else z[:0])

    def _reseed_dead_codes(self, z: Tensor) -> int:
        if self.dead_threshold <= 0:
            return 0
        dead = (self.ema_count < self.dead_threshold).nonzero().flatten()  # same on every worker
        if len(dead) == 0:
            return 0
        # worker 0 picks the new codes among its encoder outputs; a worker without data says so
        picks = torch.zeros(len(dead) + 1, self.dim, device=self.embed.device)
        if len(z) > 0:
            picks[:-1] = z[torch.randint(len(z), (len(dead),), device=z.device)].float()
            picks[-1, 0] = 1.0
        broadcast_from_first_(picks)
        if picks[-1, 0] == 0:
            return 0
        self.embed[dead] = picks[:-1]
        self.ema_sum[dead] = picks[:-1]
        self.ema_count[dead] = 1.0
        return len(dead)

    def num_dead_codes(self) -> int:
        """Codes whose running count fell below 1% of a uniform share."""
        share = self.ema_count.sum() / self.num_codes
        return int((self.ema_count < 0.01 * share).sum())
