#!/usr/bin/env python3
"""The latent model's recipe, one change at a time, against one teacher and one distilled corpus.

    python benchmarks/latent_ablation.py --base WORK --work work/ablation [--max-update 300] [--jobs 2]
        [--only "recipe,hard EM (vq)"]

WORK is a pipeline work directory that already holds data/, teacher/ and
distilled/ (scripts/pipeline.sh multi30k, or its first three stages). Every row
trains scripts/train-vqlatent.sh's Multi30k recipe (soft EM, initialised from
the teacher) for the same number of updates with the same seed, changing one
thing; ``--jobs 2`` trains two rows at a time with one thread each. Then for each:

- valid BLEU: the best one-shot BLEU of the validations during training
  (fairseq's --eval-bleu, which also picks checkpoint_best.pt);
- test BLEU, length ratio (hypothesis / reference words) and batch-1 latency of
  checkpoint_best.pt on test_2016_flickr (scripts/evaluate.sh, one at a time, nothing
  else running);
- code perplexity, distinct codes, code spread and the share of output tokens the
  codes decide, over valid (fairseq_vqlatent.inspect_codes): distinct ids on one
  point, or a decoder that ignores them, show there.

Writes WORK/ablation.md (the table) and WORK/valid-bleu.png (valid BLEU against
updates). A finished row is not redone: delete WORK/ROW to redo it.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bottlenecks import MAX_LEN, REPO, code_health, plot_curves, sh, slug

# name: (fairseq-train arguments on top of the recipe, generate arguments, start from the teacher)
ROWS = {  # in the order they run, two at a time
    "recipe": ([], [], True),
    "LayerNorm code space": (["--code-norm", "layer"], [], True),  # the recipe before issue 8's third session
    "hard EM (vq)": (["--bottleneck", "vq"], [], True),
    "full self-attention": (["--decoder-self-attention", "full"], [], True),
    "cosine codes": (["--cosine-codes"], [], True),
    "fsq (levels 8-5-5-5)": (["--bottleneck", "fsq", "--dead-code-threshold", "0"], [], True),
    "K = 64": (["--codebook-size", "64"], [], True),
    "code diversity 0.1": (["--code-diversity", "0.1"], [], True),
    "dead codes by mode": (["--dead-code-by", "mode"], [], True),  # re-seed the codes decoding never picks
    "1-layer prior": (["--prior-layers", "1"], [], True),
    "shortlist": ([], ["--latent-shortlist", "SHORTLIST"], True),  # decodes the recipe's checkpoint
    "n_c = 2": (["--compress-steps", "2"], [], True),
    "lr 1e-3": (["--lr", "1e-3"], [], True),
    "no label smoothing": (["--label-smoothing", "0"], [], True),
    "no teacher init": ([], [], False),
    "no CTC (cross-entropy)": (["--ctc-upsample", "0"], [], True),
    "no CTC, glancing 0.5": (["--ctc-upsample", "0", "--glance-ratio", "0.5"], [], True),  # the recipe before
    "CTC with glancing 0.5": (["--glance-ratio", "0.5"], [], True),
    "target mixing": (["--target-mix-updates", "MAX_UPDATE", "--ctc-upsample", "0"], [], True),  # fixed positions
    "source attention warmup": (["--source-attention-warmup", "HALF_UPDATE"], [], True),
    "no commitment loss": (["--commitment-beta", "0"], [], True),
    "greedy stop by argmax": ([], ["--latent-stop", "argmax"], True),  # decodes the recipe's checkpoint
    "repeats allowed": ([], ["--latent-allow-repeats"], True),  # decodes the recipe's checkpoint
    "dropout 0.1": (["--dropout", "0.1"], [], True),
    "dropout 0": (["--dropout", "0"], [], True),
    # a second seed, where one row leads the recipe by more than its validations swing
    "recipe (seed 2)": (["--seed", "2"], [], True),
    "1-layer prior (seed 2)": (["--prior-layers", "1", "--seed", "2"], [], True),
    "K = 64 (seed 2)": (["--codebook-size", "64", "--seed", "2"], [], True),
}
# A CTC decoder merges repeats itself: the repeat rule is the cross-entropy decoder's.
SHARES_CHECKPOINT = {"greedy stop by argmax": "recipe", "repeats allowed": "no CTC (cross-entropy)", "shortlist": "recipe"}
VALID_BLEU = re.compile(r"\| valid on 'valid' subset \|.*?\| bleu ([\d.]+) \|.*?\| num_updates (\d+)")


def train(name: str, base: Path, work: Path, max_update: int) -> Path:
    extra, _, from_teacher = ROWS[name]
    out = work / slug(name)
    if (out / "ckpt" / ".done").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    budget = {"MAX_UPDATE": str(max_update), "HALF_UPDATE": str(max_update // 2)}
    extra = [budget.get(a, a) for a in extra]
    if from_teacher:
        extra += ["--init-from-teacher", str(base / "teacher" / "checkpoint_best.pt")]
    print(f"== {name}: training {max_update} updates", flush=True)
    t0 = time.time()
    env = dict(os.environ, OMP_NUM_THREADS="1", VALIDATE_EVERY="100")
    with open(out / "train.log", "w") as log:
        proc = subprocess.run(
            ["bash", str(REPO / "scripts" / "train-vqlatent.sh"), str(base / "distilled" / "bin"), str(out / "ckpt"),
             "--max-update", str(max_update), "--", *extra],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    if proc.returncode != 0:
        sys.exit(f"error: training {name!r} failed; see {out / 'train.log'}")
    (out / "train-minutes").write_text(f"{(time.time() - t0) / 60:.1f}\n")
    return out


def shortlist(base: Path, work: Path) -> Path:
    """The lexical shortlist of the shared distilled corpus, built once."""
    path = work / "shortlist.pt"
    if not path.exists():
        sh([sys.executable, "-m", "fairseq_vqlatent.shortlist", base / "distilled" / "bin", path], work / "shortlist.log")
    return path


def measure(name: str, base: Path, work: Path) -> dict:
    out = work / slug(name)
    trained = work / slug(SHARES_CHECKPOINT.get(name, name))
    ckpt = trained / "ckpt" / "checkpoint_best.pt"
    if (out / "result.json").exists():
        result = json.loads((out / "result.json").read_text())
        if "tokens_changed" not in result:  # measured before inspect_codes showed whether codes are read
            result.update(code_health(ckpt, base / "distilled", out / "inspect.log"))
            (out / "result.json").write_text(json.dumps(result))
        return result
    out.mkdir(parents=True, exist_ok=True)
    print(f"== {name}: test BLEU and latency, codes over valid", flush=True)
    # evaluate.sh skips an OUT_DIR it has scored before: a row measured again must not
    # silently get its old test BLEU back.
    shutil.rmtree(out / "eval", ignore_errors=True)
    decode = [shortlist(base, work) if a == "SHORTLIST" else a for a in ROWS[name][1]]
    sh(["bash", REPO / "scripts" / "evaluate.sh", ckpt, base / "data", out / "eval", "--task", "translation_vqlatent",
        "--", *MAX_LEN, *decode], out / "evaluate.log")
    test = json.loads((out / "eval" / "result.json").read_text())
    log = (trained / "train.log").read_text()
    curve = [(int(u), float(b)) for b, u in VALID_BLEU.findall(log)]
    updates = max(int(u) for u in re.findall(r"num_updates[ =](\d+)", log))
    result = dict(name=name, valid_bleu=max(b for _, b in curve), test_bleu=test["bleu"],
                  length_ratio=test["length_ratio"], ms_per_sentence=test["ms_per_sentence"],
                  **code_health(ckpt, base / "distilled", out / "inspect.log"), updates=updates, curve=curve,
                  train_minutes=float((trained / "train-minutes").read_text()))
    (out / "result.json").write_text(json.dumps(result))
    return result


def table(results, teacher: dict) -> str:
    rows = ["| row | valid BLEU | test BLEU | length ratio | ms / sentence (batch 1) | code perplexity (valid) "
            "| distinct codes (valid) | code spread (valid) | tokens the codes change (valid) | updates | train minutes |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        rows.append(f"| {r['name']} | {r['valid_bleu']:.2f} | {r['test_bleu']:.2f} | {r['length_ratio']:.3f} "
                    f"| {r['ms_per_sentence']:.1f} | {r['code_ppl']:.1f} | {r['distinct_codes']} of "
                    f"{r['codebook_size']} | {r['code_spread']:.3f} | {r['tokens_changed']:.1f}% | {r['updates']} "
                    f"| {r['train_minutes']:.1f} |")
    rows.append(f"| *teacher, greedy (same test set, batch 1)* | | {teacher['bleu']:.2f} | {teacher['length_ratio']:.3f} "
                f"| {teacher['ms_per_sentence']:.1f} | | | | | | |")
    return "\n".join(rows)


def plot(results, path: Path) -> None:
    curves = {r["name"]: r["curve"] for r in results if r["name"] not in SHARES_CHECKPOINT}
    plot_curves(curves, "one-shot BLEU on valid", "Latent model ablation, Multi30k (vqlatent_transformer_small)", path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", type=Path, required=True, help="pipeline work dir with data/, teacher/, distilled/")
    p.add_argument("--work", type=Path, default=REPO / "work" / "ablation")
    p.add_argument("--max-update", type=int, default=300)
    p.add_argument("--jobs", type=int, default=2, help="rows trained at once, one thread each")
    p.add_argument("--only", help="comma-separated subset of: " + ", ".join(ROWS))
    a = p.parse_args(argv)

    names = list(ROWS) if not a.only else [n.strip() for n in a.only.split(",")]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        p.error(f"unknown row(s) {unknown}; known: {list(ROWS)}")
    for need in ("data/bin/subword-scheme", "teacher/checkpoint_best.pt", "distilled/bin/.done"):
        if not (a.base / need).exists():
            p.error(f"{a.base / need} not found: run scripts/pipeline.sh multi30k --work {a.base} first")
    a.work.mkdir(parents=True, exist_ok=True)

    teacher_dir = a.work / "teacher-greedy"
    sh(["bash", REPO / "scripts" / "evaluate.sh", a.base / "teacher" / "checkpoint_best.pt", a.base / "data",
        teacher_dir, "--task", "translation", "--", "--beam", "1", *MAX_LEN],
       a.work / "teacher-greedy.log")
    teacher = json.loads((teacher_dir / "result.json").read_text())

    # Rows go in groups of --jobs: trained together, then measured one by one with nothing
    # else running (latency), and the table is rewritten after every group.
    results = []
    for i in range(0, len(names), a.jobs):
        group = names[i : i + a.jobs]
        to_train = list(dict.fromkeys(SHARES_CHECKPOINT.get(n, n) for n in group))
        with ThreadPoolExecutor(a.jobs) as pool:
            list(pool.map(lambda n: train(n, a.base, a.work, a.max_update), to_train))
        results += [measure(n, a.base, a.work) for n in group]
        text = table(results, teacher)
        (a.work / "ablation.md").write_text(text + "\n")
        plot(results, a.work / "valid-bleu.png")
    print(text)
    print(f"\nplot: {a.work / 'valid-bleu.png'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
