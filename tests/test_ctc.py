"""CTC output for the one-shot decoder (--ctc-upsample): the loss against a hand
computation, best-path decoding, and the model's shapes and refusals."""

import itertools
import math
from types import SimpleNamespace

import pytest
import torch

from conftest import build_tiny_model, toy_batch, toy_task
from fairseq_vqlatent import VQLatentError
from fairseq_vqlatent.latent_generator import LatentGenerator
from fairseq_vqlatent.criterions.vqlatent_loss import VQLatentLoss
from fairseq_vqlatent.modules.ctc import best_alignment, ctc_collapse, ctc_loss, ctc_targets, upsample

PAD, EOS, BLANK = 1, 2, 3


def test_collapse_merges_repeats_and_drops_blanks():
    tokens = torch.tensor([5, 5, BLANK, 5, 6, 6, BLANK, BLANK, 7])
    assert ctc_collapse(tokens, BLANK) == [0, 3, 4, 8]  # 5 5 | 5 | 6 | 7: a blank separates a real repeat
    assert ctc_collapse(torch.tensor([BLANK, BLANK]), BLANK) == []


def test_targets_drop_the_eos():
    words, lengths = ctc_targets(torch.tensor([[5, 6, EOS], [7, EOS, PAD]]), PAD, EOS)
    assert words.tolist() == [[5, 6, PAD], [7, PAD, PAD]] and lengths.tolist() == [2, 1]


def test_loss_is_the_sum_over_alignments_by_hand():
    # One word w over two positions: the paths w w, w _, _ w all give "w".
    w, V = 5, 8
    lprobs = torch.log_softmax(torch.randn(1, 2, V, generator=torch.Generator().manual_seed(0)), -1)
    p = lprobs.exp()[0]
    by_hand = -math.log(p[0, w] * p[1, w] + p[0, w] * p[1, BLANK] + p[0, BLANK] * p[1, w])
    mask = torch.zeros(1, 2, dtype=torch.bool)
    loss, nll, words = ctc_loss(lprobs, mask, torch.tensor([[w, EOS]]), BLANK, PAD, EOS, epsilon=0.0)
    assert words == 1
    torch.testing.assert_close(nll, torch.tensor(by_hand))
    torch.testing.assert_close(loss, nll)
    # label smoothing: a share epsilon is the mean -log p over the vocabulary, per target word
    smoothed, _, _ = ctc_loss(lprobs, mask, torch.tensor([[w, EOS]]), BLANK, PAD, EOS, epsilon=0.1)
    uniform = float(-lprobs[0].mean(-1).sum()) * 1 / 2  # one word over two positions
    torch.testing.assert_close(smoothed, torch.tensor(0.9 * by_hand + 0.1 * uniform))


def test_padding_positions_do_not_count():
    lprobs = torch.log_softmax(torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(1)), -1)
    mask = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    target = torch.tensor([[5, 6, EOS], [5, 6, EOS]])
    _, nll, _ = ctc_loss(lprobs, mask, target, BLANK, PAD, EOS, 0.0)
    _, alone, _ = ctc_loss(lprobs[1:, :4], mask[1:, :4], target[1:], BLANK, PAD, EOS, 0.0)
    _, first, _ = ctc_loss(lprobs[:1], mask[:1], target[:1], BLANK, PAD, EOS, 0.0)
    torch.testing.assert_close(nll, first + alone)


def test_upsample_repeats_positions_and_their_mask():
    x = torch.arange(6.0).view(1, 3, 2)
    y, mask = upsample(x, torch.tensor([[False, False, True]]), 2)
    assert y[0, :, 0].tolist() == [0, 0, 2, 2, 4, 4] and mask.tolist() == [[False] * 4 + [True] * 2]


def test_model_decodes_k_times_as_many_positions_and_trains_on_ctc():
    torch.manual_seed(0)
    task = toy_task()
    d = task.target_dictionary
    model = build_tiny_model(task, ctc_upsample=2, compress_steps=2).train()
    assert model.ctc_blank == d.unk()
    batch = toy_batch(task, [5, 11])
    out = model(**batch)
    assert out.logits.shape[1] == 2 * 4 * 3  # 3 latents of 4 positions, each read twice
    assert (~out.output_padding_mask).sum(1).tolist() == [2 * 4 * 2, 2 * 4 * 3]
    crit = VQLatentLoss(SimpleNamespace(target_dictionary=d), 0.1, 1.0, 0)
    sample = {"net_input": {k: batch[k] for k in ("src_tokens", "src_lengths", "prev_output_tokens")},
              "target": batch["target"], "ntokens": 16}
    loss, sample_size, log = crit(model, sample)
    assert sample_size == 4 + 10  # target words, EOS not among them
    assert torch.isfinite(loss) and log["nll_loss"] > 0
    loss.backward()
    assert model.decoder.layers[0].fc1.weight.grad.abs().sum() > 0


def test_generator_emits_the_collapsed_best_path_and_one_eos():
    task = toy_task()
    d = task.target_dictionary
    model = build_tiny_model(task, ctc_upsample=2, compress_steps=2).eval()
    path = [10, 10, d.unk(), 10, 11, d.eos(), 12, d.unk()]  # EOS may not be emitted: 12 is its runner-up
    logits = torch.zeros(1, len(path), len(d))
    for t, tok in enumerate(path):
        logits[0, t, tok] = 5.0
    logits[0, 5, 12] = 4.0
    gen = LatentGenerator([model], d, max_len_a=0, max_len_b=8)
    hyp = gen.hypotheses(logits, torch.zeros(1, len(path), dtype=torch.bool), 4, model.ctc_blank)[0]
    assert hyp["tokens"].tolist() == [10, 10, 11, 12, d.eos()]


def test_ctc_refuses_target_mixing_which_needs_fixed_positions():
    with pytest.raises(VQLatentError, match="--ctc-upsample"):
        build_tiny_model(ctc_upsample=2, target_mix_updates=100)


def _best_path_by_enumeration(lprobs, words):
    """The most probable path of lprobs [T, V] that collapses to ``words``."""
    best, arg = -math.inf, None
    for path in itertools.product(range(lprobs.size(-1)), repeat=lprobs.size(0)):
        if [path[i] for i in ctc_collapse(torch.tensor(path), BLANK)] == words:
            score = sum(float(lprobs[t, p]) for t, p in enumerate(path))
            if score > best:
                best, arg = score, list(path)
    return arg


def test_best_alignment_is_the_best_path_that_reads_the_target():
    g = torch.Generator().manual_seed(0)
    for _ in range(8):
        lprobs = torch.log_softmax(2 * torch.randn(2, 5, 6, generator=g), -1)
        first, second = torch.randint(4, 6, (2,), generator=g).tolist(), torch.randint(4, 6, (1,), generator=g).tolist()
        target = torch.tensor([first + [EOS], second + [EOS, PAD]])  # repeated words need a blank between
        mask = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
        aligned = best_alignment(lprobs, mask, target, BLANK, PAD, EOS)
        assert aligned[0].tolist() == _best_path_by_enumeration(lprobs[0], first)
        assert aligned[1].tolist() == _best_path_by_enumeration(lprobs[1, :3], second) + [PAD, PAD]


def test_glancing_with_ctc_shows_words_at_their_best_path_places():
    torch.manual_seed(0)
    task = toy_task()
    d = task.target_dictionary
    model = build_tiny_model(task, ctc_upsample=2, compress_steps=2, glance_ratio=0.5).train()
    batch = toy_batch(task, [5, 11])
    captured, glance = {}, model._glance
    model._glance = lambda *a: captured.setdefault("out", glance(*a))
    out = model(**batch)
    x, shown = captured["out"]
    assert out.glanced is shown and shown.any() and not (shown & out.output_padding_mask).any()
    # what a shown position reads is the embedding of a target word or of the blank
    vocab = model._embed_targets(torch.arange(len(d))).detach()
    read = torch.cdist(x[shown].detach(), vocab).argmin(-1)
    allowed = set(batch["target"].flatten().tolist()) - {d.pad(), d.eos()} | {d.unk()}
    assert set(read.tolist()) <= allowed


def test_negative_factor_is_refused():
    with pytest.raises(VQLatentError, match="--ctc-upsample must be 0"):
        build_tiny_model(ctc_upsample=-1)


def test_loss_on_each_sentences_own_words_equals_the_full_vocabulary_loss():
    # The criterion gathers the blank's and the target words' log-probs before CTC;
    # repeated words must keep sharing a label (a blank parts them), so the value and
    # the gradient equal torch's CTC over the whole vocabulary.
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 10, 12, generator=g, requires_grad=True)
    target = torch.tensor([[5, 5, 6, EOS, PAD], [7, 8, 7, 7, EOS], [9, EOS, PAD, PAD, PAD]])
    mask = torch.tensor([[False] * 10, [False] * 10, [False] * 6 + [True] * 4])
    _, nll, _ = ctc_loss(logits.log_softmax(-1), mask, target, BLANK, PAD, EOS, 0.0)
    (ours,) = torch.autograd.grad(nll, logits)
    words, lengths = ctc_targets(target, PAD, EOS)
    full = torch.nn.functional.ctc_loss(
        logits.log_softmax(-1).transpose(0, 1), words, (~mask).sum(1), lengths, blank=BLANK, reduction="sum"
    )
    (theirs,) = torch.autograd.grad(full, logits)
    torch.testing.assert_close(nll, full)
    torch.testing.assert_close(ours, theirs)


def test_a_target_that_cannot_fit_its_positions_scores_zero():
    lprobs = torch.log_softmax(torch.randn(1, 3, 8, requires_grad=True), -1)
    _, nll, _ = ctc_loss(lprobs, torch.zeros(1, 3, dtype=torch.bool), torch.tensor([[5, 5, 6, EOS]]), BLANK, PAD, EOS, 0.0)
    assert nll.item() == 0.0  # 5 _ 5 6 needs four positions


def test_validation_whose_hypotheses_are_all_empty_reports_bleu_zero():
    # A young CTC decoder emits only blanks; fairseq then logs no BLEU and choosing
    # checkpoint_best by it failed with KeyError 'bleu'.
    from fairseq import metrics
    from fairseq_vqlatent.tasks.translation_vqlatent import TranslationVQLatentConfig, TranslationVQLatentTask

    task = toy_task()
    cfg = TranslationVQLatentConfig(eval_bleu=True)
    t = TranslationVQLatentTask(cfg, task.source_dictionary, task.target_dictionary)
    empty = {f"_bleu_{k}_{i}": 0 for k in ("counts", "totals") for i in range(4)}
    logs = [{**empty, "_bleu_sys_len": 0, "_bleu_ref_len": 12, "loss": 1.0, "sample_size": 1, "ntokens": 1, "nsentences": 1}]
    class NoCriterionMetrics:
        @staticmethod
        def reduce_metrics(logging_outputs):
            pass

    with metrics.aggregate() as agg:
        t.reduce_metrics(logs, NoCriterionMetrics())
    assert agg.get_smoothed_values()["bleu"] == 0.0


def test_blank_penalty_lengthens_the_best_path():
    task = toy_task()
    d = task.target_dictionary
    model = build_tiny_model(task, ctc_upsample=2, compress_steps=2).eval()
    logits = torch.zeros(1, 4, len(d))
    logits[0, :, d.unk()] = 3.0  # the blank leads everywhere ...
    logits[0, 1, 10], logits[0, 3, 11] = 2.0, 0.5  # ... by 1 at position 1, by 2.5 at position 3
    mask = torch.zeros(1, 4, dtype=torch.bool)
    words = {}
    for penalty in (0.0, 2.0, 3.0):
        gen = LatentGenerator([model], d, max_len_a=0, max_len_b=8, blank_penalty=penalty)
        words[penalty] = gen.hypotheses(logits.clone(), mask, 4, model.ctc_blank)[0]["tokens"].tolist()
    assert words == {0.0: [d.eos()], 2.0: [10, d.eos()], 3.0: [10, 11, d.eos()]}
