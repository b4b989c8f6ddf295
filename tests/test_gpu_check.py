"""benchmarks/gpu_check.sh: its CPU smoke mode on a tiny pipeline work dir, and its errors.
The GPU path itself runs only on a GPU machine, by hand."""

import json
import re

import pytest

from conftest import REPO, TINY_LATENT_ARGS, TINY_TEACHER_ARGS, run

GPU_CHECK = ["bash", REPO / "benchmarks" / "gpu_check.sh"]
EVAL_LINES = 20


@pytest.fixture(scope="module")
def work(tmp_path_factory, corpus_dir):
    """A pipeline work dir of tiny models: test_pipeline.py's fixture trains the pipeline's own
    architecture and is module-scoped, so it would run once more here, at a larger cost."""
    work = tmp_path_factory.mktemp("gpu-check-work")
    run(["bash", REPO / "scripts" / "pipeline.sh", "multi30k", "--corpus-dir", corpus_dir, "--work", work,
         "--max-lines", "300", "--max-eval-lines", str(EVAL_LINES), "--bpe-merges", "500",
         "--teacher-updates", "6", "--latent-updates", "2", "--examples", "1",
         "--teacher-args", TINY_TEACHER_ARGS, "--latent-args", TINY_LATENT_ARGS], timeout=900)
    return work


@pytest.mark.slow
def test_smoke_mode_trains_decodes_and_writes_the_table(work, tmp_path):
    out = tmp_path / "check"
    proc = run([*GPU_CHECK, work, "--smoke", "--out", out], env={"LATENT_ARGS": TINY_LATENT_ARGS}, timeout=900)
    results = (out / "results.md").read_text()
    rows = re.findall(r"^\| (teacher, greedy|latent codes \(one-shot decoder\)) \| [\d.]+ \|", results, re.M)
    assert rows == ["teacher, greedy", "latent codes (one-shot decoder)"], results
    assert "sentences / s (batch 8)" in results and f"{EVAL_LINES} test sentences;" in results
    assert (out / "device.txt").read_text().splitlines()[0] == "cpu"
    assert "device: cpu" in proc.stdout and "cpu flags: " in proc.stdout
    assert "initialised from teacher" in (out / "logs" / "latent.log").read_text()
    assert "num_updates 5" in (out / "logs" / "latent.log").read_text()
    for system in ("teacher-greedy", "latent"):
        result = json.loads((out / "eval" / system / "result.json").read_text())
        assert result["sentences"] == EVAL_LINES and result["batch_size"] == 1
        assert result["device"].startswith("CPU") and result["throughput_batch"] == 8
    assert not (work / "gpu-check").exists()  # --out, not the default


def test_without_arguments_it_prints_its_usage():
    proc = run(GPU_CHECK, check=False)
    assert proc.returncode == 2
    assert "benchmarks/gpu_check.sh WORK_DIR [--out DIR] [--smoke]" in proc.stderr and "#" not in proc.stderr


def test_a_missing_work_dir_is_refused_in_one_line(tmp_path):
    proc = run([*GPU_CHECK, tmp_path / "nonexistent", "--smoke"], check=False)
    assert proc.returncode == 1
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("error:"), proc.stderr
    assert "pipeline.sh" in proc.stderr
