#!/usr/bin/env python3
"""Where batch-1 decoding time goes, latent model beside its teacher (issue 9).

    python benchmarks/profile_decoding.py --latent LATENT.pt --teacher TEACHER.pt --data BIN
        [--subset test] [--sentences 300] [--threads 2] [--out benchmarks/results/profile-multi30k.md]

Decodes the first N sentences of the subset one at a time and times each stage
with a wall clock (after a warm-up of 10 sentences):

- latent model: source encoder; prior code search (greedy, the generator's own
  loop); decompressor + one-shot decoder + output projection (one pass); argmax,
  the end-of-sentence rule and the hypothesis (post-processing);
- teacher, greedy: source encoder; fairseq's SequenceGenerator search (decoder
  steps, output projections and the search's bookkeeping).

Prints a markdown table (ms per sentence and share of the total) and writes it to
--out. Run it with nothing else on the machine.
"""

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from bottlenecks import MAX_LEN_A, MAX_LEN_B


def load(path, data):
    from fairseq import checkpoint_utils

    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(path)], arg_overrides={"data": str(data)})
    return models[0].eval(), task


def sentences(task, subset, n):
    task.load_dataset(subset)
    dataset = task.dataset(subset)
    for i in range(min(n, len(dataset))):
        sample = dataset.collater([dataset[i]])
        yield sample


class Clock:
    """Wall-clock seconds per stage, and the sequential decoder steps taken."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.total = defaultdict(float)
        self.steps = 0

    def time(self, name, fn, *args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        self.total[name] += time.perf_counter() - t0
        return out


def timed(task, subset, n, warmup):
    """-> (clock, [(sample, src_tokens, src_lengths)]) over warm-up + n sentences at batch 1;
    the clock is fresh once the warm-up is over."""
    clock = Clock()

    def batches():
        for i, sample in enumerate(sentences(task, subset, n + warmup)):
            if i == warmup:
                clock.reset()
            yield sample, sample["net_input"]["src_tokens"], sample["net_input"]["src_lengths"]

    return clock, batches()


def profile_latent(model, task, subset, n, warmup):
    from fairseq_vqlatent.latent_generator import LatentGenerator

    gen = LatentGenerator([model], task.target_dictionary, max_len_a=MAX_LEN_A, max_len_b=MAX_LEN_B)
    clock, batches = timed(task, subset, n, warmup)
    for sample, src, lengths in batches:
        with torch.inference_mode():
            enc = clock.time("encoder", model.encoder, src, src_lengths=lengths)
            codes, mask = clock.time("prior code search", gen.decode_codes, model, enc, src, lengths)
            clock.steps += codes.size(1) + 1

            def one_pass():
                return model.decode_latents(model.embed_codes(codes), mask, enc)

            logits, out_mask = clock.time("decompressor + decoder + output projection", one_pass)

            def post():
                return gen.hypotheses(logits, out_mask, model.compression, model.ctc_blank)

            clock.time("argmax without repeats, end rule, hypothesis", post)
    return clock.total, clock.steps


def profile_teacher(model, task, subset, n, warmup):
    from fairseq.sequence_generator import SequenceGenerator

    search = SequenceGenerator([model], task.target_dictionary, beam_size=1, max_len_a=MAX_LEN_A, max_len_b=MAX_LEN_B)
    clock, batches = timed(task, subset, n, warmup)
    for sample, src, lengths in batches:
        with torch.inference_mode():
            clock.time("encoder", model.encoder, src, src_lengths=lengths)
            hyps = clock.time("encoder + greedy search", search._generate, sample)
            clock.steps += len(hyps[0][0]["tokens"])
    total = dict(clock.total)
    total["decoder steps + search bookkeeping"] = total.pop("encoder + greedy search") - total["encoder"]
    return total, clock.steps


def table(rows, n):
    lines = ["| system | stage | ms / sentence | share |", "|---|---|---:|---:|"]
    for system, (total, steps) in rows.items():
        whole = sum(total.values())
        for stage, seconds in total.items():
            lines.append(f"| {system} | {stage} | {1000 * seconds / n:.2f} | {100 * seconds / whole:.0f}% |")
        lines.append(f"| {system} | **total** ({steps / n:.1f} sequential steps per sentence) "
                     f"| **{1000 * whole / n:.2f}** | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--latent", type=Path, required=True)
    p.add_argument("--teacher", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="the binarised data directory (dict.*.txt, SUBSET.*)")
    p.add_argument("--subset", default="test")
    p.add_argument("--sentences", type=int, default=300)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    for path in (a.latent, a.teacher, a.data):
        if not path.exists():
            p.error(f"{path} does not exist")
    torch.set_num_threads(a.threads)
    import fairseq_vqlatent  # noqa: F401  (registration, safe checkpoint loading)

    latent, latent_task = load(a.latent, a.data)
    teacher, teacher_task = load(a.teacher, a.data)
    rows = {
        "latent": profile_latent(latent, latent_task, a.subset, a.sentences, a.warmup),
        "teacher, greedy": profile_teacher(teacher, teacher_task, a.subset, a.sentences, a.warmup),
    }
    text = table(rows, a.sentences)
    header = (f"Batch 1, {a.sentences} sentences of {a.subset}, {a.threads} threads, {torch.__version__}, "
              f"device cpu; `python benchmarks/profile_decoding.py --latent {a.latent} --teacher {a.teacher} "
              f"--data {a.data}`\n\n")
    print(header + text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(header + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
