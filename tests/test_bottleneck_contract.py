"""The contract every registered bottleneck meets, run over the registry: shapes
and prior targets, determinism at eval, gradients to the encoder, padding,
schedules, training inside the model; and, for every codebook bottleneck, k-means
initialisation and re-seeding."""

import pytest
import torch

from conftest import make_bottleneck, padded_latents
from fairseq_vqlatent.modules.bottlenecks import BOTTLENECK_REGISTRY
from fairseq_vqlatent.modules.bottlenecks.codebook_bottleneck import CodebookBottleneck

REGISTERED = sorted(BOTTLENECK_REGISTRY)
CODEBOOK = [name for name in REGISTERED if issubclass(BOTTLENECK_REGISTRY[name], CodebookBottleneck)]


def test_every_bottleneck_is_registered():
    assert {"vq", "soft_em", "gumbel", "semhash", "gmvq", "fsq"} <= set(REGISTERED)
    assert set(CODEBOOK) == {"vq", "soft_em", "gumbel", "gmvq"}


@pytest.mark.parametrize("name", REGISTERED)
def test_output_shapes_and_prior_targets(name):
    bn = make_bottleneck(name).train()
    z, mask = padded_latents()
    out = bn(z, mask)
    assert out.z_q.shape == z.shape and out.codes.shape == mask.shape
    assert out.code_targets.shape == (3, 5, 8)
    rows = out.code_targets[~mask].sum(-1)
    torch.testing.assert_close(rows, torch.ones_like(rows))
    assert out.code_targets[mask].abs().sum() == 0 and out.codes[mask].abs().sum() == 0
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    if name in ("gumbel", "semhash", "fsq"):  # no auxiliary loss of their own
        assert out.loss == 0


@pytest.mark.parametrize("name", REGISTERED)
def test_eval_mode_is_deterministic_and_matches_embed_codes(name):
    bn = make_bottleneck(name).eval()
    z, mask = padded_latents()
    torch.manual_seed(1)
    a = bn(z, mask)
    torch.manual_seed(2)
    b = bn(z, mask)
    assert torch.equal(a.z_q, b.z_q) and torch.equal(a.codes, b.codes)
    torch.testing.assert_close(bn.embed_codes(a.codes)[~mask], a.z_q[~mask])


@pytest.mark.parametrize("code_norm", ["layer", "batch"])
@pytest.mark.parametrize("name", REGISTERED)
def test_a_smaller_code_space_is_the_bottlenecks_own(name, code_norm):
    """z_e [B, L, 4] quantized in 3 dimensions: z_q comes back in z_e's space, and
    embed_codes gives it at inference; the codes live in the code space."""
    bn = make_bottleneck(name, code_dim=3, code_norm=code_norm).train()
    z, mask = padded_latents()
    bn(z, mask)  # a training step first: k-means, batch-norm statistics
    out = bn.eval()(z, mask)
    assert out.z_q.shape == z.shape and bn.code_vectors(out.codes).shape == (3, 5, 3)
    assert out.z_q[mask].abs().sum() == 0  # project_out's bias stays off the padding
    torch.testing.assert_close(bn.embed_codes(out.codes)[~mask], out.z_q[~mask])
    params = [n for n, _ in bn.named_parameters()]
    assert "project_in.linear.weight" in params and "project_out.weight" in params


@pytest.mark.parametrize("name", REGISTERED)
def test_codes_embed_in_half_precision_through_a_projection(name):
    """--fp16 decoding: an EMA codebook stays fp32, project_out is half."""
    bn = make_bottleneck(name, code_dim=3).half().eval()
    out = bn.embed_codes(torch.tensor([[0, 1, 2]]))
    assert out.dtype == torch.float16 and out.shape == (1, 3, 4)


@pytest.mark.parametrize("name", REGISTERED)
def test_gradients_reach_the_encoder(name):
    bn = make_bottleneck(name).train()
    z, mask = padded_latents()
    z.requires_grad_(True)
    out = bn(z, mask)
    (out.z_q[~mask].pow(2).sum() + out.loss).backward()
    assert z.grad[~mask].abs().sum() > 0
    assert z.grad[mask].abs().sum() == 0  # padding gets nothing


@pytest.mark.parametrize("name", REGISTERED)
def test_padding_never_counts(name):
    """Adding padded positions changes neither the codes, the loss nor the codebook."""
    z, mask = padded_latents()
    wide_z = torch.cat([z, torch.randn(3, 4, 4) * 100], 1)
    wide_mask = torch.cat([mask, torch.ones(3, 4, dtype=torch.bool)], 1)
    results = []
    for zz, mm in ((z, mask), (wide_z, wide_mask)):
        bn = make_bottleneck(name, codebook_init="kmeans").train()
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
    bn = make_bottleneck(name)
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


def test_set_num_updates_reaches_the_bottleneck_through_the_model():
    from conftest import build_tiny_model

    model = build_tiny_model(bottleneck="gmvq", anneal_updates=10)
    model.set_num_updates(10)
    assert model.bottleneck.temperature == pytest.approx(0.1)


@pytest.mark.parametrize("name", CODEBOOK)
def test_kmeans_init_places_codes_on_encoder_outputs(name):
    bn = make_bottleneck(name, D=2, codebook_init="kmeans").train()
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
    bn = make_bottleneck(name, D=2, dead_code_threshold=0.5, ema_decay=0.5).train()
    far = torch.tensor([[0.0, 0.0], [100.0, 100.0], [200, 200], [300, 300], [400, 400], [500, 500], [600, 600],
                        [700, 700]])
    bn.codebook._set_codes(torch.arange(8), far)
    z = torch.randn(1, 16, 2) * 0.1  # all near code 0: codes 1..7 never win
    reseeded = [bn(z, torch.zeros(1, 16, dtype=torch.bool)).reseeded_codes for _ in range(3)]
    assert reseeded[0] == 0 and sum(reseeded) == 7, reseeded  # once their usage fell below 0.5
    assert (bn.codebook.embed.data.float()[1:] - far[1:]).norm(dim=-1).min() > 1  # all moved
    assert bn.codebook.embed.data.float()[1:].abs().max() < 10  # onto (projected) encoder outputs


@pytest.mark.parametrize("name", REGISTERED)
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
