#!/usr/bin/env python3
"""Print the pipeline's result table (Markdown) from evaluate.sh's result.json files.

    results_table.py [--bleu-baseline N] "LABEL=DIR/result.json" ...

The first row is the speed baseline: speed-up is its latency over each row's,
all measured in the same run on the same machine. Row N (1-based, default 1) is
the BLEU baseline: each row's sacreBLEU as a percentage of its.
"""

import json
import sys


def main(argv) -> int:
    bleu_base = 1
    if argv[:1] == ["--bleu-baseline"]:
        bleu_base, argv = int(argv[1]), argv[2:]
    rows = []
    for arg in argv:
        label, _, path = arg.partition("=")
        with open(path, encoding="utf-8") as f:
            rows.append((label, json.load(f)))
    if not rows:
        print(__doc__, file=sys.stderr)
        return 2
    base_ms = rows[0][1].get("ms_per_sentence")
    batch = rows[0][1].get("batch_size")
    base_label, base_bleu = rows[bleu_base - 1][0], rows[bleu_base - 1][1]["bleu"]
    print(f"| system | sacreBLEU | % of {base_label} | length ratio | tok. BLEU (compound split) "
          f"| ms / sentence (batch {batch}) | speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, r in rows:
        ms = r.get("ms_per_sentence")
        speedup = f"{base_ms / ms:.2f}x" if ms and base_ms else "-"
        share = f"{100 * r['bleu'] / base_bleu:.0f}%" if base_bleu else "-"
        ratio = f"{r['length_ratio']:.2f}" if "length_ratio" in r else "-"
        print(f"| {label} | {r['bleu']:.2f} | {share} | {ratio} | {r['tok_bleu']:.2f} "
              f"| {ms if ms is not None else '-'} | {speedup} |")
    first = rows[0][1]
    print(f"\n{first['sentences']} test sentences; sacreBLEU {first['bleu_signature']}; "
          f"latency from fairseq-generate's timer on {first.get('device', 'this machine')}.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
