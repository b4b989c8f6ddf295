"""Codebook mechanics: the EMA M-step, hard EM as k-means, soft-EM targets,
padding, the straight-through gradient, commitment, dummy batches, precision,
k-means initialisation, re-seeding, cosine codes."""

import math
from types import SimpleNamespace

import pytest
import torch

from conftest import bottleneck, make_bottleneck, padded_latents
from fairseq_vqlatent.modules.bottlenecks import build_bottleneck
from fairseq_vqlatent.modules.bottlenecks.ema_codebook import EMACodebook, laplace_smoothed


def test_ema_update_equals_the_formula():
    torch.manual_seed(0)
    K, D, g, eps = 5, 3, 0.9, 1e-5
    cb = EMACodebook(K, D, g, eps, init="random")
    N0, m0 = torch.rand(K) + 0.5, torch.randn(K, D)
    cb.ema_count.copy_(N0)
    cb.ema_sum.copy_(m0)
    z = torch.randn(12, D)
    r = torch.rand(12, K).softmax(-1)
    cb.update(r, z)

    n_k, s_k = r.sum(0), r.t() @ z
    N = g * N0 + (1 - g) * n_k
    m = g * m0 + (1 - g) * s_k
    n = N.sum()
    N_smooth = (N + eps) / (n + K * eps) * n
    torch.testing.assert_close(cb.ema_count, N)
    torch.testing.assert_close(cb.ema_sum, m)
    torch.testing.assert_close(cb.embed, m / N_smooth[:, None])


def test_ema_equals_the_m_step_in_the_limit_of_zero_decay():
    cb = EMACodebook(4, 2, decay=0.0, eps=1e-9, init="random")
    z = torch.tensor([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0], [12.0, 10.0], [-5.0, 1.0]])
    codes = torch.tensor([0, 0, 1, 1, 3])
    cb.update(torch.nn.functional.one_hot(codes, 4).float(), z)
    torch.testing.assert_close(cb.embed[0], torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(cb.embed[1], torch.tensor([11.0, 10.0]))
    torch.testing.assert_close(cb.embed[3], torch.tensor([-5.0, 1.0]))


def test_laplace_smoothing_keeps_the_total_count():
    counts = torch.tensor([0.0, 3.0, 7.0])
    torch.testing.assert_close(laplace_smoothed(counts, 1e-5).sum(), counts.sum())
    assert laplace_smoothed(counts, 1e-5)[0] > 0


def lloyd(data, centers, iterations):
    """Reference k-means, written independently of the plugin."""
    centers = centers.clone()
    for _ in range(iterations):
        assign = torch.cdist(data, centers).argmin(1)
        for k in range(len(centers)):
            if (assign == k).any():
                centers[k] = data[assign == k].mean(0)
    return centers


def test_hard_em_converges_to_the_k_means_means():
    torch.manual_seed(1)
    centers_true = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 6.0], [0.0, -6.0]])
    data = (centers_true[:, None, :] + torch.randn(4, 50, 2)).reshape(-1, 2)  # [200, 2]
    vq = bottleneck("vq", K=4, D=2).train()
    init = data[[0, 50, 100, 150]] + 0.5
    vq.codebook.embed.copy_(init)
    vq.codebook.ema_sum.copy_(init)
    vq.codebook.ema_count.fill_(1.0)
    z_e, mask = data[None], torch.zeros(1, 200, dtype=torch.bool)
    for _ in range(20):
        vq(z_e, mask)
    expected = lloyd(data, init, 20)
    torch.testing.assert_close(vq.codebook.embed, expected, atol=1e-4, rtol=1e-4)
    # and it is a fixed point: every code is the mean of the points assigned to it
    assign = torch.cdist(data, vq.codebook.embed).argmin(1)
    for k in range(4):
        torch.testing.assert_close(vq.codebook.embed[k], data[assign == k].mean(0), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("m", [1, 5, 10])
def test_soft_em_targets_are_averages_of_m_one_hots(m):
    bn = bottleneck("soft_em", K=6, D=3, samples=m).train()
    bn.codebook.embed.mul_(0.1)  # close codes: the posterior is spread, samples differ
    z_e = torch.randn(2, 5, 3) * 0.1
    mask = torch.zeros(2, 5, dtype=torch.bool)
    embed_before = bn.codebook.embed.clone()
    out = bn(z_e, mask)
    r = out.code_targets
    torch.testing.assert_close(r.sum(-1), torch.ones(2, 5))
    torch.testing.assert_close(r * m, (r * m).round())  # counts of m samples
    # the decoder receives the average of the sampled embeddings
    torch.testing.assert_close(out.z_q, r @ embed_before)


def test_soft_em_is_deterministic_in_eval_mode_and_does_not_learn():
    bn = bottleneck("soft_em").eval()
    z_e, mask = torch.randn(3, 4, 4), torch.zeros(3, 4, dtype=torch.bool)
    embed = bn.codebook.embed.clone()
    a, b = bn(z_e, mask), bn(z_e, mask)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.z_q, b.z_q)
    assert torch.equal(bn.codebook.embed, embed)


@pytest.mark.parametrize("name", ["vq", "soft_em"])
def test_padding_is_never_counted(name):
    bn = bottleneck(name, K=8, D=4).train()
    z = torch.randn(2, 5, 4)
    mask = torch.tensor([[False, False, False, True, True], [False, False, False, False, True]])
    z_padded = z.masked_fill(mask[..., None], 1e4)  # garbage at padding would wreck a codebook
    state = {k: v.clone() for k, v in bn.state_dict().items()}
    torch.manual_seed(3)
    out = bn(z_padded, mask)
    stats_padded = bn.codebook.ema_count.clone(), bn.codebook.embed.clone()

    bn.load_state_dict(state)
    torch.manual_seed(3)
    bn(z[~mask][None], torch.zeros(1, int((~mask).sum()), dtype=torch.bool))
    torch.testing.assert_close(stats_padded[0], bn.codebook.ema_count)
    torch.testing.assert_close(stats_padded[1], bn.codebook.embed)
    assert out.code_targets[mask].abs().sum() == 0
    assert out.codes[mask].abs().sum() == 0
    assert out.z_q[mask].abs().sum() == 0
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize("name", ["vq", "soft_em"])
def test_straight_through_gradient_reaches_z_e(name):
    bn = bottleneck(name).train()
    z_e = torch.randn(2, 3, 4, requires_grad=True)
    out = bn(z_e, torch.zeros(2, 3, dtype=torch.bool))
    w = torch.randn_like(out.z_q)
    (out.z_q * w).sum().backward()
    torch.testing.assert_close(z_e.grad, w)  # identity gradient through the quantizer


@pytest.mark.parametrize("name", ["vq", "soft_em"])
def test_commitment_loss_pulls_z_e_towards_its_code(name):
    bn = bottleneck(name).eval()
    z_e = torch.randn(1, 3, 4, requires_grad=True)
    out = bn(z_e, torch.zeros(1, 3, dtype=torch.bool))
    out.loss.backward()
    e = bn.codebook.embed[out.codes[0]]
    expected = 0.25 * 2 * (z_e[0] - e) / 4  # beta * d/dz mean_D (z - e)^2
    torch.testing.assert_close(z_e.grad[0], expected.detach())


def test_dummy_batch_does_not_move_the_codebook():
    bn = bottleneck("vq", decay=0.9).train()
    bn.learn_from_batch = False
    state = {k: v.clone() for k, v in bn.state_dict().items()}
    bn(torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=torch.bool))
    for k, v in bn.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_codebook_statistics_stay_fp32_under_half_precision():
    bn = bottleneck("soft_em").half()
    for name, buf in bn.codebook.named_buffers():
        if buf.is_floating_point():
            assert buf.dtype == torch.float32, name
    bn.train()
    out = bn(torch.randn(2, 3, 4).half(), torch.zeros(2, 3, dtype=torch.bool))
    assert out.z_q.dtype == torch.float16


def test_kmeans_init_spreads_codes_over_the_data():
    bn = bottleneck("vq", K=8, D=2, decay=0.99, init="kmeans").train()
    data = torch.randn(1, 40, 2) * 3
    mask = torch.zeros(1, 40, dtype=torch.bool)
    bn(data, mask)  # 40 >= 2 * 8 points pooled: k-means runs
    assert bool(bn.codebook.initialized)
    codes = bn(data, mask).codes
    assert len(codes.unique()) >= 6


def test_a_stop_while_kmeans_pools_resumes_with_the_pool():
    """The pool of encoder outputs waiting for k-means is part of the state while it exists: a run
    stopped then (update 10 of the recipe on Multi30k) resumed with k-means on other data."""
    data = torch.randn(1, 40, 2) * 3
    mask = torch.zeros(1, 40, dtype=torch.bool)
    once = bottleneck("vq", K=8, D=2, decay=0.99, init="kmeans").train()
    once(data[:, :10], mask[:, :10])  # 10 of the 16 points k-means waits for
    assert not bool(once.codebook.initialized) and "codebook.kmeans_pool" in once.state_dict()
    resumed = bottleneck("vq", K=8, D=2, decay=0.99, init="kmeans").train()
    resumed.load_state_dict(once.state_dict())
    for bn in (once, resumed):
        torch.manual_seed(3)
        bn(data[:, 10:], mask[:, 10:])
    assert bool(resumed.codebook.initialized) and torch.equal(once.codebook.embed, resumed.codebook.embed)
    assert "codebook.kmeans_pool" not in once.state_dict()  # gone once used: trained models never hold it


def test_dead_codes_are_reseeded_from_current_encoder_outputs():
    cfg = SimpleNamespace(codebook_size=4, num_samples=1, ema_decay=0.5, ema_epsilon=1e-9, commitment_beta=0.25,
                          codebook_init="random", dead_code_threshold=0.3)
    torch.manual_seed(0)
    bn = build_bottleneck("vq", 2, cfg).train()
    bn.codebook.embed.copy_(torch.tensor([[0.0, 0.0], [100.0, 100.0], [200.0, 200.0], [300.0, 300.0]]))
    bn.codebook.ema_sum.copy_(bn.codebook.embed)
    z = torch.randn(1, 6, 2) * 0.1  # all near code 0: codes 1-3 starve
    mask = torch.zeros(1, 6, dtype=torch.bool)
    out = bn(z, mask)  # counts of 1..3: 0.5 >= 0.3, still alive
    assert out.reseeded_codes == 0
    out = bn(z, mask)  # 0.25 < 0.3: re-seeded
    assert out.reseeded_codes == 3
    for k in (1, 2, 3):
        assert (bn.codebook.embed[k] - z[0]).norm(dim=-1).min() < 1e-6  # now an encoder output
        assert bn.codebook.ema_count[k] == 1.0
    assert bn.codebook.num_dead_codes() == 0


def crowded_codebook(dead_by):
    """Three codes; code 2 gets 0.4 of every latent's responsibility (soft EM's samples
    in a crowd of nearby codes) but is the nearest code, the one decoding uses, of none."""
    cb = EMACodebook(3, 2, decay=0.5, eps=1e-9, init="random", dead_threshold=0.3, dead_by=dead_by)
    r = torch.tensor([[0.6, 0.0, 0.4], [0.0, 0.6, 0.4], [0.6, 0.0, 0.4], [0.0, 0.6, 0.4]])  # [N=4, K=3]
    modes = torch.tensor([0, 1, 0, 1])
    z = torch.randn(4, 2)
    return cb, r, z, modes


@pytest.mark.parametrize("dead_by", ["assignment", "mode"])
def test_what_the_dead_code_threshold_counts(dead_by):
    cb, r, z, modes = crowded_codebook(dead_by)
    reseeded = []
    for _ in range(3):
        cb.update(r, z, modes=modes)
        reseeded.append(cb.last_reseeded)
        if cb.last_reseeded:  # onto a latent, as one observation of itself
            assert (cb.embed[2] - z).norm(dim=-1).min() < 1e-6 and cb.mode_count[2] == 1.0
    if dead_by == "assignment":  # 1.6 assignments a step keep code 2 above any small threshold
        assert reseeded == [0, 0, 0] and cb.ema_count[2] > 1.0
    else:  # its count of being the nearest code: 1 -> 0.5 -> 0.25 < 0.3, re-seeded
        assert reseeded == [0, 1, 0], reseeded
        torch.testing.assert_close(cb.mode_count[:2], torch.full((2,), 0.5**3 + 2 * (1 - 0.5**3)))


def test_soft_em_counts_the_posterior_mode_not_its_samples():
    cfg = SimpleNamespace(codebook_size=2, num_samples=10, ema_decay=0.5, ema_epsilon=1e-9, commitment_beta=0.25,
                          codebook_init="random", dead_code_threshold=0.0, dead_code_by="mode")
    torch.manual_seed(0)
    bn = build_bottleneck("soft_em", 2, cfg).train()
    bn.codebook._set_codes(torch.arange(2), torch.tensor([[0.0, 0.0], [0.6, 0.0]]))
    z = torch.zeros(1, 16, 2)
    z[0, :, 0] = -0.1  # p(code 1) = 0.38 for every latent, code 0 the nearest
    bn.quantize(z, torch.zeros(1, 16, dtype=torch.bool))
    torch.testing.assert_close(bn.codebook.mode_count, torch.tensor([0.5 + 0.5 * 16, 0.5]))
    assert bn.codebook.ema_count[1] > 0.5 + 0.5 * 16 * 0.2  # the samples gave code 1 its share


def test_dead_code_by_mode_is_refused_where_codes_are_learned_by_gradient():
    cfg = SimpleNamespace(codebook_size=4, ema_decay=0.9, codebook_init="random", dead_code_threshold=0.3,
                          dead_code_by="mode", temperature_start=2.0, temperature_end=0.1, anneal_updates=10)
    with pytest.raises(Exception, match="--dead-code-by mode applies to the EM bottlenecks"):
        build_bottleneck("gumbel", 2, cfg)


@pytest.mark.parametrize("name", ["vq", "soft_em"])
def test_codebook_math_stays_fp32_under_autocast(name):
    z_e, mask = torch.randn(2, 5, 4), torch.zeros(2, 5, dtype=torch.bool)
    results = []
    for autocast in (False, True):
        bn = bottleneck(name, decay=0.5).train()
        torch.manual_seed(7)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            bn(z_e, mask)
        results.append(bn.codebook.embed.clone())
    assert results[1].dtype == torch.float32
    torch.testing.assert_close(results[0], results[1], atol=0, rtol=0)


@pytest.mark.parametrize("name", ["vq", "soft_em"])
def test_cosine_codes_stay_on_the_sphere_and_ignore_scale(name):
    bn = make_bottleneck(name, cosine_codes=True, ema_decay=0.5).train()
    z, mask = padded_latents()
    for _ in range(3):
        bn(z, mask)
    norms = bn.codebook.embed.norm(dim=-1)
    torch.testing.assert_close(norms, torch.full_like(norms, 2.0))  # sqrt(D), D = 4
    bn.eval()
    assert torch.equal(bn(z, mask).codes, bn(10 * z, mask).codes)


def test_cosine_codes_have_no_hub():
    """A short code (the mean of a big cluster) is nearest to a far point in L2, not in angle."""
    bn = make_bottleneck("vq", D=2, codebook_size=2).eval()
    def at(degrees, norm=2.0):
        return [norm * math.cos(math.radians(degrees)), norm * math.sin(math.radians(degrees))]

    codes = torch.tensor([at(0, norm=0.1), at(128)])  # a short 'hub' at 0 degrees, a full-length code at 128
    bn.codebook.embed.copy_(codes)
    point = torch.tensor([[at(66)]])  # 62 degrees from the code, 66 from the hub
    no_mask = torch.zeros(1, 1, dtype=torch.bool)
    assert bn(point, no_mask).codes.item() == 0
    cos = make_bottleneck("vq", D=2, codebook_size=2, cosine_codes=True).eval()
    cos.codebook.embed.copy_(cos.codebook.normalize(codes))
    assert cos(point, no_mask).codes.item() == 1
