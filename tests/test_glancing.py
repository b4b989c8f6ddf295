"""Glancing training (GLAT, --glance-ratio): how many words are shown, where, and
that the loss scores only the hidden ones."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from conftest import build_tiny_model, toy_batch, toy_task
from fairseq_vqlatent import VQLatentError
from fairseq_vqlatent.criterions.vqlatent_loss import VQLatentLoss
from fairseq_vqlatent.modules.glancing import glance, glance_counts, glance_mask
from fairseq_vqlatent.modules.one_shot_decoder import output_targets


def test_glance_counts_are_the_ratio_of_wrong_real_positions_rounded_down():
    target = torch.tensor([[5, 6, 7, 8, 2], [5, 6, 7, 1, 1]])
    predicted = torch.tensor([[5, 9, 9, 9, 9], [9, 9, 7, 9, 9]])  # 4 wrong; 2 wrong (padding not counted)
    real = target.ne(1)
    assert glance_counts(predicted, target, real, 0.5).tolist() == [2, 1]
    assert glance_counts(predicted, target, real, 0.3).tolist() == [1, 0]
    assert glance_counts(target, target, real, 0.9).tolist() == [0, 0]


def test_glance_mask_draws_exactly_that_many_real_positions():
    torch.manual_seed(0)
    target = torch.randint(4, 20, (64, 12))
    real = torch.arange(12).unsqueeze(0) < torch.randint(1, 13, (64, 1))
    predicted = torch.where(torch.rand(64, 12) < 0.5, target, torch.zeros_like(target))
    shown = glance_mask(predicted, target, real, 0.5)
    assert torch.equal(shown.sum(1), glance_counts(predicted, target, real, 0.5))
    assert not (shown & ~real).any()
    # uniform over the real positions: every position of a full row is drawn sometimes
    full = real.all(1)
    hits = sum(glance_mask(predicted, target, real, 0.9)[full].sum(0) for _ in range(20))
    assert (hits > 0).all()


def test_glance_puts_the_target_embedding_where_shown():
    x, words = torch.zeros(1, 3, 2), torch.ones(1, 3, 2)
    out = glance(x, words, torch.tensor([[True, False, True]]))
    assert out[0, :, 0].tolist() == [1.0, 0.0, 1.0]


def test_glancing_training_shows_words_and_scores_only_the_hidden_ones():
    torch.manual_seed(0)
    task = toy_task()
    d = task.target_dictionary
    model = build_tiny_model(task, glance_ratio=0.5).train()
    batch = toy_batch(task, [5, 11, 16])
    crit = VQLatentLoss(SimpleNamespace(target_dictionary=d), 0.0, 1.0, 0)
    sample = {"net_input": {k: batch[k] for k in ("src_tokens", "src_lengths", "prev_output_tokens")},
              "target": batch["target"], "ntokens": 32}
    captured, forward = {}, model.forward
    model.forward = lambda *a, **k: captured.setdefault("out", forward(*a, **k))
    loss, sample_size, log = crit(model, sample)
    out = captured["out"]
    real = ~out.output_padding_mask
    assert out.glanced is not None and out.glanced.any() and not (out.glanced & ~real).any()
    # an untrained decoder gets nearly every word wrong: about half of the words are shown
    assert (out.glanced.sum(1) <= (0.5 * real.sum(1)).long()).all()
    assert sample_size == int((real & ~out.glanced).sum())
    tgt = output_targets(batch["target"], out.output_padding_mask, d.pad(), d.eos())
    hidden = real & ~out.glanced
    nll = -F.log_softmax(out.logits.float(), -1)[hidden].gather(1, tgt[hidden].unsqueeze(1)).sum()
    torch.testing.assert_close(log["nll_loss"], nll, rtol=1e-4, atol=1e-4)


def test_glancing_is_off_in_evaluation():
    torch.manual_seed(0)
    task = toy_task()
    model = build_tiny_model(task, glance_ratio=0.5).eval()
    plain = build_tiny_model(task).eval()
    plain.load_state_dict(model.state_dict())
    batch = toy_batch(task, [5, 9])
    with torch.no_grad():
        out = model(**batch)
        assert out.glanced is None
        torch.testing.assert_close(out.logits, plain(**batch).logits)


@pytest.mark.parametrize("overrides, message", [
    (dict(glance_ratio=1.0), r"--glance-ratio must be in \[0, 1\)"),
    (dict(glance_ratio=-0.1), r"--glance-ratio must be in \[0, 1\)"),
    (dict(glance_ratio=0.5, target_mix_updates=10), "pick one"),
])
def test_bad_glancing_options_are_refused(overrides, message):
    with pytest.raises(VQLatentError, match=message):
        build_tiny_model(**overrides)


def test_a_checkpoint_config_from_before_glancing_still_builds_and_trains():
    from omegaconf import OmegaConf

    from conftest import TINY_MODEL
    from fairseq_vqlatent.models.vqlatent_transformer import VQLatentTransformerConfig, VQLatentTransformerModel

    old = OmegaConf.to_container(OmegaConf.structured(VQLatentTransformerConfig(**TINY_MODEL)))
    del old["glance_ratio"]
    cfg = OmegaConf.create(old)
    OmegaConf.set_struct(cfg, True)  # as fairseq loads a checkpoint's config: unknown keys raise
    task = toy_task()
    model = VQLatentTransformerModel.build_model(cfg, task).train()
    assert model(**toy_batch(task, [5, 9])).glanced is None
