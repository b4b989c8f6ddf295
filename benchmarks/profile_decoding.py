#!/usr/bin/env python3
"""Where decoding time goes, latent model beside its teacher (issue 9).

    python benchmarks/profile_decoding.py --latent LATENT.pt --teacher TEACHER.pt --data BIN
        [--subset test] [--sentences 300] [--batch-size 1] [--threads 2] [--rounds R]
        [--fairseq-layers] [--bf16] [--shortlist FILE] [--candidates N]
        [--out benchmarks/results/profile-multi30k.md]

Decodes the first N sentences of the subset one at a time (or --batch-size at a
time) and times each stage with a wall clock, after a warm-up of 10 batches; a
stage's time is its own, without the stages timed inside it:

- latent model: source encoder; prior code search (greedy, the generator's own
  loop); decompressor + one-shot decoder layers; output projection; the best path
  (CTC) or argmax with the end rule, and the hypotheses; what is left of the
  generator's grouping by code count (indexing, reordering the source encoding)
  and of the generator itself;
- with --fairseq-layers, the latent model again through fairseq's own layer
  modules (the generator's --latent-fairseq-layers): the profile before the lean
  inference path of modules/lean_transformer.py, in the same run;
- with --bf16, the latent model again with --latent-bf16 (encoder and decoder pass in
  bfloat16, the prior in float32), and the teacher again all in bfloat16;
- with --shortlist FILE, the latent model again over that lexical shortlist (and with
  --bf16 also both), its output projection then inside the decoder pass;
- with --candidates N, the latent model with noisy parallel decoding: N code
  sequences sampled from the prior, one decoder pass, the teacher's rescoring
  (--latent-candidates N --rescore-teacher TEACHER);
- teacher, greedy: source encoder; output projections; fairseq's SequenceGenerator
  search (decoder steps and the search's bookkeeping).

Prints a markdown table (ms per sentence, share of the total, sentences per
second) and writes it to --out. Run it with nothing else on the machine. With
--rounds R every system is timed R times, the systems in turn, and the table
shows each system's median round (every round's total is listed): one pass after
another, the same code measured 20% apart on this 2-core machine.
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


class Clock:
    """Wall-clock seconds per stage, each stage's own time only: a stage timed inside
    another (the output projection inside the decoder pass) is taken out of it."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.total = defaultdict(float)
        self.steps = 0  # sequential decoder steps, summed over batches
        self.batches = 0
        self.sentences = 0
        self._inner = []  # per open stage, the seconds its nested stages took

    def time(self, name, fn, *args, **kwargs):
        self._inner.append(0.0)
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        seconds = time.perf_counter() - t0
        self.total[name] += seconds - self._inner.pop()
        if self._inner:
            self._inner[-1] += seconds
        return out

    def snapshot(self) -> "Clock":
        copy = Clock()
        copy.total, copy.steps, copy.batches, copy.sentences = dict(self.total), self.steps, self.batches, self.sentences
        return copy

    def seconds(self) -> float:
        return sum(self.total.values())

    def wrap(self, obj, method: str, name: str):
        """Time every call of obj.method as stage ``name``, wherever it is called from."""
        inner = getattr(obj, method)
        setattr(obj, method, lambda *args, **kwargs: self.time(name, inner, *args, **kwargs))


def batches(clock, task, subset, n, warmup, batch_size):
    """The first n sentences in batches of batch_size (one at a time in file order;
    larger batches by length, as fairseq-generate orders them). The first ``warmup``
    batches are decoded once before the clock is reset."""
    task.load_dataset(subset)
    dataset = task.dataset(subset)
    n = min(n, len(dataset))
    order = list(range(n)) if batch_size == 1 else sorted(range(n), key=lambda i: dataset.num_tokens(i))
    groups = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    clock.reset()
    for k, group in enumerate(groups[:warmup] + groups):
        if k == min(warmup, len(groups)):
            clock.reset()
        sample = dataset.collater([dataset[i] for i in group])
        clock.sentences += len(group)
        clock.batches += 1
        yield sample, sample["net_input"]["src_tokens"], sample["net_input"]["src_lengths"]


def latent_system(model, task, batches_of, fairseq_layers=False, bf16=False, shortlist=None, candidates=1,
                  scorer=None):
    """-> run(): one timed pass of the latent model's generator over the sentences, its Clock."""
    from fairseq_vqlatent.latent_generator import LatentGenerator

    gen = LatentGenerator([model], task.target_dictionary, max_len_a=MAX_LEN_A, max_len_b=MAX_LEN_B,
                          blank_penalty=getattr(task.cfg, "ctc_blank_penalty", 0.0), bf16=bf16, shortlist=shortlist,
                          fairseq_layers=fairseq_layers, candidates=candidates, scorer=scorer)
    clock = Clock()
    clock.wrap(gen, "_generate", "the rest of the generator (candidates: choosing one)")
    clock.wrap(model.encoder, "forward", "encoder")
    search = gen.decode_codes

    def timed_search(*args, **kwargs):
        codes, mask = clock.time("prior code search", search, *args, **kwargs)
        clock.steps += codes.size(1) + 1
        return codes, mask

    gen.decode_codes = timed_search
    clock.wrap(gen, "decode_by_length", "grouping by code count")
    clock.wrap(model, "decode_latents", "decompressor + decoder layers")  # with a shortlist, its projection too
    clock.wrap(model.decoder, "output_layer", "output projection")
    post = "best path, hypotheses" if model.ctc_blank is not None else "argmax without repeats, end rule, hypotheses"
    clock.wrap(gen, "hypotheses", post)
    if scorer is not None:
        clock.wrap(scorer, "score", "teacher rescoring")

    def run():
        for sample, src, lengths in batches_of(clock, task):
            with torch.inference_mode():
                gen.generate([model], sample)
        return clock.snapshot()

    return run


def teacher_system(model, task, batches_of):
    from fairseq.sequence_generator import SequenceGenerator

    search = SequenceGenerator([model], task.target_dictionary, beam_size=1, max_len_a=MAX_LEN_A, max_len_b=MAX_LEN_B)
    clock = Clock()
    clock.wrap(model.encoder, "forward", "encoder")
    clock.wrap(model.decoder, "output_layer", "output projection")

    def run():
        for sample, src, lengths in batches_of(clock, task):
            with torch.inference_mode():
                hyps = clock.time("decoder steps + search bookkeeping", search._generate, sample)
                clock.steps += max(len(h[0]["tokens"]) for h in hyps)
        return clock.snapshot()

    return run


def table(rounds) -> str:
    """rounds: system -> its Clocks, one per round; each system's median round is shown."""
    lines = ["| system | stage | ms / sentence | share |", "|---|---|---:|---:|"]
    for system, clocks in rounds.items():
        clock = sorted(clocks, key=Clock.seconds)[len(clocks) // 2]
        whole, n = clock.seconds(), clock.sentences
        for stage, seconds in clock.total.items():
            lines.append(f"| {system} | {stage} | {1000 * seconds / n:.2f} | {100 * seconds / whole:.0f}% |")
        each = ", ".join(f"{1000 * c.seconds() / c.sentences:.2f}" for c in clocks)
        lines.append(f"| {system} | **total** ({clock.steps / clock.batches:.1f} sequential steps per batch; "
                     f"{n / whole:.1f} sentences / s; rounds: {each}) | **{1000 * whole / n:.2f}** | |")
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
    p.add_argument("--batch-size", type=int, default=1,
                   help="sentences per batch; above 1 they are batched by length, as fairseq-generate batches them")
    p.add_argument("--rounds", type=int, default=1,
                   help="time every system this many times, in turn, and show each one's median round")
    p.add_argument("--fairseq-layers", action="store_true",
                   help="also profile the latent model through fairseq's own layer modules")
    p.add_argument("--bf16", action="store_true", help="also profile the latent model with --latent-bf16")
    p.add_argument("--shortlist", type=Path,
                   help="also profile the latent model over this lexical shortlist (and with --bf16, both)")
    p.add_argument("--candidates", type=int, default=1,
                   help="also profile noisy parallel decoding of this many candidates, rescored by the teacher")
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    for path in (a.latent, a.teacher, a.data) + ((a.shortlist,) if a.shortlist else ()):
        if not path.exists():
            p.error(f"{path} does not exist")
    torch.set_num_threads(a.threads)
    import fairseq_vqlatent  # noqa: F401  (registration, safe checkpoint loading)
    from fairseq_vqlatent.shortlist import Shortlist

    def batches_of(clock, task):
        return batches(clock, task, a.subset, a.sentences, a.warmup, a.batch_size)

    def latent(**variant):  # a model of its own each: the clocks' wrappers stay on the model they time
        model, task = load(a.latent, a.data)
        if variant.get("shortlist"):
            variant["shortlist"] = Shortlist.load(variant["shortlist"], len(task.source_dictionary),
                                                  len(task.target_dictionary))
        return latent_system(model, task, batches_of, **variant)

    systems = {"latent": latent()}
    if a.fairseq_layers:
        systems["latent, fairseq layers"] = latent(fairseq_layers=True)
    if a.bf16:
        systems["latent, bf16"] = latent(bf16=True)
    if a.shortlist:
        systems["latent, shortlist"] = latent(shortlist=a.shortlist)
        if a.bf16:
            systems["latent, bf16, shortlist"] = latent(bf16=True, shortlist=a.shortlist)
    if a.candidates > 1:
        from fairseq_vqlatent.teacher_scorer import TeacherScorer

        model, task = load(a.latent, a.data)
        scorer = TeacherScorer.load(str(a.teacher), str(a.data), task.target_dictionary)
        systems[f"latent, {a.candidates} candidates, teacher rescoring"] = latent_system(
            model, task, batches_of, candidates=a.candidates, scorer=scorer)
    systems["teacher, greedy"] = teacher_system(*load(a.teacher, a.data), batches_of)
    if a.bf16:  # the same cast for the baseline: does bfloat16 speed the teacher up as much?
        teacher, teacher_task = load(a.teacher, a.data)
        systems["teacher, greedy, bf16"] = teacher_system(teacher.to(torch.bfloat16), teacher_task, batches_of)
    rounds = {name: [] for name in systems}
    for _ in range(a.rounds):  # in turn, so that the machine's drift reaches every system alike
        for name, run in systems.items():
            rounds[name].append(run())
    text = table(rounds)
    flags = "".join(f" --{f} {v}" for f, v in (("rounds", a.rounds), ("shortlist", a.shortlist),
                                                         ("candidates", a.candidates)) if v and v != 1)
    flags += (" --fairseq-layers" if a.fairseq_layers else "") + (" --bf16" if a.bf16 else "")
    header = (f"Batch {a.batch_size}, {a.sentences} sentences of {a.subset}, {a.threads} threads, "
              f"{torch.__version__}, device cpu; `python benchmarks/profile_decoding.py --latent {a.latent} "
              f"--teacher {a.teacher} --data {a.data} --sentences {a.sentences} --batch-size {a.batch_size}{flags}`\n\n")
    print(header + text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(header + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
