#!/usr/bin/env python3
"""Turn fairseq-generate's output into one hypothesis per source line, in order.

    collect_hypotheses.py GENERATE_OUT OUT --count N [--field H|D] [--fallback FILE | --allow-empty]

fairseq-generate prints hypotheses sorted by length and, for inputs it cannot
take (too long for the model, with --skip-invalid-size-inputs-valid-test), none at
all. Everything downstream (BLEU, distilled corpora) needs line i to belong to
source line i, so this checks the ids and counts rather than trusting them.

Without --fallback a missing or empty hypothesis is an error. With it, such a
line takes the fallback file's line instead (distillation falls back to the
reference target) and the number of fallbacks is reported. With --allow-empty
(evaluation) an empty hypothesis is what the model said and is kept as an empty
line; only a missing one is an error.
"""

import argparse
import sys


def read_hypotheses(path: str, field: str) -> dict:
    """{sentence id: text} of the first (best) `field` line per id."""
    hyps = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.startswith(field + "-"):
                continue
            head, *cols = line.rstrip("\n").split("\t")
            idx = int(head[len(field) + 1:])
            # H and D lines are "X-id <tab> score <tab> text"; the text may be empty.
            hyps.setdefault(idx, cols[1] if len(cols) > 1 else "")
    return hyps


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("generate_out")
    p.add_argument("out")
    p.add_argument("--count", type=int, required=True, help="number of source lines")
    p.add_argument("--field", default="H", choices=["H", "D"])
    what = p.add_mutually_exclusive_group()
    what.add_argument("--fallback", help="file whose line i replaces a missing or empty hypothesis i")
    what.add_argument("--allow-empty", action="store_true", help="keep empty hypotheses as empty lines")
    a = p.parse_args(argv)

    hyps = read_hypotheses(a.generate_out, a.field)
    stray = [i for i in hyps if not 0 <= i < a.count]
    if stray:
        print(f"error: {a.generate_out} has hypothesis ids up to {max(stray)} for {a.count} source lines: "
              "it belongs to another data set", file=sys.stderr)
        return 1
    fallback = None
    if a.fallback:
        with open(a.fallback, encoding="utf-8") as f:
            fallback = [line.rstrip("\n") for line in f]
        if len(fallback) != a.count:
            print(f"error: {a.fallback} has {len(fallback)} lines, expected {a.count}", file=sys.stderr)
            return 1
    missing = [i for i in range(a.count) if i not in hyps or (not a.allow_empty and not hyps[i].strip())]
    if missing and fallback is None:
        print(f"error: {len(missing)} of {a.count} sentences have no hypothesis in {a.generate_out} "
              f"(first: line {missing[0] + 1})", file=sys.stderr)
        return 1
    use_fallback = set(missing)
    with open(a.out, "w", encoding="utf-8") as g:
        for i in range(a.count):
            g.write((fallback[i] if i in use_fallback else hyps[i]) + "\n")
    if missing:
        print(f"   {len(missing)} of {a.count} sentences had no usable hypothesis (too long or empty) "
              f"and keep their reference")
    empty = sum(1 for i in range(a.count) if i not in use_fallback and not hyps[i].strip())
    if empty:
        print(f"   {empty} of {a.count} hypotheses are empty")
    return 0


if __name__ == "__main__":
    sys.exit(main())
