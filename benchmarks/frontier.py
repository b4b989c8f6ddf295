#!/usr/bin/env python3
"""The BLEU-speed frontier: every way to run the teacher fast, against the exported latent translator.

    python benchmarks/frontier.py --work WORK_DIR [--latent NAME=CKPT ...] [--student CKPT]
        [--systems a,b,...] [--latency-sentences 200] [--rounds 1]

WORK_DIR is a pipeline work directory (scripts/pipeline.sh: data/, teacher/, distilled/,
latent/). Each system translates the raw test set (data/orig/test.en) through the same
text codec (vqlatent_runtime/text.py: the data-prep tokenisation, BPE and the Moses
detokeniser), in a process of its own (OpenMP pools of two libraries in one process
spun against each other and slowed CTranslate2 threefold), one system after another:

    teacher, fairseq, greedy / beam 4        fairseq's SequenceGenerator, 1.2 |x| + 10 tokens at most
    teacher, CTranslate2 float32 / int8      FairseqConverter; each also with use_vmap, the vocabulary
                                             map built from the latent model's shortlist
    shallow student, CTranslate2             the teacher's encoder with a 1-layer decoder, distilled
                                             (scripts/train-shallow-student.sh; --student, default WORK/student)
    latent NAME, exported                    vqlatent-export (float32, int8, shortlist) and vqlatent_runtime

Batch 1: ms per sentence over the first --latency-sentences test sentences. Batch 128:
sentences per second over all of them. Both decoding alone (the model's calls) and end
to end from raw text (tokenisation, subwords, decoding, detokenisation; no loading).
sacreBLEU and chrF++ of the batch-128 translations on the whole test set. Prints the
table, and writes WORK/frontier/frontier.{json,md,png}.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_LEN_A, MAX_LEN_B = 1.2, 10  # scripts/common.sh's length budget, for every system


def cpu_flags() -> str:
    """The instruction sets that decide CPU inference speed (avx2, avx512*, vnni, amx)."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split(":")[1].split()
    except (OSError, StopIteration):
        return "unknown"
    keep = sorted(f for f in flags if f in ("avx2", "fma") or f.startswith(("avx512", "amx")) or "vnni" in f)
    model = next((line.split(":")[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return f"{model}, {os.cpu_count()} cores: {' '.join(keep) or 'no AVX2'}"


# ------------------------------------------------------------------ one system, in its own process


class Codec:
    """The raw-text side of every system: vqlatent_runtime's codec over the work dir's files."""

    def __init__(self, work: Path):
        from vqlatent_runtime.text import TextCodec, read_dictionary

        data = work / "data"
        scheme = (data / "bin" / "subword-scheme").read_text().strip()
        config = {"source_lang": "en", "target_lang": "de", "subword": {"scheme": scheme},
                  "dictionary": {"unk": 3, "eos": 2},
                  "tokenizer": {"normalize_punctuation": True, "moses": scheme == "subword_nmt",
                                "aggressive_dash_splits": True, "xml_escape": True}}
        self.dictionary = read_dictionary(str(data / "bin" / "dict.en.txt"), 4)
        model = data / ("bpe.codes" if scheme == "subword_nmt" else "spm.model")
        self.codec = TextCodec(config, self.dictionary, read_dictionary(str(data / "bin" / "dict.de.txt"), 4), str(model))
        self.target_ids = {s: i for i, s in reversed(list(enumerate(self.codec.target_symbols)))}

    def words(self, tokens):
        return self.codec.decode([self.target_ids.get(t, 3) for t in tokens])


def timed(translate_batch, items, batch: int):
    """-> (outputs in order, seconds inside translate_batch); items sorted by length into batches, as every system does."""
    order = sorted(range(len(items)), key=lambda i: len(items[i]), reverse=True)
    out, seconds = [None] * len(items), 0.0
    for start in range(0, len(order), batch):
        rows = order[start : start + batch]
        t0 = time.perf_counter()
        results = translate_batch([items[i] for i in rows])
        seconds += time.perf_counter() - t0
        for i, r in zip(rows, results):
            out[i] = r
    return out, seconds


def measure(lines, encode, translate_batch, decode, batch: int):
    """-> (texts, decode seconds, end-to-end seconds) of raw ``lines`` at ``batch``."""
    t0 = time.perf_counter()
    items = [encode(line) for line in lines]
    outputs, decode_seconds = timed(translate_batch, items, batch)
    texts = [decode(o) for o in outputs]
    return texts, decode_seconds, time.perf_counter() - t0


def fairseq_system(work: Path, spec: dict, codec: Codec, threads: int):
    import torch

    import fairseq_vqlatent  # noqa: F401  (weights-only loading of fairseq checkpoints)
    from fairseq import checkpoint_utils
    from fairseq.sequence_generator import SequenceGenerator

    torch.set_num_threads(threads)
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([spec["checkpoint"]],
                                                                    arg_overrides={"data": str(work / "data" / "bin")})
    model = models[0].eval()
    generator = SequenceGenerator([model], task.target_dictionary, beam_size=spec["beam"], max_len_a=MAX_LEN_A,
                                  max_len_b=MAX_LEN_B)
    pad, eos = task.source_dictionary.pad(), task.source_dictionary.eos()

    @torch.inference_mode()
    def translate_batch(ids):
        S = max(map(len, ids))
        src = torch.full((len(ids), S), pad)
        for row, x in enumerate(ids):
            src[row, S - len(x):] = torch.tensor(x)  # left-padded, as fairseq batches
        sample = {"net_input": {"src_tokens": src, "src_lengths": torch.tensor([len(x) for x in ids])}}
        return [h[0]["tokens"][h[0]["tokens"].ne(eos)].tolist() for h in generator.generate([model], sample)]

    return codec.codec.encode, translate_batch, codec.codec.decode


def ctranslate2_system(work: Path, spec: dict, codec: Codec, threads: int):
    import ctranslate2

    translator = ctranslate2.Translator(spec["model"], device="cpu", compute_type=spec["compute_type"],
                                        inter_threads=1, intra_threads=threads)

    def translate_batch(tokens):
        limit = int(MAX_LEN_A * (max(map(len, tokens)) + 1) + MAX_LEN_B)  # + 1: fairseq counts the EOS
        results = translator.translate_batch(tokens, beam_size=1, max_batch_size=len(tokens), max_decoding_length=limit,
                                             use_vmap=spec.get("vmap", False))
        return [r.hypotheses[0] for r in results]

    return codec.codec.subwords, translate_batch, codec.words


def latent_system(work: Path, spec: dict, codec: Codec, threads: int):
    from vqlatent_runtime import Translator

    translator = Translator(spec["export"], threads=threads)
    return translator.text.encode, translator.decode_batch, translator.text.decode


SYSTEMS = {"fairseq": fairseq_system, "ctranslate2": ctranslate2_system, "latent": latent_system}


def run_system(spec: dict) -> dict:
    work = Path(spec["work"])
    lines = (work / "data" / "orig" / "test.en").read_text(encoding="utf-8").splitlines()
    threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count()))
    codec = Codec(work)
    encode, translate_batch, decode = SYSTEMS[spec["kind"]](work, spec, codec, threads)
    measure(lines[:20], encode, translate_batch, decode, 1)  # warm-up, untimed
    result = {"name": spec["name"]}
    first = lines[: spec["latency_sentences"]]
    best = None
    for _ in range(spec["rounds"]):  # the fastest round: what the machine can do when nothing interrupts
        _, decode_s, total_s = measure(first, encode, translate_batch, decode, 1)
        best = (decode_s, total_s) if best is None or total_s < best[1] else best
    result["ms_decode_b1"], result["ms_end_to_end_b1"] = (1000 * s / len(first) for s in best)
    texts, decode_s, total_s = measure(lines, encode, translate_batch, decode, spec["batch"])
    result["sps_decode_large"], result["sps_end_to_end_large"] = len(lines) / decode_s, len(lines) / total_s
    result["texts"] = texts
    return result


# ------------------------------------------------------------------ preparing the systems


def ensure_shortlist(work: Path, out: Path) -> Path:
    shortlist = out / "shortlist.pt"
    if not shortlist.exists():
        subprocess.run([sys.executable, "-m", "fairseq_vqlatent.shortlist", work / "distilled" / "bin", shortlist],
                       check=True, stdout=subprocess.DEVNULL)
    return shortlist


def ensure_ctranslate2(ckpt: Path, work: Path, out: Path, shortlist: Path) -> Path:
    """The checkpoint converted by CTranslate2's FairseqConverter, with a vmap.txt from ``shortlist``."""
    model = out / f"ct2-{ckpt.parent.name}"
    if not (model / "model.bin").exists():
        import fairseq_vqlatent  # noqa: F401
        from ctranslate2.converters import FairseqConverter

        FairseqConverter(str(ckpt), str(work / "data" / "bin"), source_lang="en", target_lang="de").convert(str(model), force=True)
    vmap = model / "vmap.txt"
    if not vmap.exists():
        import torch

        from vqlatent_runtime.text import read_dictionary

        state = torch.load(shortlist, weights_only=True)
        symbols = read_dictionary(str(work / "data" / "bin" / "dict.de.txt"), 4)
        source = read_dictionary(str(work / "data" / "bin" / "dict.en.txt"), 4)
        rows = ["\t" + " ".join(symbols[t] for t in state["frequent"].tolist())]  # the empty key: always candidates
        for s, candidates in enumerate(state["candidates"].tolist()):
            listed = [symbols[t] for t in candidates if t >= 0]
            if listed and s >= 4:
                rows.append(f"{source[s]}\t{' '.join(listed)}")
        vmap.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return model


def ensure_export(ckpt: Path, work: Path, out: Path, name: str, *options) -> Path:
    directory = out / "exports" / name
    if not (directory / "config.json").exists():
        scheme = (work / "data" / "bin" / "subword-scheme").read_text().strip()
        subword = (["--bpe", "subword_nmt", "--bpe-codes", work / "data" / "bpe.codes"] if scheme == "subword_nmt"
                   else ["--bpe", "sentencepiece", "--sentencepiece-model", work / "data" / "spm.model"])
        subprocess.run(["vqlatent-export", ckpt, directory, "--data", work / "data" / "bin", *subword, "--force", *options],
                       check=True, stdout=subprocess.DEVNULL)
    return directory


def systems(a, work: Path, out: Path) -> list:
    shortlist = ensure_shortlist(work, out)
    teacher = work / "teacher" / "checkpoint_best.pt"
    specs = [dict(name="teacher, fairseq, greedy", kind="fairseq", checkpoint=str(teacher), beam=1, batch=128),
             dict(name="teacher, fairseq, beam 4", kind="fairseq", checkpoint=str(teacher), beam=4, batch=128)]
    ct2 = ensure_ctranslate2(teacher, work, out, shortlist)
    for compute_type in ("float32", "int8"):
        for vmap in (False, True):
            specs.append(dict(name=f"teacher, CTranslate2 {compute_type}{', vmap' if vmap else ''}", kind="ctranslate2",
                              model=str(ct2), compute_type=compute_type, vmap=vmap, batch=64))
    student = Path(a.student) if a.student else work / "student" / "checkpoint_best.pt"
    if student.exists():
        ct2_student = ensure_ctranslate2(student, work, out, shortlist)
        for compute_type in ("float32", "int8"):
            specs.append(dict(name=f"shallow student (1-layer decoder), CTranslate2 {compute_type}", kind="ctranslate2",
                              model=str(ct2_student), compute_type=compute_type, batch=64))
    latents = dict(x.split("=", 1) for x in a.latent) or {"recipe": str(work / "latent" / "checkpoint_best.pt")}
    for name, ckpt in latents.items():
        for label, options in (("float32", []), ("int8", ["--int8"]), ("shortlist", ["--shortlist", shortlist]),
                               ("int8, shortlist", ["--int8", "--shortlist", shortlist])):
            if a.variants == "recipe" and name != next(iter(latents)) and label != "float32":
                continue
            directory = ensure_export(Path(ckpt), work, out, f"{name}-{label.replace(', ', '-')}", *options)
            specs.append(dict(name=f"latent {name}, exported, {label}", kind="latent", export=str(directory), batch=128))
    wanted = set(a.systems.split(",")) if a.systems else None
    return [s for s in specs if wanted is None or any(w in s["name"] for w in wanted)]


# ------------------------------------------------------------------ table and plot


def score(texts, reference: Path) -> dict:
    import sacrebleu

    refs = [reference.read_text(encoding="utf-8").splitlines()]
    bleu, chrf = sacrebleu.BLEU(), sacrebleu.CHRF(word_order=2)
    return {"bleu": round(bleu.corpus_score(texts, refs).score, 2), "chrf": round(chrf.corpus_score(texts, refs).score, 2),
            "bleu_signature": str(bleu.get_signature()), "chrf_signature": str(chrf.get_signature())}


def table(rows: list, flags: str, latency_sentences: int, total: int) -> str:
    teachers = [r for r in rows if "CTranslate2" in r["name"] and r["name"].startswith("teacher")]
    fastest_b1 = min(teachers, key=lambda r: r["ms_decode_b1"]) if teachers else None
    fastest_large = max(teachers, key=lambda r: r["sps_decode_large"]) if teachers else None
    head = (f"CPU: {flags}. Batch 1: the first {latency_sentences} test sentences; large batch: all {total} "
            "(CTranslate2 at 64, the others at 128). Ratios against the fastest CTranslate2 setting of the teacher"
            + (f" (batch 1: {fastest_b1['name']}; large batch: {fastest_large['name']})" if teachers else "") + ".\n\n")
    lines = ["| system | sacreBLEU | chrF++ | ms / sent., b1, decode | ms / sent., b1, end to end | speed-up b1 (decode / e2e) "
             "| sent. / s, large, decode | sent. / s, large, end to end | throughput ratio (decode / e2e) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        b1 = (f"{fastest_b1['ms_decode_b1'] / r['ms_decode_b1']:.2f}x / {fastest_b1['ms_end_to_end_b1'] / r['ms_end_to_end_b1']:.2f}x"
              if fastest_b1 else "")
        large = (f"{r['sps_decode_large'] / fastest_large['sps_decode_large']:.2f}x / "
                 f"{r['sps_end_to_end_large'] / fastest_large['sps_end_to_end_large']:.2f}x" if fastest_large else "")
        lines.append(f"| {r['name']} | {r['bleu']:.2f} | {r['chrf']:.2f} | {r['ms_decode_b1']:.2f} | {r['ms_end_to_end_b1']:.2f} "
                     f"| {b1} | {r['sps_decode_large']:.1f} | {r['sps_end_to_end_large']:.1f} | {large} |")
    signatures = f"\n\nsacreBLEU {rows[0]['bleu_signature']}; chrF++ {rows[0]['chrf_signature']}\n" if rows else ""
    return head + "\n".join(lines) + signatures


def plot(rows: list, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 6))
    colours = plt.get_cmap("tab20").colors
    for i, r in enumerate(rows):
        marker = "o" if r["name"].startswith("latent") else ("s" if "CTranslate2" in r["name"] else "^")
        for ax, x in zip(axes, (r["ms_decode_b1"], r["sps_decode_large"])):
            ax.scatter(x, r["bleu"], color=colours[i % len(colours)], marker=marker, s=60, label=r["name"])
            ax.annotate(str(i + 1), (x, r["bleu"]), textcoords="offset points", xytext=(5, 4), fontsize=9)
    axes[0].set(xlabel="ms per sentence at batch 1, decoding (log scale; left is faster)", ylabel="sacreBLEU",
                xscale="log", title="Batch 1")
    axes[1].set(xlabel="sentences per second at large batch, decoding (log scale; right is faster)",
                xscale="log", title="Large batch")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, [f"{i + 1}. {name}" for i, name in enumerate(labels)], loc="lower center", ncol=3, fontsize=8)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.2, 1, 0.95))
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, help="a scripts/pipeline.sh work directory")
    p.add_argument("--latent", action="append", default=[], metavar="NAME=CKPT",
                   help="a latent model to export and time (repeatable; default recipe=WORK/latent/checkpoint_best.pt)")
    p.add_argument("--variants", choices=["all", "recipe"], default="recipe",
                   help="int8 and shortlist exports for every --latent model, or for the first alone")
    p.add_argument("--student", help="the shallow student's checkpoint (default WORK/student/checkpoint_best.pt, if there)")
    p.add_argument("--systems", help="only the systems whose names contain one of these comma-separated strings")
    p.add_argument("--latency-sentences", type=int, default=200)
    p.add_argument("--rounds", type=int, default=1, help="batch-1 rounds per system; the fastest is kept")
    p.add_argument("--out", type=Path, help="default WORK/frontier")
    p.add_argument("--run-system", help=argparse.SUPPRESS)  # one system, as JSON: the child process's job
    a = p.parse_args(argv)
    if a.run_system:
        print(json.dumps(run_system(json.loads(a.run_system))))
        return 0
    if a.work is None:
        p.error("--work WORK_DIR is required")
    for needed in ("data/orig/test.en", "data/bin/dict.en.txt", "teacher/checkpoint_best.pt", "distilled/bin"):
        if not (a.work / needed).exists():
            p.error(f"{a.work / needed} not found: --work must be a finished scripts/pipeline.sh work directory")
    out = a.out or a.work / "frontier"
    out.mkdir(parents=True, exist_ok=True)
    flags = cpu_flags()
    rows = []
    for spec in systems(a, a.work, out):
        spec.update(work=str(a.work), latency_sentences=a.latency_sentences, rounds=a.rounds)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--run-system", json.dumps(spec)], capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"error: system '{spec['name']}' failed")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        texts = result.pop("texts")
        (out / "hyp").mkdir(exist_ok=True)
        (out / "hyp" / (spec["name"].replace(", ", "_").replace(" ", "-") + ".txt")).write_text(
            "".join(t + "\n" for t in texts), encoding="utf-8")
        result.update(score(texts, a.work / "data" / "orig" / "test.de"), spec={k: v for k, v in spec.items() if k != "work"})
        rows.append(result)
        print(f"  {spec['name']}: BLEU {result['bleu']}, {result['ms_decode_b1']:.2f} ms b1, "
              f"{result['sps_decode_large']:.1f} sent/s large ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    total = len((a.work / "data" / "orig" / "test.en").read_text(encoding="utf-8").splitlines())
    text = table(rows, flags, a.latency_sentences, total)
    print(text)
    (out / "frontier.md").write_text(text + "\n", encoding="utf-8")
    (out / "frontier.json").write_text(json.dumps({"cpu": flags, "rows": rows}, indent=1), encoding="utf-8")
    plot(rows, out / "frontier.png", f"Multi30k test_2016_flickr, 2-core CPU ({flags.split(': ')[-1]})")
    print(f"\n{out / 'frontier.md'}, {out / 'frontier.json'}, {out / 'frontier.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
