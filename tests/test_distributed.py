"""Two torch.distributed gloo workers with different batches end every update
with identical codebooks, equal to one worker seeing both batches."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import bottleneck

STEPS = 5


def batches(rank: int, step: int):
    g = torch.Generator().manual_seed(100 * step + rank)
    z = torch.randn(3, 4, 4, generator=g) * (1 + rank)  # the workers see different data
    mask = torch.zeros(3, 4, dtype=torch.bool)
    mask[rank, 2:] = True
    return z, mask


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank, world, port, name, init, dead, dead_by, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # the same parameters on both workers, as fairseq's DDP makes them
        bn = bottleneck(name, K=8, D=4, decay=0.8, init=init, dead=dead, dead_by=dead_by).train()
        if init == "random":  # start from the same codebook
            bn.codebook._set_codes(torch.arange(8), torch.randn(8, 4))
        torch.manual_seed(1234 + rank)  # different sampling / k-means seeds: sync must not rely on luck
        history, reseeded = [], 0
        for step in range(STEPS):
            bn.learn_from_batch = not (rank == 1 and step == 2)  # a dummy batch on worker 1
            reseeded += bn(*batches(rank, step)).reseeded_codes
            history.append(bn.codebook.embed.detach().clone())
        torch.save((torch.stack(history), reseeded), os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_workers(tmp_path, name, init, dead=0.0, with_reseeded=False, dead_by="assignment"):
    mp.spawn(worker, args=(2, free_port(), name, init, dead, dead_by, str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"{r}.pt") for r in range(2)]
    return results if with_reseeded else [history for history, _ in results]


@pytest.mark.parametrize("name", ["vq", "soft_em"])
def test_workers_hold_identical_codebooks_after_every_update(tmp_path, name):
    h0, h1 = run_workers(tmp_path, name, "random")
    assert torch.equal(h0, h1)
    assert not torch.equal(h0[0], h0[-1])  # and the codebook did learn


def test_two_workers_equal_one_worker_on_both_batches(tmp_path):
    h0, _ = run_workers(tmp_path, "vq", "random")
    torch.manual_seed(0)
    bn = bottleneck("vq", K=8, D=4, decay=0.8).train()
    bn.codebook._set_codes(torch.arange(8), torch.randn(8, 4))
    for step in range(STEPS):
        parts = [batches(0, step)] + ([] if step == 2 else [batches(1, step)])  # worker 1's dummy batch
        z = torch.cat([p[0] for p in parts])
        mask = torch.cat([p[1] for p in parts])
        bn(z, mask)
        torch.testing.assert_close(bn.codebook.embed, h0[step], atol=1e-5, rtol=1e-5)


def test_kmeans_init_is_identical_on_both_workers(tmp_path):
    h0, h1 = run_workers(tmp_path, "vq", "kmeans")
    assert torch.equal(h0, h1)


@pytest.mark.parametrize("name,dead_by", [("vq", "assignment"), ("soft_em", "assignment"), ("soft_em", "mode"),
                                          ("gumbel", "assignment"), ("gmvq", "assignment")])
def test_kmeans_init_and_reseeding_are_identical_on_both_workers(tmp_path, name, dead_by):
    """Every codebook bottleneck: k-means seeds and re-seeded codes come from worker 0,
    and the counts that decide re-seeding are summed over workers."""
    (h0, r0), (h1, r1) = run_workers(tmp_path, name, "kmeans", dead=0.7, with_reseeded=True, dead_by=dead_by)
    assert torch.equal(h0, h1)
    assert r0 == r1 > 0  # re-seeding happened, the same on both


def batch_norm_worker(rank, world, port, out_dir):
    from fairseq_vqlatent.modules.bottlenecks.code_space import MaskedBatchNorm

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        norm = MaskedBatchNorm(4).train()
        z, mask = batches(rank, 0)
        out = norm(z, mask)
        torch.save((out, norm.running_mean, norm.running_var), os.path.join(out_dir, f"bn{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_the_code_space_batch_norm_uses_both_workers_statistics(tmp_path):
    from fairseq_vqlatent.modules.bottlenecks.code_space import MaskedBatchNorm

    mp.spawn(batch_norm_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    (out0, mean0, var0), (out1, mean1, var1) = (torch.load(tmp_path / f"bn{r}.pt") for r in range(2))
    assert torch.equal(mean0, mean1) and torch.equal(var0, var1)  # the workers stay identical
    one = MaskedBatchNorm(4).train()  # one worker seeing both batches' latents
    (z0, m0), (z1, m1) = batches(0, 0), batches(1, 0)
    both = one(torch.cat([z0, z1]), torch.cat([m0, m1]))
    torch.testing.assert_close(torch.cat([out0, out1]), both)
    torch.testing.assert_close(mean0, one.running_mean)
    torch.testing.assert_close(var0, one.running_var)
