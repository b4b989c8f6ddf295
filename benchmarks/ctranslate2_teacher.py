#!/usr/bin/env python3
"""The teacher as a practitioner would run it fast on CPU: converted to CTranslate2.

    python benchmarks/ctranslate2_teacher.py TEACHER_CKPT DATA_DIR OUT_DIR
        [--compute-type float32|int8] [--beam 1] [--throughput-batch 128] [--subset test]
        [--latency-only N]

Converts the fairseq checkpoint once (ctranslate2's FairseqConverter, into
OUT_DIR/model), translates DATA_DIR's subword-split source at batch size 1 and
then at --throughput-batch, and scores it the way scripts/evaluate.sh scores
fairseq-generate: the same hyp.txt and result.json, through
scripts/score_translations.py. The timer covers translate_batch only, as
fairseq-generate's covers its inference step. Threads: OMP_NUM_THREADS, else
all cores, as torch uses. Length limit: 1.2 |x| + 10 tokens, as the teacher's
greedy rows in fairseq. With --latency-only N it prints only the batch-1 ms per
sentence of the first N sentences, for benchmarks/compiled_decoding.py, which runs it
in a process of its own: in one process with PyTorch, the two libraries' OpenMP
threads wait for work by spinning and slowed CTranslate2 threefold.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bottlenecks import MAX_LEN_A, MAX_LEN_B, REPO


def convert(ckpt: Path, bin_dir: Path, out: Path) -> Path:
    if (out / "model.bin").exists():
        return out
    import fairseq_vqlatent  # noqa: F401  (lets weights-only loading read the teacher)
    from ctranslate2.converters import FairseqConverter

    FairseqConverter(str(ckpt), str(bin_dir), source_lang="en", target_lang="de").convert(str(out), force=True)
    return out


def translate(translator, sources, batch: int, beam: int):
    """-> (hypotheses as token lists, seconds inside translate_batch)."""
    hyps, seconds = [], 0.0
    for i in range(0, len(sources), batch):
        chunk = sources[i : i + batch]
        limit = int(MAX_LEN_A * max(len(s) for s in chunk) + MAX_LEN_B)
        t0 = time.perf_counter()
        out = translator.translate_batch(chunk, beam_size=beam, max_batch_size=batch, max_decoding_length=limit)
        seconds += time.perf_counter() - t0
        hyps += [r.hypotheses[0] for r in out]
    return hyps, seconds


def summary_line(n: int, seconds: float) -> str:
    """fairseq-generate's own summary format, which score_translations.py reads."""
    return f"Translated {n:,} sentences (0 tokens) in {seconds:.1f}s ({n / seconds:.2f} sentences/s, 0 tokens/s)\n"


def join_subwords(tokens, scheme: str) -> str:
    if scheme == "sentencepiece":
        return "".join(tokens).replace("\u2581", " ").strip()
    return " ".join(tokens).replace("@@ ", "").removesuffix("@@")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("ckpt", type=Path)
    p.add_argument("data", type=Path, help="a data-prep output: bin/, sub/ and orig/")
    p.add_argument("out", type=Path)
    p.add_argument("--compute-type", default="float32", choices=["float32", "int8", "int8_float32"])
    p.add_argument("--beam", type=int, default=1)
    p.add_argument("--throughput-batch", type=int, default=128)
    p.add_argument("--subset", default="test")
    p.add_argument("--latency-only", type=int, metavar="N", help="print the batch-1 ms / sentence of N sentences")
    a = p.parse_args(argv)
    src, ref, scheme_file = a.data / "sub" / f"{a.subset}.en", a.data / "orig" / f"{a.subset}.de", a.data / "bin" / "subword-scheme"
    for path in (a.ckpt, src, ref, scheme_file):
        if not path.exists():
            p.error(f"{path} not found")
    if (a.out / "result.json").exists() and not a.latency_only:
        print((a.out / "result.json").read_text())
        return 0
    try:
        import ctranslate2
    except ImportError:
        p.error("ctranslate2 is not installed: pip install -e '.[benchmark]'")

    a.out.mkdir(parents=True, exist_ok=True)
    model = convert(a.ckpt, a.data / "bin", a.out.parent / "ctranslate2-model")
    threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count()))
    translator = ctranslate2.Translator(str(model), device="cpu", compute_type=a.compute_type,
                                        inter_threads=1, intra_threads=threads)
    sources = [line.split() for line in src.read_text(encoding="utf-8").splitlines()]
    translate(translator, sources[:20], 1, a.beam)  # warm-up, untimed
    if a.latency_only:
        _, seconds = translate(translator, sources[: a.latency_only], 1, a.beam)
        print(json.dumps({"ms_per_sentence": seconds * 1000 / min(a.latency_only, len(sources))}))
        return 0
    hyps, seconds = translate(translator, sources, 1, a.beam)
    (a.out / "generate.log").write_text(summary_line(len(sources), seconds))
    _, seconds = translate(translator, sources, a.throughput_batch, a.beam)
    (a.out / "throughput.log").write_text(summary_line(len(sources), seconds))

    scheme = scheme_file.read_text().strip()
    (a.out / "hyp.tok").write_text("".join(join_subwords(h, scheme) + "\n" for h in hyps), encoding="utf-8")
    with open(a.out / "hyp.tok", encoding="utf-8") as tok, open(a.out / "hyp.txt", "w", encoding="utf-8") as txt:
        if scheme == "subword_nmt":
            subprocess.run(["sacremoses", "-q", "-l", "de", "-j", "1", "detokenize"], stdin=tok, stdout=txt, check=True)
        else:
            txt.write(tok.read())
    result = subprocess.run(
        [sys.executable, REPO / "scripts" / "score_translations.py", a.out / "hyp.txt", ref,
         "--generate-log", a.out / "generate.log", "--batch-size", "1", "--device", "cpu",
         "--name", f"ctranslate2-{a.compute_type}", "--throughput-log", a.out / "throughput.log",
         "--throughput-batch", str(a.throughput_batch)],
        check=True, capture_output=True, text=True).stdout
    (a.out / "result.json").write_text(result)
    print(json.dumps(json.loads(result) | {"compute_type": a.compute_type}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
