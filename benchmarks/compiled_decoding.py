#!/usr/bin/env python3
"""The latent model's compiled paths against its eager path and the teacher in CTranslate2,
at batch 1, on the same sentences in the same run (issue 9, the compiled path).

    python benchmarks/compiled_decoding.py --work WORK [--sentences 200] [--threads 2] [--rounds 3]
        [--shortlist] [--ctranslate2] [--compile [--prior]]

Decodes the first --sentences of test one at a time with LatentGenerator:

- eager: the default path;
- onnx: --latent-onnx, the encoder, prior and decoder as ONNX Runtime graphs
  (fairseq_vqlatent/onnx_decoding.py); with --shortlist also over the lexical shortlist
  of WORK/distilled/bin, eager and onnx;
- torch.compile (--compile): the encoder, decompressor and decoder wrapped in
  torch.compile(dynamic=True), and with --prior the lean prior step as well;
- with --ctranslate2, the teacher (WORK/teacher) converted to CTranslate2, float32,
  greedy, on the same source sentences, in a process of its own each round
  (ctranslate2_teacher.py --latency-only; its timer covers translate_batch alone).

Every path is timed in turn in each of --rounds rounds (this machine's speed drifts
within minutes) and the median ms per sentence is printed, with the ratios to eager
and to the CTranslate2 teacher and how many outputs equal the eager path's. Export,
compilation and conversion happen before the timing. Run it with nothing else on the machine.
"""

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from bottlenecks import MAX_LEN_A, MAX_LEN_B, sh


def timed(decode, items) -> tuple:
    """-> (ms per item, outputs)."""
    started = time.perf_counter()
    outputs = [decode(item) for item in items]
    return (time.perf_counter() - started) * 1000 / len(items), outputs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="pipeline work dir (latent/, teacher/, data/, distilled/bin)")
    p.add_argument("--sentences", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3, help="every path timed in turn, medians reported")
    p.add_argument("--shortlist", action="store_true", help="add eager and onnx rows over the lexical shortlist")
    p.add_argument("--ctranslate2", action="store_true", help="add the teacher in CTranslate2 (float32, greedy)")
    p.add_argument("--compile", action="store_true", help="add torch.compile of the encoder, decompressor, decoder")
    p.add_argument("--prior", action="store_true", help="with --compile: compile the prior's lean step too")
    p.add_argument("--latent", type=Path, help="the latent checkpoint (default: WORK/latent/checkpoint_best.pt)")
    a = p.parse_args(argv)
    ckpt, data = a.latent or a.work / "latent" / "checkpoint_best.pt", a.work / "distilled" / "bin"
    for path in (ckpt, data) + ((a.work / "teacher" / "checkpoint_best.pt",) if a.ctranslate2 else ()):
        if not path.exists():
            p.error(f"{path} not found: run scripts/pipeline.sh multi30k --work {a.work} first")

    from fairseq import checkpoint_utils

    import fairseq_vqlatent  # noqa: F401
    from fairseq_vqlatent.latent_generator import LatentGenerator
    from fairseq_vqlatent.modules import lean_transformer

    torch.set_num_threads(a.threads)
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(ckpt)], arg_overrides={"data": str(data)})
    model = models[0].eval()
    task.load_dataset("test")
    dataset = task.dataset("test")
    n = min(a.sentences, len(dataset))
    batches = [dataset.collater([dataset[i]]) for i in range(n)]
    d = task.target_dictionary

    def generator(**options):
        return LatentGenerator([model], d, max_len_a=MAX_LEN_A, max_len_b=MAX_LEN_B, **options)

    def latent(gen, m=model):
        return lambda batch: gen.generate([m], batch)[0][0]["tokens"].tolist()

    paths = {"eager": latent(generator())}
    started = time.perf_counter()
    paths["onnx"] = latent(generator(onnx=True))
    setup = {"onnx": time.perf_counter() - started}
    if a.shortlist:
        from fairseq_vqlatent.shortlist import Shortlist

        listed = a.work / "decoding-speed" / "shortlist.pt"  # the one decoding_speed.py --shortlist builds
        if not listed.exists():
            listed.parent.mkdir(parents=True, exist_ok=True)
            sh([sys.executable, "-m", "fairseq_vqlatent.shortlist", data, listed], listed.with_suffix(".log"))
        shortlist = Shortlist.load(listed, len(task.source_dictionary), len(d))
        paths["eager, shortlist"] = latent(generator(shortlist=shortlist))
        paths["onnx, shortlist"] = latent(generator(shortlist=shortlist, onnx=True))
    if a.compile:
        compiled_model = copy.deepcopy(model)
        for part in ("encoder", "decompressor", "decoder"):
            setattr(compiled_model, part, torch.compile(getattr(compiled_model, part), dynamic=True))
        eager_step = lean_transformer.IncrementalDecoder.step
        compiled_step = torch.compile(eager_step, dynamic=True) if a.prior else eager_step
        compiled_decode = latent(generator(), compiled_model)

        def compiled(batch):
            lean_transformer.IncrementalDecoder.step = compiled_step
            try:
                return compiled_decode(batch)
            finally:
                lean_transformer.IncrementalDecoder.step = eager_step

        name = "torch.compile" + (" (with the prior step)" if a.prior else "")
        paths[name] = compiled
        started = time.perf_counter()
        with torch.inference_mode():
            timed(compiled, batches[:20])
        setup[name] = time.perf_counter() - started
    ct2_name = "teacher in CTranslate2 float32, greedy"
    if a.ctranslate2:  # in a process of its own (ctranslate2_teacher.py --latency-only), timed in turn with the rest
        command = [sys.executable, str(Path(__file__).parent / "ctranslate2_teacher.py"),
                   a.work / "teacher" / "checkpoint_best.pt", a.work / "data",
                   a.work / "decoding-speed" / "ctranslate2-float32", "--latency-only", str(n)]
        env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
        paths[ct2_name] = lambda: json.loads(subprocess.run(
            command, env=env, check=True, capture_output=True, text=True).stdout.splitlines()[-1])["ms_per_sentence"]

    times = {name: [] for name in paths}
    outputs = {}
    with torch.inference_mode():
        for name, decode in paths.items():  # warm-up
            if name != ct2_name:
                timed(decode, batches[:20])
        for _ in range(a.rounds):
            for name, decode in paths.items():
                if name == ct2_name:
                    times[name].append(decode())
                else:
                    ms, outputs[name] = timed(decode, batches)
                    times[name].append(ms)

    median = {name: statistics.median(t) for name, t in times.items()}
    ct2 = median.get(ct2_name)
    flags = "".join(f" --{f}" for f in ("shortlist", "ctranslate2", "compile", "prior") if getattr(a, f))
    flags += f" --latent {a.latent}" if a.latent else ""
    print(f"`python benchmarks/compiled_decoding.py --work {a.work} --sentences {n} --threads {a.threads} "
          f"--rounds {a.rounds}{flags}`\n")
    print("| path | ms / sentence (batch 1) | rounds | vs eager | vs CTranslate2 teacher | outputs as eager's |")
    print("|---|---:|---|---:|---:|---:|")
    for name, ms in median.items():
        reference = outputs["eager, shortlist" if "shortlist" in name else "eager"]
        same = "" if name == ct2_name else f"{sum(x == y for x, y in zip(outputs[name], reference))} of {n}"
        vs_ct2 = f"{ct2 / ms:.2f}x" if ct2 else ""
        rounds = ", ".join(f"{t:.2f}" for t in times[name])
        print(f"| {name} | {ms:.2f} | {rounds} | {median['eager'] / ms:.2f}x | {vs_ct2} | {same} |")
    print("\nset-up before timing (s): " + ", ".join(f"{k} {v:.1f}" for k, v in setup.items())
          + f"; {a.threads} thread(s), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
