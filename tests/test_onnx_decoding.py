"""--latent-onnx (onnx_decoding.py): the four exported graphs decode exactly as the
eager path does, for every search, on padded and single-sentence batches, over a
shortlist, and through fairseq-generate; the export leaves the model as it was."""

import sys

import pytest
import torch

from conftest import build_tiny_model, padded_sources, run, toy_task, trained_prior_model
from fairseq_vqlatent import VQLatentError
from fairseq_vqlatent.latent_generator import LatentGenerator
from fairseq_vqlatent.modules import lean_transformer
from fairseq_vqlatent.shortlist import Shortlist
from fairseq_vqlatent.teacher_scorer import TeacherScorer
from test_cli import GEN, hypotheses


def batches(task):
    """The padded batch of six sources, and each source alone without its padding."""
    src, lengths = padded_sources(task)
    alone = [(src[row : row + 1, src.size(1) - n :], lengths[row : row + 1]) for row, n in enumerate(lengths.tolist())]
    return [(src, lengths)] + alone


def tokens(gen, model, src, lengths):
    torch.manual_seed(0)  # the same draws for sampled candidates
    hyps = gen.generate([model], {"net_input": {"src_tokens": src, "src_lengths": lengths}})
    return [h[0]["tokens"].tolist() for h in hyps]


def no_eager_modules(monkeypatch, model, teacher=None):
    """Make every eager inference module fail: what runs next runs in ONNX Runtime."""
    def refuse(*args, **kwargs):
        raise AssertionError("an eager module ran")
    for encoder in (model.encoder, teacher.encoder) if teacher is not None else (model.encoder,):
        monkeypatch.setattr(encoder, "forward", refuse)
    monkeypatch.setattr(model, "decode_latents", refuse)
    monkeypatch.setattr(lean_transformer, "IncrementalDecoder", refuse)


@pytest.mark.parametrize("search", [{}, {"latent_beam": 3}, {"candidates": 3}, {"candidates": 3, "candidates_from": "beam"}],
                         ids=["greedy", "beam", "sampled-candidates", "beam-candidates"])
def test_onnx_decodes_as_the_eager_path(search, monkeypatch):
    task = toy_task()
    model, _ = trained_prior_model(task)
    d = task.target_dictionary
    eager = LatentGenerator([model], d, max_len_a=0, max_len_b=40, **search)
    expected = [tokens(eager, model, *batch) for batch in batches(task)]
    onnx = LatentGenerator([model], d, max_len_a=0, max_len_b=40, onnx=True, **search)
    no_eager_modules(monkeypatch, model)
    found = [tokens(onnx, model, *batch) for batch in batches(task)]
    assert found == expected
    assert len({len(t) for t in expected[0]}) > 1  # sentences of several lengths in the padded batch


@pytest.mark.parametrize("types", ["all", "two"])
def test_onnx_decodes_a_ctc_model_over_a_shortlist_as_the_eager_path(types):
    task = toy_task()
    torch.manual_seed(0)
    model = build_tiny_model(task, ctc_upsample=2, compress_steps=2, decoder_self_attention="full").eval()
    d = task.target_dictionary
    listed = torch.arange(len(d)) if types == "all" else torch.tensor([7, 8])
    shortlist = Shortlist(torch.full((len(d), 1), -1), listed, len(d))
    eager, onnx = (LatentGenerator([model], d, max_len_a=0, max_len_b=40, shortlist=shortlist, onnx=flag)
                   for flag in (False, True))
    for batch in batches(task):
        assert tokens(onnx, model, *batch) == tokens(eager, model, *batch)


def test_the_export_leaves_the_model_in_eval_mode_and_its_decoding_unchanged():
    # The exporter restores the training flag of the graph it traced; a fresh wrapper
    # module is in training mode, and took the model's dropout with it.
    task = toy_task()
    model, _ = trained_prior_model(task)
    d = task.target_dictionary
    src, lengths = padded_sources(task)
    eager = LatentGenerator([model], d, max_len_a=0, max_len_b=40)
    before = tokens(eager, model, src, lengths)
    LatentGenerator([model], d, max_len_a=0, max_len_b=40, onnx=True)
    assert not any(m.training for m in model.modules())
    assert tokens(eager, model, src, lengths) == before


def test_onnx_refuses_bf16_and_says_when_onnxruntime_is_missing(monkeypatch):
    task = toy_task()
    model = build_tiny_model(task).eval()
    with pytest.raises(VQLatentError, match="--latent-onnx runs its own float32 graphs"):
        LatentGenerator([model], task.target_dictionary, onnx=True, bf16=True)
    for missing in ("onnx", "onnxruntime"):
        with monkeypatch.context() as m:
            m.setitem(sys.modules, missing, None)  # import fails
            with pytest.raises(VQLatentError, match="--latent-onnx needs onnx and ONNX Runtime: pip install onnx onnxruntime"):
                LatentGenerator([model], task.target_dictionary, onnx=True)


def test_fairseq_generate_prints_the_same_translations_with_latent_onnx(trained):
    outputs = []
    for extra in ([], ["--latent-onnx"]):
        proc = run(["fairseq-generate", trained.data / "bin", *GEN, "--path", trained.save / "checkpoint_last.pt",
                    "--gen-subset", "valid", "--max-sentences", "1", "--max-len-a", "1.2", "--max-len-b", "10", *extra])
        rows = sorted(line.split("\t") for line in hypotheses(proc.stdout))  # H-id, score, translation
        outputs.append(rows)
        assert ("decoding with ONNX Runtime" in proc.stderr + proc.stdout) == bool(extra)
    eager, onnx = outputs
    assert len(eager) == 1014 and [r[::2] for r in onnx] == [r[::2] for r in eager]  # the same translations
    assert max(abs(float(a[1]) - float(b[1])) for a, b in zip(eager, onnx)) < 1e-4  # scores to float precision


def test_onnx_teacher_rescoring_gives_the_eager_scores_and_choices(monkeypatch):
    from test_decoding_rules import tiny_teacher_model

    task = toy_task()
    model, _ = trained_prior_model(task)
    d = task.target_dictionary
    src, lengths = padded_sources(task)
    eager_scorer, onnx_scorer = (TeacherScorer(tiny_teacher_model(task), d) for _ in range(2))
    onnx_scorer.use_onnx()
    gen = torch.Generator().manual_seed(0)
    hyps = [torch.cat([torch.randint(d.nspecial, len(d), (n,), generator=gen), torch.tensor([d.eos()])])
            for n in (3, 5, 1, 4, 2, 6, 7, 3, 2, 1, 5, 4)]  # 2 candidates for each of 6 padded sources
    torch.testing.assert_close(onnx_scorer.score(src, lengths, hyps), eager_scorer.score(src, lengths, hyps),
                               atol=1e-5, rtol=0)
    eager, onnx = (LatentGenerator([model], d, max_len_a=0, max_len_b=40, candidates=4, scorer=scorer, onnx=flag)
                   for scorer, flag in ((eager_scorer, False), (TeacherScorer(tiny_teacher_model(task), d), True)))
    expected = tokens(eager, model, src, lengths)
    no_eager_modules(monkeypatch, model, onnx.scorer.model)
    assert tokens(onnx, model, src, lengths) == expected
