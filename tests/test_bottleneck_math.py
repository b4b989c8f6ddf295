"""The bottlenecks' math: EMA = M-step, hard EM = k-means, soft-EM targets,
padding, gradients, precision."""

from types import SimpleNamespace

import pytest
import torch

from fairseq_vqlatent.modules.bottlenecks import build_bottleneck
from fairseq_vqlatent.modules.bottlenecks.ema_codebook import EMACodebook, laplace_smoothed


def bottleneck(name, K=8, D=4, decay=0.0, eps=1e-9, samples=10, init="random", dead=0.0):
    cfg = SimpleNamespace(codebook_size=K, num_samples=samples, ema_decay=decay, ema_epsilon=eps,
                          commitment_beta=0.25, codebook_init=init, dead_code_threshold=dead,
                          temperature_start=2.0, temperature_end=0.1, anneal_updates=100, semhash_noise=1.0,
                          gmvq_gamma=1.0, gmvq_beta=1.0, gmvq_sigma=1.0)
    torch.manual_seed(0)
    return build_bottleneck(name, D, cfg)


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


def test_code_spread_is_zero_for_ids_on_one_point_and_exact_for_orthogonal_codes():
    from types import SimpleNamespace

    from fairseq_vqlatent.inspect_codes import code_spread

    def model(embed):
        return SimpleNamespace(embed_codes=lambda codes: embed[codes])

    counts = torch.tensor([5.0, 5.0, 0.0])
    on_one_point = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert code_spread(model(on_one_point), counts) == 0.0
    # two used unit codes at distance sqrt(2), used equally: mean distance sqrt(2), norm 1
    orthogonal = torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    assert abs(code_spread(model(orthogonal), counts) - 2**0.5) < 1e-6
    assert code_spread(model(orthogonal), torch.tensor([3.0, 0.0, 0.0])) == 0.0  # one code: no spread


def test_code_ids_round_trip_through_the_priors_token_space():
    from conftest import build_tiny_model

    model = build_tiny_model()
    prior, K = model.prior, model.bottleneck.num_codes
    codes = torch.arange(K)
    tokens = prior.codes_to_tokens(codes)
    assert prior.num_codes == K and torch.equal(prior.tokens_to_codes(tokens), codes)
    assert prior.end_token not in tokens.tolist()  # end-of-latents is no code
    assert [model.code_dict[t] for t in tokens[:2].tolist()] == ["c0", "c1"]
    logits = torch.randn(3, len(model.code_dict))
    lp = prior.code_log_probs(logits)  # [3, K + 1]: the codes, then end-of-latents
    full = torch.log_softmax(logits, -1)
    torch.testing.assert_close(lp[:, :K], full[:, tokens])
    torch.testing.assert_close(lp[:, K], full[:, prior.end_token])
