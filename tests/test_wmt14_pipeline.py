"""scripts/pipeline.sh wmt14 end to end on the offline stand-in (older WMT news
test sets for training, newstest2013 / newstest2014 for valid / test), with BPE and
with sentencepiece, tiny budgets and a tiny architecture."""

import json
import os
import re
from pathlib import Path

import pytest

from conftest import REPO, TINY_LATENT_ARGS, TINY_TEACHER_ARGS, run

pytestmark = pytest.mark.slow
WMT = Path(os.environ.get("WMT_CORPORA", REPO.parent / "shared" / "corpora"))
EVAL_LINES = 40
SUBWORDS = {"subword_nmt": ["--bpe-merges", "500"], "sentencepiece": ["--spm", "--vocab-size", "800"]}


@pytest.fixture(scope="module", params=sorted(SUBWORDS))
def wmt14(request, tmp_path_factory):
    train, dev_test = WMT / "wmt-news-extra", WMT / "wmt14"
    if not (dev_test / "newstest2014.en").exists():
        pytest.fail(f"WMT'14 stand-in not found under {WMT} (set WMT_CORPORA=dir)")
    work = tmp_path_factory.mktemp(f"wmt14-{request.param}")
    proc = run(["bash", REPO / "scripts" / "pipeline.sh", "wmt14", "--corpus-dir", train, "--corpus-dir", dev_test,
                *SUBWORDS[request.param], "--max-lines", "300", "--max-eval-lines", str(EVAL_LINES),
                "--teacher-updates", "6", "--latent-updates", "6", "--examples", "1",
                "--teacher-args", TINY_TEACHER_ARGS, "--latent-args", TINY_LATENT_ARGS, "--work", work], timeout=900)
    return request.param, work, proc.stdout


def test_wmt14_runs_every_stage_and_prints_the_table(wmt14):
    scheme, work, out = wmt14
    assert (work / "data" / "bin" / "subword-scheme").read_text().strip() == scheme
    for i, name in enumerate(["data", "teacher", "distill", "latent"], 1):
        assert re.search(rf"=== \[{i}/7\] {name} ", out), out
    rows = re.findall(r"^\| (teacher, beam 4|teacher, greedy|latent codes \(one-shot decoder\)) \| [\d.]+ \|", out, re.M)
    assert len(rows) == 3, out
    assert f"{EVAL_LINES} test sentences; sacreBLEU nrefs:1|" in out
    assert "initialised from teacher" in (work / "logs" / "latent.log").read_text()


def test_wmt14_tests_on_newstest2014_with_detokenised_output(wmt14):
    scheme, work, _ = wmt14
    newstest2014 = (WMT / "wmt14" / "newstest2014.de").read_text(encoding="utf-8").splitlines()[:EVAL_LINES]
    assert (work / "data" / "orig" / "test.de").read_text(encoding="utf-8").splitlines() == newstest2014
    for system in ("teacher-beam4", "teacher-greedy", "latent"):
        result = json.loads((work / "eval" / system / "result.json").read_text())
        assert result["sentences"] == EVAL_LINES, system
        hyp = (work / "eval" / system / "hyp.txt").read_text(encoding="utf-8")
        # subword marks and Moses escapes never reach the scored text
        assert "@@" not in hyp and "\u2581" not in hyp and "&apos;" not in hyp and "&quot;" not in hyp, system
