#!/usr/bin/env python3
"""The code beam search at batch 1: modules/prior_search.py against fairseq's SequenceGenerator
(issue 9, the lean prior search).

    python benchmarks/code_beam_search.py --work WORK [--sentences 200] [--beam 4] [--rounds 3] [--threads 2]

Encodes the first --sentences of test once, then searches their codes one sentence
at a time with both, in turn for --rounds rounds after a warm-up round, and prints
the median ms per sentence of each (the encoder excluded) and how many sentences
got the same codes. SequenceGenerator is run as the tests run it
(tests/conftest.py, sequence_generator_codes), the way the generator did before.
Run it with nothing else on the machine.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from bottlenecks import MAX_LEN_A, MAX_LEN_B, REPO


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="pipeline work dir (latent/, distilled/bin)")
    p.add_argument("--sentences", type=int, default=200)
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    ckpt, data = a.work / "latent" / "checkpoint_best.pt", a.work / "distilled" / "bin"
    for path in (ckpt, data):
        if not path.exists():
            p.error(f"{path} not found: run scripts/pipeline.sh multi30k --work {a.work} first")

    from fairseq import checkpoint_utils

    import fairseq_vqlatent  # noqa: F401
    from fairseq_vqlatent.latent_generator import LatentGenerator

    sys.path.insert(0, str(REPO / "tests"))
    from conftest import sequence_generator_codes

    torch.set_num_threads(a.threads)
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(ckpt)], arg_overrides={"data": str(data)})
    model = models[0].eval()
    task.load_dataset("test")
    dataset = task.dataset("test")
    batches = [dataset.collater([dataset[i]])["net_input"] for i in range(min(a.sentences, len(dataset)))]
    generator = LatentGenerator([model], task.target_dictionary, latent_beam=a.beam, max_len_a=MAX_LEN_A,
                                max_len_b=MAX_LEN_B)

    def ours(net_input, encoder_out, budget):
        codes, mask = generator.beam_codes(model, encoder_out, budget)
        return codes[0][~mask[0]].tolist()

    def fairseqs(net_input, encoder_out, budget):
        (best,), = sequence_generator_codes(model, encoder_out, net_input["src_tokens"], net_input["src_lengths"],
                                            budget, a.beam)
        return model.prior.tokens_to_codes(best).tolist()

    searches = {"modules/prior_search.py (now)": ours, "fairseq's SequenceGenerator (before)": fairseqs}
    times = {name: [] for name in searches}
    with torch.inference_mode():
        encoded = [(model.encoder(n["src_tokens"], src_lengths=n["src_lengths"]),
                    generator.max_latents(int(n["src_lengths"].max()))) for n in batches]
        for round_ in range(a.rounds + 1):  # round 0 warms up
            codes = {}
            for name, search in searches.items():
                started = time.perf_counter()
                codes[name] = [search(n, enc, budget) for n, (enc, budget) in zip(batches, encoded)]
                if round_ > 0:
                    times[name].append((time.perf_counter() - started) * 1000 / len(batches))
    same = sum(x == y for x, y in zip(*codes.values()))
    print(f"`python benchmarks/code_beam_search.py --work {a.work} --sentences {len(batches)} --beam {a.beam} "
          f"--rounds {a.rounds} --threads {a.threads}`\n")
    print(f"| code search, beam {a.beam}, batch 1 | ms / sentence (median) |\n|---|---:|")
    for name, ms in times.items():
        print(f"| {name} | {statistics.median(ms):.2f} |")
    print(f"\nsame codes: {same} of {len(batches)} sentences")
    return 0


if __name__ == "__main__":
    sys.exit(main())
