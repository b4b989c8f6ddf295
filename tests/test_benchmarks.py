"""The benchmark harness itself: a row measured again is measured, not read back."""

import json
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import latent_ablation  # noqa: E402


def test_a_row_measured_again_does_not_reuse_its_old_test_scores(tmp_path, monkeypatch):
    work, base = tmp_path / "ablation", tmp_path / "base"
    row = work / "recipe"
    (row / "eval").mkdir(parents=True)
    (row / "eval" / "result.json").write_text(json.dumps({"bleu": 1.0, "length_ratio": 1.0, "ms_per_sentence": 1.0}))  # scored before
    (row / "ckpt").mkdir()
    (row / "train.log").write_text("| valid on 'valid' subset | loss 9.0 | bleu 12.0 | wps 1.0 | num_updates 300\n")
    (row / "train-minutes").write_text("1.0\n")

    def fake_evaluate(cmd, log):  # what scripts/evaluate.sh does: skip a scored OUT_DIR
        out = row / "eval"
        if not (out / "result.json").exists():
            out.mkdir(parents=True, exist_ok=True)
            (out / "result.json").write_text(json.dumps({"bleu": 2.0, "length_ratio": 1.0, "ms_per_sentence": 1.0}))

    monkeypatch.setattr(latent_ablation, "sh", fake_evaluate)
    monkeypatch.setattr(latent_ablation, "code_health", lambda *a: {})
    assert latent_ablation.measure("recipe", base, work)["test_bleu"] == 2.0


def test_frontier_ratios_are_against_the_fastest_ctranslate2_teacher_on_each_axis():
    import frontier

    def row(name, ms, sps):
        return {"name": name, "bleu": 20.0, "chrf": 40.0, "ms_decode_b1": ms, "ms_end_to_end_b1": 2 * ms,
                "sps_decode_large": sps, "sps_end_to_end_large": sps / 2, "bleu_signature": "b", "chrf_signature": "c"}

    rows = [row("teacher, fairseq, greedy", 60.0, 200.0), row("teacher, CTranslate2 float32", 16.0, 300.0),
            row("teacher, CTranslate2 int8", 10.0, 500.0), row("latent recipe, exported, float32", 5.0, 1000.0)]
    text = frontier.table(rows, "test CPU", 200, 1000)
    latent = next(line for line in text.splitlines() if line.startswith("| latent"))
    assert "| 2.00x / 2.00x |" in latent  # 10 ms against 5 ms, int8 the fastest at batch 1
    assert latent.endswith("| 2.00x / 2.00x |")  # 1000 against int8's 500 sentences a second
    assert "batch 1: teacher, CTranslate2 int8" in text
