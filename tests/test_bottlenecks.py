"""Every bottleneck behind the one interface: loss terms, schedules, determinism
at eval, gradients to the encoder, padding; plus gumbel / semhash / gmvq math."""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from fairseq_vqlatent.errors import VQLatentError
from fairseq_vqlatent.modules.bottlenecks import BOTTLENECK_REGISTRY, build_bottleneck
from fairseq_vqlatent.modules.bottlenecks.gmvq import kl_to_uniform, weighted_distance_logits
from fairseq_vqlatent.modules.bottlenecks.schedules import geometric_anneal, linear_anneal
from fairseq_vqlatent.modules.bottlenecks.semhash import bits_to_codes, codes_to_bits, saturating_sigmoid

ALL = ["vq", "soft_em", "gumbel", "semhash", "gmvq", "fsq"]
CODEBOOK = ["vq", "soft_em", "gumbel", "gmvq"]


def config(**overrides):
    cfg = dict(codebook_size=8, num_samples=5, ema_decay=0.9, ema_epsilon=1e-5, commitment_beta=0.25,
               codebook_init="random", dead_code_threshold=0.0, temperature_start=2.0, temperature_end=0.1,
               anneal_updates=100, semhash_noise=1.0, gmvq_gamma=0.7, gmvq_beta=0.3, gmvq_sigma=1.5,
               fsq_levels="2,2,2", cosine_codes=False)
    cfg.update(overrides)
    return SimpleNamespace(**cfg)


def make(name, D=4, seed=0, **overrides):
    torch.manual_seed(seed)
    return build_bottleneck(name, D, config(**overrides))


def padded_batch(seed=0, D=4):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(3, 5, D, generator=g)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[1, 3:] = True
    mask[2, 1:] = True
    return z, mask


def test_every_bottleneck_is_registered():
    assert set(ALL) <= set(BOTTLENECK_REGISTRY)


@pytest.mark.parametrize("name", ALL)
def test_output_shapes_and_prior_targets(name):
    bn = make(name).train()
    z, mask = padded_batch()
    out = bn(z, mask)
    assert out.z_q.shape == z.shape and out.codes.shape == mask.shape
    assert out.code_targets.shape == (3, 5, 8)
    rows = out.code_targets[~mask].sum(-1)
    torch.testing.assert_close(rows, torch.ones_like(rows))
    assert out.code_targets[mask].abs().sum() == 0 and out.codes[mask].abs().sum() == 0
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    if name in ("gumbel", "semhash", "fsq"):  # no auxiliary loss of their own
        assert out.loss == 0


@pytest.mark.parametrize("name", ALL)
def test_eval_mode_is_deterministic_and_matches_embed_codes(name):
    bn = make(name).eval()
    z, mask = padded_batch()
    torch.manual_seed(1)
    a = bn(z, mask)
    torch.manual_seed(2)
    b = bn(z, mask)
    assert torch.equal(a.z_q, b.z_q) and torch.equal(a.codes, b.codes)
    torch.testing.assert_close(bn.embed_codes(a.codes)[~mask], a.z_q[~mask])


@pytest.mark.parametrize("name", ALL)
def test_gradients_reach_the_encoder(name):
    bn = make(name).train()
    z, mask = padded_batch()
    z.requires_grad_(True)
    out = bn(z, mask)
    (out.z_q[~mask].pow(2).sum() + out.loss).backward()
    assert z.grad[~mask].abs().sum() > 0
    assert z.grad[mask].abs().sum() == 0  # padding gets nothing


@pytest.mark.parametrize("name", ALL)
def test_padding_never_counts(name):
    """Adding padded positions changes neither the codes, the loss nor the codebook."""
    z, mask = padded_batch()
    wide_z = torch.cat([z, torch.randn(3, 4, 4) * 100], 1)
    wide_mask = torch.cat([mask, torch.ones(3, 4, dtype=torch.bool)], 1)
    results = []
    for zz, mm in ((z, mask), (wide_z, wide_mask)):
        bn = make(name, codebook_init="kmeans").train()
        if hasattr(bn, "codebook"):
            bn.codebook.KMEANS_POOL = 1
        torch.manual_seed(5)
        out = bn(zz, mm)
        state = {k: v.clone() for k, v in bn.state_dict().items()}
        results.append((out.codes[:, :5], out.loss.detach(), state))
    (c0, l0, s0), (c1, l1, s1) = results
    assert torch.equal(c0, c1)
    torch.testing.assert_close(l0, l1)
    for k in s0:
        torch.testing.assert_close(s0[k], s1[k], msg=k)


@pytest.mark.parametrize("name, attr, end", [("gumbel", "temperature", 0.1), ("gmvq", "temperature", 0.1),
                                             ("semhash", "soft_prob", 0.0)])
def test_schedules_follow_the_update_number_to_their_end_values(name, attr, end):
    bn = make(name)
    bn.set_num_updates(0)
    start = getattr(bn, attr)
    bn.set_num_updates(50)
    middle = getattr(bn, attr)
    bn.set_num_updates(100)
    assert getattr(bn, attr) == end
    bn.set_num_updates(10_000)
    assert getattr(bn, attr) == end
    assert start > middle > end
    assert start == (2.0 if attr == "temperature" else 0.5)


def test_schedule_shapes():
    assert geometric_anneal(2.0, 0.1, 50, 100) == pytest.approx(math.sqrt(2.0 * 0.1))
    assert linear_anneal(0.5, 0.0, 25, 100) == pytest.approx(0.375)
    assert geometric_anneal(2.0, 0.1, 7, 0) == 0.1


def test_set_num_updates_reaches_the_bottleneck_through_the_model():
    from conftest import build_tiny_model

    model = build_tiny_model(bottleneck="gmvq", anneal_updates=10)
    model.set_num_updates(10)
    assert model.bottleneck.temperature == pytest.approx(0.1)


# ---------------------------------------------------------------- gumbel

def test_gumbel_relaxed_sample_at_low_temperature_is_nearly_one_hot():
    bn = make("gumbel", D=2).train()
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


# ---------------------------------------------------------------- semhash

def test_saturating_sigmoid_and_bit_codes():
    x = torch.tensor([-10.0, 0.0, 10.0])
    torch.testing.assert_close(saturating_sigmoid(x), torch.tensor([0.0, 0.5, 1.0]))
    codes = torch.arange(8)
    assert torch.equal(bits_to_codes(codes_to_bits(codes, 3)), codes)
    assert codes_to_bits(torch.tensor(6), 3).tolist() == [0.0, 1.0, 1.0]


def test_semhash_soft_and_hard_bits():
    bn = make("semhash").train()
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
        make("semhash", codebook_size=12)
    with pytest.raises(VQLatentError, match="semhash has no codebook"):
        make("semhash", dead_code_threshold=0.5)


# ---------------------------------------------------------------- gmvq

def test_gmvq_logits_are_softplus_weighted_distances():
    z_hat, w, mu = torch.randn(5, 3), F.softplus(torch.randn(5, 3)), torch.randn(7, 3)
    direct = -(w[:, None, :] * (z_hat[:, None, :] - mu[None]) ** 2).sum(-1)
    torch.testing.assert_close(weighted_distance_logits(z_hat, w, mu), direct, atol=1e-5, rtol=1e-5)


def test_gmvq_loss_matches_a_direct_computation():
    D, gamma, beta, sigma = 4, 0.7, 0.3, 1.5
    bn = make("gmvq", D=D).train()
    z, mask = padded_batch()
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
    bn = make("gmvq").eval()
    z, mask = padded_batch()
    out = bn(z, mask)
    torch.testing.assert_close(out.z_q[~mask], bn.codebook.embed.data[out.codes[~mask]])
    assert out.code_targets[~mask].argmax(-1).tolist() == out.codes[~mask].tolist()


def test_gmvq_kl_term_pushes_towards_uniform_usage():
    """Only the KL term: its gradient raises the logits of under-used codes."""
    bn = make("gmvq", gmvq_gamma=0.0, gmvq_beta=1.0).train()
    z, mask = padded_batch()
    out = bn(z, mask)
    assert out.loss > 0
    out.loss.backward()
    assert bn.head.weight.grad.abs().sum() > 0 and bn.codebook.embed.grad.abs().sum() > 0


# ---------------------------------------------------------------- codebook upkeep

@pytest.mark.parametrize("name", CODEBOOK)
def test_kmeans_init_places_codes_on_encoder_outputs(name):
    bn = make(name, D=2, codebook_init="kmeans").train()
    bn.codebook.KMEANS_POOL = 1
    centres = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0], [0.0, -5.0], [5, 5], [-5, -5], [5, -5], [-5, 5]])
    z = (centres[:, None] + 0.01 * torch.randn(8, 4, 2)).reshape(1, 32, 2)
    if name == "gmvq":  # k-means runs on the proxy z^: make the head the identity on it
        with torch.no_grad():
            bn.head.weight.zero_()
            bn.head.bias.zero_()
            bn.head.weight[:2, :2] = torch.eye(2)
    bn(z, torch.zeros(1, 32, dtype=torch.bool))
    assert bool(bn.codebook.initialized)
    codes, data = bn.codebook.embed.data.float(), z[0]
    # a Lloyd fixed point (for vq and soft_em the EMA step that follows keeps it one) on the encoder outputs: every used code is the mean of its points
    assign = torch.cdist(data, codes).argmin(1)
    for k in assign.unique():  # (soft EM's sampled M-step blurs it a little)
        torch.testing.assert_close(codes[k], data[assign == k].mean(0), atol=1e-2, rtol=0)
    assert torch.cdist(centres, codes).min(1).values.median() < 0.1  # most clusters found exactly


@pytest.mark.parametrize("name", CODEBOOK)
def test_dead_codes_are_reseeded_from_encoder_outputs(name):
    bn = make(name, D=2, dead_code_threshold=0.5, ema_decay=0.5).train()
    far = torch.tensor([[0.0, 0.0], [100.0, 100.0], [200, 200], [300, 300], [400, 400], [500, 500], [600, 600],
                        [700, 700]])
    bn.codebook._set_codes(torch.arange(8), far)
    z = torch.randn(1, 16, 2) * 0.1  # all near code 0: codes 1..7 never win
    reseeded = [bn(z, torch.zeros(1, 16, dtype=torch.bool)).reseeded_codes for _ in range(3)]
    assert reseeded[0] == 0 and sum(reseeded) == 7, reseeded  # once their usage fell below 0.5
    assert (bn.codebook.embed.data.float()[1:] - far[1:]).norm(dim=-1).min() > 1  # all moved
    assert bn.codebook.embed.data.float()[1:].abs().max() < 10  # onto (projected) encoder outputs


@pytest.mark.parametrize("name", ALL)
def test_each_bottleneck_trains_and_decodes_inside_the_model(name):
    """Criterion forward/backward, then one-shot generation, with the bottleneck in the real model."""
    from conftest import build_tiny_model, toy_batch, toy_task
    from fairseq_vqlatent.criterions.vqlatent_loss import VQLatentLoss
    from fairseq_vqlatent.latent_generator import LatentGenerator

    task = toy_task()
    model = build_tiny_model(task, bottleneck=name, codebook_size=16, codebook_init="random").train()
    batch = toy_batch(task, [9, 5, 12])
    sample = {"id": torch.arange(3), "net_input": {k: batch[k] for k in ("src_tokens", "src_lengths", "prev_output_tokens")},
              "target": batch["target"], "ntokens": int(batch["target"].ne(task.target_dictionary.pad()).sum())}
    criterion = VQLatentLoss(task, label_smoothing=0.1, prior_weight=1.0, prior_start_updates=0)
    loss, sample_size, log = criterion(model, sample)
    loss.backward()
    assert torch.isfinite(loss) and log["code_counts"].sum() == log["nlatents"] == log["prior_steps"] - 3  # 3 end-of-latents
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.compressor.parameters())
    model.eval()
    gen = LatentGenerator([model], task.target_dictionary, max_len_a=1.0, max_len_b=5)
    hypos = gen.generate([model], {"id": sample["id"], "net_input": {k: batch[k] for k in ("src_tokens", "src_lengths")}})
    assert len(hypos) == 3 and all(len(h[0]["tokens"]) >= 1 for h in hypos)


def test_gmvq_gradients_stay_finite_when_a_proxy_sits_on_its_code():
    """k-means and re-seeding put codes exactly on encoder outputs: sqrt(0) must not give NaN."""
    bn = make("gmvq", D=2).train()
    z = torch.randn(1, 8, 2, requires_grad=True)
    with torch.no_grad():
        z_hat = bn.head(z[0]).chunk(2, -1)[0]
    bn.codebook._set_codes(torch.arange(8), z_hat)
    bn.set_num_updates(100)  # tau = 0.1: every position picks its own code
    out = bn(z, torch.zeros(1, 8, dtype=torch.bool))
    (out.z_q.sum() + out.loss).backward()
    assert torch.isfinite(z.grad).all() and torch.isfinite(bn.codebook.embed.grad).all()


# ---------------------------------------------------------------- cosine codes (vq, soft_em)


@pytest.mark.parametrize("name", ["vq", "soft_em"])
def test_cosine_codes_stay_on_the_sphere_and_ignore_scale(name):
    bn = make(name, cosine_codes=True, ema_decay=0.5).train()
    z, mask = padded_batch()
    for _ in range(3):
        bn(z, mask)
    norms = bn.codebook.embed.norm(dim=-1)
    torch.testing.assert_close(norms, torch.full_like(norms, 2.0))  # sqrt(D), D = 4
    bn.eval()
    assert torch.equal(bn(z, mask).codes, bn(10 * z, mask).codes)


def test_cosine_codes_have_no_hub():
    """A short code (the mean of a big cluster) is nearest to a far point in L2, not in angle."""
    bn = make("vq", D=2, codebook_size=2).eval()
    def at(degrees, norm=2.0):
        return [norm * math.cos(math.radians(degrees)), norm * math.sin(math.radians(degrees))]

    codes = torch.tensor([at(0, norm=0.1), at(128)])  # a short 'hub' at 0 degrees, a full-length code at 128
    bn.codebook.embed.copy_(codes)
    point = torch.tensor([[at(66)]])  # 62 degrees from the code, 66 from the hub
    no_mask = torch.zeros(1, 1, dtype=torch.bool)
    assert bn(point, no_mask).codes.item() == 0
    cos = make("vq", D=2, codebook_size=2, cosine_codes=True).eval()
    cos.codebook.embed.copy_(cos.codebook.normalize(codes))
    assert cos(point, no_mask).codes.item() == 1


def test_fsq_has_prod_levels_codes_and_rejects_bad_levels():
    from fairseq_vqlatent.errors import VQLatentError

    assert make("fsq", fsq_levels="8,5,5,5").num_codes == 1000
    with pytest.raises(VQLatentError, match="--fsq-levels"):
        make("fsq", fsq_levels="8,x")
