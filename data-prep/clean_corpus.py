#!/usr/bin/env python3
"""Drop training pairs by length and length ratio, as Moses' clean-corpus-n.perl does.

    clean_corpus.py IN_PREFIX OUT_PREFIX --src en --tgt de --min-len 1 --max-len 250 --ratio 1.5

Reads IN_PREFIX.{src,tgt}, writes the kept pairs to OUT_PREFIX.{src,tgt} and
prints how many pairs were dropped for which reason. Lengths are counted in
whitespace-separated tokens of the given (usually subword) text.
"""

import argparse
import sys
from collections import Counter


def rejection(src: str, tgt: str, min_len: int, max_len: int, ratio: float):
    """Why a pair is dropped, or None to keep it."""
    ns, nt = len(src.split()), len(tgt.split())
    if ns < min_len or nt < min_len:
        return "empty" if min(ns, nt) == 0 else "too short"
    if ns > max_len or nt > max_len:
        return f"longer than {max_len}"
    if max(ns, nt) > ratio * min(ns, nt):
        return f"length ratio above {ratio}"
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("in_prefix")
    p.add_argument("out_prefix")
    p.add_argument("--src", default="en")
    p.add_argument("--tgt", default="de")
    p.add_argument("--min-len", type=int, default=1)
    p.add_argument("--max-len", type=int, default=250)
    p.add_argument("--ratio", type=float, default=1.5)
    a = p.parse_args(argv)

    dropped, kept, n = Counter(), 0, 0
    src_in, tgt_in = f"{a.in_prefix}.{a.src}", f"{a.in_prefix}.{a.tgt}"
    with open(src_in, encoding="utf-8") as fs, open(tgt_in, encoding="utf-8") as ft, \
            open(f"{a.out_prefix}.{a.src}", "w", encoding="utf-8") as gs, \
            open(f"{a.out_prefix}.{a.tgt}", "w", encoding="utf-8") as gt:
        for n, (s, t) in enumerate(zip(fs, ft), 1):
            why = rejection(s, t, a.min_len, a.max_len, a.ratio)
            if why:
                dropped[why] += 1
                continue
            gs.write(s.strip() + "\n")
            gt.write(t.strip() + "\n")
            kept += 1
        if fs.readline() or ft.readline():
            print(f"error: {src_in} and {tgt_in} differ in length (after line {n})", file=sys.stderr)
            return 1
    if kept == 0:
        print(f"error: no training pair of {src_in} / {tgt_in} survives cleaning", file=sys.stderr)
        return 1
    total = kept + sum(dropped.values())
    detail = ", ".join(f"{k} {why}" for why, k in sorted(dropped.items())) or "none"
    print(f"   kept {kept} of {total} pairs; dropped: {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
