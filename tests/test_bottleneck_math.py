"""Each bottleneck's own math: schedules, Gumbel-softmax, semantic hashing, GM-VQ,
FSQ; and the measures built on codes (code spread, the prior's code ids)."""

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import make_bottleneck, padded_latents
from fairseq_vqlatent.errors import VQLatentError
from fairseq_vqlatent.modules.bottlenecks.base import kl_to_uniform
from fairseq_vqlatent.modules.bottlenecks.gmvq import weighted_distance_logits
from fairseq_vqlatent.modules.bottlenecks.schedules import geometric_anneal, linear_anneal
from fairseq_vqlatent.modules.bottlenecks.semhash import bits_to_codes, codes_to_bits, saturating_sigmoid


def test_schedule_shapes():
    assert geometric_anneal(2.0, 0.1, 50, 100) == pytest.approx(math.sqrt(2.0 * 0.1))
    assert linear_anneal(0.5, 0.0, 25, 100) == pytest.approx(0.375)
    assert geometric_anneal(2.0, 0.1, 7, 0) == 0.1


def test_gumbel_relaxed_sample_at_low_temperature_is_nearly_one_hot():
    bn = make_bottleneck("gumbel", D=2).train()
    bn.codebook.embed.data.copy_(torch.tensor([[0.0, 0.0], [10, 0], [0, 10], [10, 10], [-10, 0], [0, -10],
                                               [-10, -10], [5, 5]]))
    bn.set_num_updates(100)  # tau = 0.1
    z = torch.tensor([[[0.1, 0.2], [9.8, 10.1]]])
    out = bn(z, torch.zeros(1, 2, dtype=torch.bool))
    assert out.codes.tolist() == [[0, 3]]
    torch.testing.assert_close(out.z_q, bn.codebook.embed.data[[0, 3]][None], atol=1e-3, rtol=0)
    # the prior's targets are the posterior softmax(-||z - e||^2)
    torch.testing.assert_close(out.code_targets[0], (-torch.cdist(z[0], bn.codebook.embed.data) ** 2).softmax(-1),
                               atol=1e-5, rtol=1e-5)


def test_saturating_sigmoid_and_bit_codes():
    x = torch.tensor([-10.0, 0.0, 10.0])
    torch.testing.assert_close(saturating_sigmoid(x), torch.tensor([0.0, 0.5, 1.0]))
    codes = torch.arange(8)
    assert torch.equal(bits_to_codes(codes_to_bits(codes, 3)), codes)
    assert codes_to_bits(torch.tensor(6), 3).tolist() == [0.0, 1.0, 1.0]


def test_semhash_soft_and_hard_bits():
    bn = make_bottleneck("semhash").train()
    z, mask = torch.randn(2, 6, 4), torch.zeros(2, 6, dtype=torch.bool)
    bn.noise_std = 0.0
    bn.soft_prob = 0.0  # hard bits only: the decoder input is the embedding of the code
    out = bn(z, mask)
    torch.testing.assert_close(out.z_q, bn.embed_codes(out.codes))
    bits = (bn.to_bits(z) > 0).float()
    assert torch.equal(out.codes, bits_to_codes(bits))
    bn.soft_prob = 1.0  # soft bits only
    out = bn(z, mask)
    torch.testing.assert_close(out.z_q, bn.embed_bits(saturating_sigmoid(bn.to_bits(z))))


def test_semhash_refuses_a_codebook_size_that_is_not_a_power_of_two():
    with pytest.raises(VQLatentError, match="power of two"):
        make_bottleneck("semhash", codebook_size=12)
    with pytest.raises(VQLatentError, match="semhash has no codebook"):
        make_bottleneck("semhash", dead_code_threshold=0.5)


def test_gmvq_logits_are_softplus_weighted_distances():
    z_hat, w, mu = torch.randn(5, 3), F.softplus(torch.randn(5, 3)), torch.randn(7, 3)
    direct = -(w[:, None, :] * (z_hat[:, None, :] - mu[None]) ** 2).sum(-1)
    torch.testing.assert_close(weighted_distance_logits(z_hat, w, mu), direct, atol=1e-5, rtol=1e-5)


def test_gmvq_loss_matches_a_direct_computation():
    D, gamma, beta, sigma = 4, 0.7, 0.3, 1.5
    bn = make_bottleneck("gmvq", D=D).train()
    z, mask = padded_latents()
    torch.manual_seed(3)
    out = bn(z, mask)

    x = z[~mask]  # [N, D]
    z_hat, raw = bn.head(x).chunk(2, -1)
    mu = bn.codebook.embed.data
    logits = -(F.softplus(raw)[:, None] * (z_hat[:, None] - mu[None]) ** 2).sum(-1)
    q = logits.softmax(-1)
    codes = out.codes[~mask]
    mu_c = mu[codes]
    # replay the same noise: Gumbel draw first, then the reparameterisation's normal draw
    torch.manual_seed(3)
    F.gumbel_softmax(logits, tau=2.0, hard=True)
    eps = torch.randn_like(mu_c)
    sigma_c = ((z_hat - mu_c).pow(2).sum(-1, keepdim=True) / (2 * sigma**2 * D)).sqrt()
    z_q = mu_c + sigma_c * eps
    q_bar = q.mean(0)
    kl = (q_bar * (q_bar * 8).log()).sum()
    expected = gamma * (z_q - mu_c).pow(2).mean(-1).sum() + beta * len(x) * kl
    torch.testing.assert_close(out.z_q[~mask], z_q, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.code_targets[~mask], q, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(kl_to_uniform(torch.full((8,), 1 / 8)), torch.tensor(0.0))


def test_gmvq_adds_no_noise_at_eval():
    bn = make_bottleneck("gmvq").eval()
    z, mask = padded_latents()
    out = bn(z, mask)
    torch.testing.assert_close(out.z_q[~mask], bn.codebook.embed.data[out.codes[~mask]])
    assert out.code_targets[~mask].argmax(-1).tolist() == out.codes[~mask].tolist()


def test_gmvq_kl_term_pushes_towards_uniform_usage():
    """Only the KL term: its gradient raises the logits of under-used codes."""
    bn = make_bottleneck("gmvq", gmvq_gamma=0.0, gmvq_beta=1.0).train()
    z, mask = padded_latents()
    out = bn(z, mask)
    assert out.loss > 0
    out.loss.backward()
    assert bn.head.weight.grad.abs().sum() > 0 and bn.codebook.embed.grad.abs().sum() > 0


def test_gmvq_gradients_stay_finite_when_a_proxy_sits_on_its_code():
    """k-means and re-seeding put codes exactly on encoder outputs: sqrt(0) must not give NaN."""
    bn = make_bottleneck("gmvq", D=2).train()
    z = torch.randn(1, 8, 2, requires_grad=True)
    with torch.no_grad():
        z_hat = bn.head(z[0]).chunk(2, -1)[0]
    bn.codebook._set_codes(torch.arange(8), z_hat)
    bn.set_num_updates(100)  # tau = 0.1: every position picks its own code
    out = bn(z, torch.zeros(1, 8, dtype=torch.bool))
    (out.z_q.sum() + out.loss).backward()
    assert torch.isfinite(z.grad).all() and torch.isfinite(bn.codebook.embed.grad).all()


def test_fsq_has_prod_levels_codes_and_rejects_bad_levels():
    from fairseq_vqlatent.errors import VQLatentError

    assert make_bottleneck("fsq", fsq_levels="8,5,5,5").num_codes == 1000
    with pytest.raises(VQLatentError, match="--fsq-levels"):
        make_bottleneck("fsq", fsq_levels="8,x")


def test_code_spread_is_zero_for_ids_on_one_point_and_exact_for_orthogonal_codes():
    from types import SimpleNamespace

    from fairseq_vqlatent.inspect_codes import code_spread

    def model(embed):
        return SimpleNamespace(code_vectors=lambda codes: embed[codes])

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


@pytest.mark.parametrize("name", ["soft_em", "vq"])
def test_code_diversity_adds_the_aggregated_posteriors_kl_once_per_latent(name):
    z, mask = padded_latents()
    z = z.requires_grad_()
    plain = make_bottleneck(name, codebook_size=8, codebook_init="random", commitment_beta=0.0).train()
    spread = make_bottleneck(name, codebook_size=8, codebook_init="random", commitment_beta=0.0,
                             code_diversity=0.5).train()
    codebook = spread.codebook.embed.detach().clone()  # before the M-step moves it
    assert plain.quantize(z, mask).loss == 0.0
    loss = spread.quantize(z, mask).loss
    n = int((~mask).sum())
    q_bar = (-torch.cdist(z.detach()[~mask], codebook) ** 2).softmax(-1).mean(0)
    expected = 0.5 * n * (q_bar * (q_bar * 8).log()).sum()
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-4)
    loss.backward()
    assert z.grad[~mask].abs().sum() > 0 and z.grad[mask].abs().sum() == 0  # the encoder moves, padding not
    assert spread.codebook.embed.grad is None  # the codebook is the EMA's alone
    # eval: no term, the codes are the nearest ones
    assert spread.eval().quantize(z, mask).loss == 0.0


@pytest.mark.parametrize("name", ["soft_em", "vq"])
def test_code_sharpness_adds_each_latents_posterior_entropy(name):
    z, mask = padded_latents()
    z = z.requires_grad_()
    both = make_bottleneck(name, codebook_size=8, codebook_init="random", commitment_beta=0.0,
                           code_diversity=0.3, code_sharpness=0.3).train()
    codebook = both.codebook.embed.detach().clone()  # before the M-step moves it
    loss = both.quantize(z, mask).loss
    n = int((~mask).sum())
    q = (-torch.cdist(z.detach()[~mask], codebook) ** 2).softmax(-1)  # [n, 8]
    q_bar = q.mean(0)
    h_bar = -(q_bar * q_bar.log()).sum()
    h_each = -(q * q.log()).sum(-1).mean()
    # equal weights: -I(z; c) + log K per latent, the mutual information objective
    expected = 0.3 * n * (math.log(8) - (h_bar - h_each))
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-4)
    loss.backward()
    assert z.grad[~mask].abs().sum() > 0 and z.grad[mask].abs().sum() == 0
    assert both.codebook.embed.grad is None
