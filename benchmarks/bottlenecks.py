#!/usr/bin/env python3
"""Every bottleneck under one model and one budget, on real data.

    python benchmarks/bottlenecks.py --corpus ../shared/corpora/multi30k --work work/bottlenecks \\
        [--max-update 150] [--only vq,gmvq]

Trains vqlatent_transformer_small on Multi30k once per bottleneck (vq, soft_em
with 5 and 10 samples, gumbel, semhash, gmvq) for the same number of updates,
with the same seed, data and settings otherwise (scripts/train-vqlatent.sh's
Multi30k configuration; k-means initialisation and dead-code re-seeding for every
codebook; temperatures and soft-bit mixing annealed over the whole budget).
Then, for each:

- reconstruction and prior loss on valid (fairseq-train's last validation),
- code perplexity and distinct codes over all of valid (fairseq_vqlatent.inspect_codes),
- one-shot BLEU on test_2016_flickr (scripts/evaluate.sh: sacreBLEU, detokenised),

printed as a Markdown table (also written to WORK/bottlenecks.md), and
WORK/code-perplexity.png: code perplexity of the training batches against updates.
A finished variant is not retrained: delete WORK/VARIANT to redo it.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# scripts/common.sh's MAX_LEN: every system decodes at most 1.2 |x| + 10 tokens
MAX_LEN_A, MAX_LEN_B = 1.2, 10
MAX_LEN = ["--max-len-a", str(MAX_LEN_A), "--max-len-b", str(MAX_LEN_B)]

VARIANTS = {  # name: fairseq-train arguments on top of train-vqlatent.sh's
    "vq": ["--bottleneck", "vq"],
    "soft_em m=5": ["--bottleneck", "soft_em", "--num-samples", "5"],
    "soft_em m=10": ["--bottleneck", "soft_em", "--num-samples", "10"],
    "gumbel": ["--bottleneck", "gumbel"],
    "semhash": ["--bottleneck", "semhash", "--dead-code-threshold", "0"],
    "gmvq": ["--bottleneck", "gmvq"],
}
TRAIN_INNER = re.compile(r"\| train_inner \|.*?code_ppl=([\d.]+).*?num_updates=(\d+)")
VALID = re.compile(r"\| valid on 'valid' subset \| (.*)")


def sh(cmd, log: Path):
    with open(log, "w") as f:
        proc = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    if proc.returncode != 0:
        sys.exit(f"error: {cmd[0]} {cmd[1]} failed; see {log}")


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def last_valid(log: str) -> dict:
    found = VALID.findall(log)
    if not found:
        sys.exit("error: no validation in the training log")
    return {k.strip(): v.strip() for k, v in (part.split(" ", 1) for part in found[-1].split(" | "))}


def code_health(ckpt: Path, data: Path, log: Path) -> dict:
    """Codebook health over valid, in eval mode (fairseq_vqlatent.inspect_codes): code_ppl,
    distinct_codes, codebook_size, code_spread, tokens_changed (% of output tokens the codes decide)."""
    sh([sys.executable, "-m", "fairseq_vqlatent.inspect_codes", ckpt, data / "bin", "--split", "valid"], log)
    inspect = log.read_text()
    used, total = map(int, re.search(r"distinct codes +(\d+) of (\d+)", inspect).groups())
    return dict(
        code_ppl=float(re.search(r"code perplexity +([\d.]+)", inspect).group(1)),
        distinct_codes=used,
        codebook_size=total,
        code_spread=float(re.search(r"code spread +([\d.]+)", inspect).group(1)),
        tokens_changed=float(re.search(r"tokens changed +([\d.]+)%", inspect).group(1)),
    )


def run_variant(name, extra, data: Path, work: Path, max_update: int) -> dict:
    out = work / slug(name)
    result_file = out / "result.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    out.mkdir(parents=True, exist_ok=True)
    print(f"== {name}: training {max_update} updates", flush=True)
    t0 = time.time()
    sh(["bash", REPO / "scripts" / "train-vqlatent.sh", data / "bin", out / "ckpt", "--max-update", max_update, "--",
        *extra, "--anneal-updates", max_update, "--log-interval", "10"], out / "train.log")
    minutes = (time.time() - t0) / 60
    log = (out / "train.log").read_text()
    curve = [(int(u), float(p)) for p, u in TRAIN_INNER.findall(log)]
    valid = last_valid(log)
    ckpt = out / "ckpt" / "checkpoint_last.pt"

    print(f"== {name}: codes over valid, BLEU on test", flush=True)
    health = code_health(ckpt, data, out / "inspect.log")
    sh(["bash", REPO / "scripts" / "evaluate.sh", ckpt, data, out / "eval", "--task", "translation_vqlatent",
        "--batch-size", "64"], out / "evaluate.log")
    bleu = json.loads((out / "eval" / "result.json").read_text())["bleu"]

    result = dict(name=name, recon_loss=float(valid["recon_loss"]), prior_loss=float(valid["prior_loss"]),
                  **health, bleu=bleu, train_minutes=round(minutes, 1),
                  updates=int(valid["num_updates"]), curve=curve)
    result_file.write_text(json.dumps(result))
    return result


def table(results) -> str:
    rows = ["| bottleneck | recon loss (valid) | prior loss (valid) | code perplexity (valid) | distinct codes (valid) "
            "| BLEU test_2016_flickr |",
            "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        rows.append(f"| {r['name']} | {r['recon_loss']:.3f} | {r['prior_loss']:.3f} | {r['code_ppl']:.1f} "
                    f"| {r['distinct_codes']} of {r['codebook_size']} | {r['bleu']:.2f} |")
    return "\n".join(rows)


def plot_curves(curves, ylabel: str, title: str, path: Path, log_scale: bool = False) -> None:
    """curves: {label: [(update, value), ...]} -> one line each against updates, saved to path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for label, curve in curves.items():
        if curve:
            ax.plot(*zip(*curve), marker="o" if len(curve) < 20 else None, label=label)
    ax.set_xlabel("updates")
    ax.set_ylabel(ylabel)
    if log_scale:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot(results, path: Path) -> None:
    plot_curves({r["name"]: r["curve"] for r in results}, "code perplexity (training batches)",
                "Codebook use per bottleneck, vqlatent_transformer_small, Multi30k", path, log_scale=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpora" / "multi30k",
                   help="Multi30k plain text (train, val, test_2016_flickr .en/.de)")
    p.add_argument("--work", type=Path, default=REPO / "work" / "bottlenecks")
    p.add_argument("--data", type=Path, help="an existing data-prep output to reuse (default: WORK/data)")
    p.add_argument("--max-update", type=int, default=150)
    p.add_argument("--only", help="comma-separated subset of: " + ", ".join(VARIANTS))
    a = p.parse_args(argv)

    names = list(VARIANTS) if not a.only else [n.strip() for n in a.only.split(",")]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    a.work.mkdir(parents=True, exist_ok=True)
    data = a.data or a.work / "data"
    if not (data / "bin" / "subword-scheme").exists():
        print(f"== preparing Multi30k from {a.corpus}", flush=True)
        sh(["bash", REPO / "data-prep" / "prepare-multi30k.sh", "--from", a.corpus, data], a.work / "data.log")

    results = [run_variant(n, VARIANTS[n], data, a.work, a.max_update) for n in names]
    text = table(results)
    print(text)
    (a.work / "bottlenecks.md").write_text(text + "\n")
    plot(results, a.work / "code-perplexity.png")
    print(f"\nplot: {a.work / 'code-perplexity.png'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
