#!/usr/bin/env python3
"""Print the pipeline's result table (Markdown) from evaluate.sh's result.json files.

    results_table.py [--bleu-baseline N] [--speed-baseline M] "LABEL=DIR/result.json" ...

Row M (1-based, default 1) is the speed baseline: speed-up is its batch-1 latency
over each row's, and, where evaluate.sh measured it (--throughput-batch), each
row's large-batch throughput over its; all measured in the same run on the same
machine. Row N (default 1) is the BLEU baseline: each row's sacreBLEU as a
percentage of its.
"""

import json
import sys


def main(argv) -> int:
    bleu_base = speed_base = 1
    while argv[:1] in (["--bleu-baseline"], ["--speed-baseline"]):
        if argv[0] == "--bleu-baseline":
            bleu_base = int(argv[1])
        else:
            speed_base = int(argv[1])
        argv = argv[2:]
    rows = []
    for arg in argv:
        label, _, path = arg.partition("=")
        with open(path, encoding="utf-8") as f:
            rows.append((label, json.load(f)))
    if not rows:
        print(__doc__, file=sys.stderr)
        return 2
    batch = rows[0][1].get("batch_size")
    base_label, base_bleu = rows[bleu_base - 1][0], rows[bleu_base - 1][1]["bleu"]
    speed_label, speed_ms = rows[speed_base - 1][0], rows[speed_base - 1][1].get("ms_per_sentence")
    tput_batch = next((r["throughput_batch"] for _, r in rows if "throughput_batch" in r), None)
    base_tput = rows[speed_base - 1][1].get("sentences_per_second")
    head = (f"| system | sacreBLEU | % of {base_label} | length ratio | tok. BLEU (compound split) "
            f"| ms / sentence (batch {batch}) | speed-up vs {speed_label} |")
    rule = "|---|---:|---:|---:|---:|---:|---:|"
    if tput_batch:
        head += f" sentences / s (batch {tput_batch}) | throughput vs {speed_label} |"
        rule += "---:|---:|"
    print(head)
    print(rule)
    for label, r in rows:
        ms = r.get("ms_per_sentence")
        speedup = f"{speed_ms / ms:.2f}x" if ms and speed_ms else "-"
        share = f"{100 * r['bleu'] / base_bleu:.0f}%" if base_bleu else "-"
        ratio = f"{r['length_ratio']:.2f}" if "length_ratio" in r else "-"
        line = (f"| {label} | {r['bleu']:.2f} | {share} | {ratio} | {r['tok_bleu']:.2f} "
                f"| {ms if ms is not None else '-'} | {speedup} |")
        if tput_batch:
            rate = r.get("sentences_per_second")
            line += f" {rate if rate else '-'} | {f'{rate / base_tput:.2f}x' if rate and base_tput else '-'} |"
        print(line)
    first = rows[0][1]
    print(f"\n{first['sentences']} test sentences; sacreBLEU {first['bleu_signature']}; "
          f"latency from fairseq-generate's timer on {first.get('device', 'this machine')}.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
