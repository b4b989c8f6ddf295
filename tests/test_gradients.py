"""Gradients flow where they should and nowhere else."""

import torch

from conftest import build_tiny_model, toy_batch, toy_task
from fairseq_vqlatent.criterions.vqlatent_loss import VQLatentLoss, prior_targets


def grads(module):
    return {n: p.grad for n, p in module.named_parameters()}


def nonzero(g):
    return g is not None and g.abs().sum() > 0


def test_reconstruction_loss_reaches_the_compressor_through_the_bottleneck():
    task = toy_task()
    model = build_tiny_model(task).train()
    out = model(**toy_batch(task, [9, 14]))
    out.logits.logsumexp(-1).sum().backward()
    assert any(nonzero(g) for n, g in grads(model.compressor).items() if "embed" not in n)
    assert all(not nonzero(g) for g in grads(model.prior).values())


def test_prior_loss_leaves_the_codebook_and_the_compressor_untouched():
    task = toy_task()
    model = build_tiny_model(task).eval()  # eval: no EMA step, so only gradients could move anything
    codebook = {k: v.clone() for k, v in model.bottleneck.state_dict().items()}
    out = model(**toy_batch(task, [9, 14]))
    lp = torch.log_softmax(out.prior_logits, -1)
    lp.nan_to_num(neginf=0.0).sum().backward()
    assert all(not nonzero(g) for n, g in grads(model.compressor).items() if "embed_tokens" not in n)
    assert all(not nonzero(p.grad) for p in model.bottleneck.parameters())
    for k, v in model.bottleneck.state_dict().items():
        assert torch.equal(v, codebook[k]), k
    assert any(nonzero(g) for g in grads(model.prior).values())
    assert any(nonzero(g) for g in grads(model.encoder).values())  # the prior reads the source


def test_prior_targets_end_with_end_of_latents():
    r = torch.softmax(torch.randn(2, 3, 4), -1)
    mask = torch.tensor([[False, False, True], [False, False, False]])
    t = prior_targets(r, mask)
    assert t.shape == (2, 4, 5)
    torch.testing.assert_close(t[0, :2, :4], r[0, :2])
    assert t[0, 2, 4] == 1 and t[0, 3].sum() == 0  # eos after 2 codes, then padding
    assert t[1, 3, 4] == 1


def test_criterion_terms_add_up_and_are_logged():
    task = toy_task()
    task.args = None
    model = build_tiny_model(task).train()
    crit = VQLatentLoss(task, label_smoothing=0.1, prior_weight=0.5, prior_start_updates=0)
    batch = toy_batch(task, [9, 14])
    target = batch.pop("target")
    sample = {"net_input": batch, "target": target, "ntokens": int(target.ne(1).sum())}
    torch.manual_seed(0)
    loss, sample_size, log = crit(model, sample)
    assert sample_size == 2 * 8 + 2 * 8  # output positions: every sentence's latents times 8
    assert log["nlatents"] == 2 + 2 and log["prior_steps"] == 4 + 2  # ceil(9/8) + ceil(14/8) codes, two ends
    # prior and bottleneck sums rescaled so that, divided by the sample size, each is a mean over its units
    torch.testing.assert_close(loss, log["recon_loss"] + 0.5 * log["prior_loss"] * 32 / 6 + log["aux_loss"] * 32 / 4)
    assert log["code_counts"].sum() == 4
