#!/usr/bin/env python3
"""BLEU, batch-1 latency and large-batch throughput: the teacher (beam 4, greedy;
greedy in CTranslate2, float32 and int8) beside the latent model with noisy
parallel decoding of N candidates (issue 9).

    python benchmarks/decoding_speed.py --work WORK [--candidates 1,4,8] [--throughput-batch 128]
        [--shortlist] [--bf16] [--onnx] [--code-beams 4] [--shallow-teacher CKPT] [--out benchmarks/results/decoding-speed-multi30k.md]

WORK is a pipeline work directory (scripts/pipeline.sh multi30k): its latent
checkpoint, teacher and data. For each N, the latent model decodes test with
--latent-candidates N, choosing by its own score and, for N > 1, by the teacher's
(--rescore-teacher). Every row is scripts/evaluate.sh (sacreBLEU; fairseq-generate's
timer at batch 1, then at --throughput-batch), one after the other in the same run,
with ratios to teacher greedy: run it with nothing else on the machine. Writes the
table and a plot of BLEU against batch-1 latency.
"""

import argparse
import json
import sys
from pathlib import Path

from bottlenecks import MAX_LEN, REPO, sh


def evaluate(ckpt: Path, data: Path, out: Path, task: str, batch: int, extra) -> dict:
    if not (out / "result.json").exists():
        out.mkdir(parents=True, exist_ok=True)
        print(f"== {out.name}", flush=True)
        sh(["bash", REPO / "scripts" / "evaluate.sh", ckpt, data, out, "--task", task, "--throughput-batch", batch,
            "--", *extra], out.with_suffix(".log"))
    return json.loads((out / "result.json").read_text())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="pipeline work dir (latent/, teacher/, data/)")
    p.add_argument("--candidates", default="1,4,8")
    p.add_argument("--throughput-batch", type=int, default=128)
    p.add_argument("--shallow-teacher", type=Path,
                   help="a deep-encoder, shallow-decoder teacher (Kasai et al. 2021) to time beside the others, e.g. "
                        "scripts/train-teacher.sh DATA/bin OUT --size multi30k --minutes 8 -- --decoder-layers 1")
    p.add_argument("--shortlist", action="store_true",
                   help="add a row: the latent model decoding over a lexical shortlist of WORK/distilled/bin "
                        "(python -m fairseq_vqlatent.shortlist, top 50 by Dice and 500 frequent types)")
    p.add_argument("--bf16", action="store_true",
                   help="add rows: the latent model with --latent-bf16 (encoder and decoder pass in bfloat16), "
                        "alone and with the shortlist")
    p.add_argument("--onnx", action="store_true",
                   help="add rows: the latent model through ONNX Runtime (--latent-onnx), alone and with the shortlist; "
                        "with --shortlist also each N > 1 with the teacher's rescoring, through both")
    p.add_argument("--code-beams", default="",
                   help="comma-separated beam sizes of the code search (--latent-beam) to add as rows, e.g. 4")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "decoding-speed-multi30k.md")
    p.add_argument("--latent", type=Path, help="the latent checkpoint (default: WORK/latent/checkpoint_best.pt)")
    p.add_argument("--runs", type=Path, help="each row's outputs (default: WORK/decoding-speed); a row found there is read back")
    a = p.parse_args(argv)
    latent, teacher = a.latent or a.work / "latent" / "checkpoint_best.pt", a.work / "teacher" / "checkpoint_best.pt"
    data, runs, B = a.work / "data", a.runs or a.work / "decoding-speed", a.throughput_batch
    for path in (latent, teacher, data / "bin"):
        if not path.exists():
            p.error(f"{path} not found: run scripts/pipeline.sh multi30k --work {a.work} first")

    beam4 = evaluate(teacher, data, runs / "teacher-beam4", "translation", B, ["--beam", "4", *MAX_LEN])
    greedy = evaluate(teacher, data, runs / "teacher-greedy", "translation", B, ["--beam", "1", *MAX_LEN])
    rows = [("teacher, beam 4", None, beam4), ("teacher, greedy", None, greedy)]
    if a.shallow_teacher:
        rows.append(("shallow-decoder teacher, greedy", None, evaluate(
            a.shallow_teacher, data, runs / "shallow-teacher-greedy", "translation", B, ["--beam", "1", *MAX_LEN])))
    for compute_type in ("float32", "int8"):  # the same teacher, as practitioners run it fast on CPU
        out = runs / f"ctranslate2-{compute_type}"
        if not (out / "result.json").exists():
            print(f"== {out.name}", flush=True)
            sh([sys.executable, REPO / "benchmarks" / "ctranslate2_teacher.py", teacher, data, out,
                "--compute-type", compute_type, "--throughput-batch", B], runs / f"{out.name}.log")
        rows.append((f"teacher in CTranslate2 {compute_type}, greedy", None,
                     json.loads((out / "result.json").read_text())))
    for n in [int(x) for x in a.candidates.split(",")]:
        choosers = [("own score", [])] + ([("teacher", ["--rescore-teacher", str(teacher)])] if n > 1 else [])
        for chooser, extra in choosers:
            name = f"latent, N = {n}" + (f", {chooser}" if n > 1 else "")
            out = runs / f"n{n}-{chooser.replace(' ', '-')}"
            rows.append((name, (n, chooser), evaluate(latent, data, out, "translation_vqlatent", B,
                                                      ["--latent-candidates", str(n), *MAX_LEN, *extra])))

    for k in [int(x) for x in a.code_beams.split(",") if x]:
        rows.append((f"latent, code beam {k}", None, evaluate(
            latent, data, runs / f"code-beam{k}", "translation_vqlatent", B, ["--latent-beam", str(k), *MAX_LEN])))
    if a.shortlist:
        listed = runs / "shortlist.pt"
        if not listed.exists():
            sh([sys.executable, "-m", "fairseq_vqlatent.shortlist", a.work / "distilled" / "bin", listed],
               runs / "shortlist.log")
        rows.append(("latent, N = 1, lexical shortlist", None, evaluate(
            latent, data, runs / "n1-shortlist", "translation_vqlatent", B, ["--latent-shortlist", str(listed), *MAX_LEN])))
    for mode in [m for m in ("bf16", "onnx") if getattr(a, m)]:  # --latent-bf16, --latent-onnx
        flag = [f"--latent-{mode}"]
        rows.append((f"latent, N = 1, {mode}", None, evaluate(
            latent, data, runs / f"n1-{mode}", "translation_vqlatent", B, [*flag, *MAX_LEN])))
        if a.shortlist:
            rows.append((f"latent, N = 1, {mode}, lexical shortlist", None, evaluate(
                latent, data, runs / f"n1-{mode}-shortlist", "translation_vqlatent", B,
                [*flag, "--latent-shortlist", str(runs / "shortlist.pt"), *MAX_LEN])))
    if a.onnx and a.shortlist:  # noisy parallel decoding at its fastest
        for n in [int(x) for x in a.candidates.split(",") if int(x) > 1]:
            rows.append((f"latent, N = {n}, teacher, onnx, lexical shortlist", None, evaluate(
                latent, data, runs / f"n{n}-teacher-onnx-shortlist", "translation_vqlatent", B,
                ["--latent-candidates", str(n), "--rescore-teacher", str(teacher), "--latent-onnx",
                 "--latent-shortlist", str(runs / "shortlist.pt"), *MAX_LEN])))

    lines = ["| system | sacreBLEU | % of teacher greedy | length ratio | ms / sentence (batch 1) "
             f"| speed-up vs teacher greedy | sentences / s (batch {B}) | throughput vs teacher greedy |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, _, r in rows:
        lines.append(f"| {name} | {r['bleu']:.2f} | {100 * r['bleu'] / greedy['bleu']:.0f}% | {r['length_ratio']:.3f} "
                     f"| {r['ms_per_sentence']:.2f} | {greedy['ms_per_sentence'] / r['ms_per_sentence']:.2f}x "
                     f"| {r['sentences_per_second']:.1f} "
                     f"| {r['sentences_per_second'] / greedy['sentences_per_second']:.2f}x |")
    text = "\n".join(lines)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    flags = "".join(f" --{f}" for f in ("shortlist", "bf16", "onnx") if getattr(a, f))
    flags += f" --code-beams {a.code_beams}" if a.code_beams else ""
    flags += "".join(f" --{f} {getattr(a, f)}" for f in ("latent", "runs") if getattr(a, f))
    a.out.write_text(f"`python benchmarks/decoding_speed.py --work {a.work} --candidates {a.candidates}{flags}`; test_2016_flickr, "
                     f"{greedy['sentences']} sentences, {greedy['device']}\n\n{text}\n")
    print(text)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for chooser, marker in (("own score", "o"), ("teacher", "s")):
        pts = sorted((k[0], r) for _, k, r in rows if k and (k[1] == chooser or k[0] == 1))
        ax.plot([r["ms_per_sentence"] for _, r in pts], [r["bleu"] for _, r in pts], marker=marker,
                label=f"latent, chosen by {chooser}")
        for n, r in pts:
            ax.annotate(f"N={n}", (r["ms_per_sentence"], r["bleu"]), fontsize=8)
    ax.scatter([greedy["ms_per_sentence"]], [greedy["bleu"]], marker="*", s=120, color="k", label="teacher, greedy")
    for name, _, r in rows:
        if any(k in name for k in ("CTranslate2", "shortlist", "bf16", "code beam", "onnx")):
            ax.scatter([r["ms_per_sentence"]], [r["bleu"]], marker="^", s=60, label=name)
    ax.set_xlabel("ms / sentence (batch 1, CPU)")
    ax.set_ylabel("sacreBLEU test_2016_flickr")
    ax.legend()
    fig.tight_layout()
    fig.savefig(a.out.with_suffix(".png"), dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
