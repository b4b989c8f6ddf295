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
