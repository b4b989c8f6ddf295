#!/usr/bin/env python3
"""Does torch.compile speed up one-shot decoding on CPU? (issue 9, the compiled path)

    python benchmarks/compiled_decoding.py --work WORK [--sentences 200] [--threads 1] [--rounds 3] [--prior]

Decodes the first --sentences of test at batch size 1 with LatentGenerator, eagerly
and then with the encoder, the decompressor and the one-shot decoder wrapped in
torch.compile(dynamic=True) (inductor, C++ kernels), in the same process, in
turn for --rounds rounds, and prints the median ms per sentence of each, the compile time, and whether every output is
identical. With --prior the lean path's prior step (IncrementalDecoder.step) is
compiled as well. Run it with nothing else on the machine.
"""

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

from bottlenecks import MAX_LEN_A, MAX_LEN_B


def decode_all(generator, model, batches):
    started = time.perf_counter()
    outputs = [generator.generate([model], batch)[0][0]["tokens"].tolist() for batch in batches]
    return (time.perf_counter() - started) * 1000 / len(batches), outputs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="pipeline work dir (latent/, distilled/bin)")
    p.add_argument("--sentences", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3, help="eager and compiled timed in turn, medians reported")
    p.add_argument("--prior", action="store_true", help="compile the prior's lean step too")
    a = p.parse_args(argv)
    ckpt, data = a.work / "latent" / "checkpoint_best.pt", a.work / "distilled" / "bin"
    for path in (ckpt, data):
        if not path.exists():
            p.error(f"{path} not found: run scripts/pipeline.sh multi30k --work {a.work} first")

    from fairseq import checkpoint_utils

    import fairseq_vqlatent  # noqa: F401
    from fairseq_vqlatent.latent_generator import LatentGenerator

    torch.set_num_threads(a.threads)
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(ckpt)], arg_overrides={"data": str(data)})
    model = models[0].eval()
    task.load_dataset("test")
    dataset = task.dataset("test")
    batches = [dataset.collater([dataset[i]]) for i in range(min(a.sentences, len(dataset)))]
    generator = LatentGenerator([model], task.target_dictionary, max_len_a=MAX_LEN_A, max_len_b=MAX_LEN_B)
    from fairseq_vqlatent.modules import lean_transformer

    eager_step = lean_transformer.IncrementalDecoder.step
    compiled_step = torch.compile(eager_step, dynamic=True) if a.prior else eager_step
    compiled_model = copy.deepcopy(model)
    for part in ("encoder", "decompressor", "decoder"):
        setattr(compiled_model, part, torch.compile(getattr(compiled_model, part), dynamic=True))

    def decode(compiled: bool, subset):
        # the prior's lean step is plain tensor code, which dynamo can trace (--prior)
        lean_transformer.IncrementalDecoder.step = compiled_step if compiled else eager_step
        return decode_all(generator, compiled_model if compiled else model, subset)

    with torch.inference_mode():
        decode(False, batches[:20])  # warm-up
        started = time.perf_counter()
        decode(True, batches[:20])  # compiles
        compile_s = time.perf_counter() - started
        times = {False: [], True: []}
        for _ in range(a.rounds):  # in turn: this machine's speed drifts within minutes
            for compiled in (False, True):
                ms, outputs = decode(compiled, batches)
                times[compiled].append(ms)
                if compiled:
                    compiled_out = outputs
                else:
                    eager = outputs
        eager_ms, compiled_ms = (statistics.median(times[c]) for c in (False, True))
        compiled = compiled_out
    same = sum(x == y for x, y in zip(eager, compiled))
    print(f"`python benchmarks/compiled_decoding.py --work {a.work} --sentences {len(batches)} --threads {a.threads} --rounds {a.rounds}{' --prior' if a.prior else ''}`\n")
    print("| path | ms / sentence (batch 1) | vs eager |\n|---|---:|---:|")
    print(f"| eager | {eager_ms:.2f} | 1.00x |")
    parts = "encoder, decompressor, decoder" + (", prior step" if a.prior else "")
    print(f"| torch.compile ({parts}) | {compiled_ms:.2f} | {eager_ms / compiled_ms:.2f}x |")
    print(f"\ncompile and warm-up: {compile_s:.0f} s; identical outputs: {same} of {len(batches)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
