#!/usr/bin/env python3
"""Score detokenised hypotheses against raw references; print a JSON result.

    score_translations.py HYP REF [--generate-log FILE --batch-size B --device D] [--name NAME]

- sacreBLEU on detokenised text, with its signature: the number to compare
  across systems and papers that report sacreBLEU.
- Tokenised BLEU with compound splitting, as the Transformer and latent-code
  papers report WMT'14 En-De: both sides Moses-tokenised (sacremoses, German)
  and "a-b" split into "a ##AT##-##AT## b" (tensor2tensor's get_ende_bleu.sh).
- With --generate-log, the decoding time that fairseq-generate measured itself
  ("Translated N sentences ... (S sentences/s ...)"), as milliseconds per sentence.
"""

import argparse
import json
import os
import re
import sys

from sacrebleu.metrics import BLEU
from sacremoses import MosesTokenizer

COMPOUND = re.compile(r"(\S)-(\S)")
TRANSLATED = re.compile(r"Translated ([\d,]+) sentences .*? in ([\d.]+)s \(([\d.]+) sentences/s")


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def compound_split_tokenized(lines, lang="de"):
    tok = MosesTokenizer(lang=lang)
    out = []
    for line in lines:
        text = tok.tokenize(line, return_str=True)
        # applied twice so that "a-b-c" splits at both hyphens (the matches overlap)
        out.append(COMPOUND.sub(r"\1 ##AT##-##AT## \2", COMPOUND.sub(r"\1 ##AT##-##AT## \2", text)))
    return out


def decoding_time(log_path):
    """(sentences, seconds, sentences per second) from fairseq-generate's summary line."""
    with open(log_path, encoding="utf-8") as f:
        found = TRANSLATED.findall(f.read())
    if not found:
        raise SystemExit(f"error: no 'Translated ... sentences' line in {log_path}")
    n, secs, rate = found[-1]
    return int(n.replace(",", "")), float(secs), float(rate)


def device_description(device):
    if device == "gpu":
        import torch
        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "gpu"
    threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count()))
    return f"CPU, {threads} thread{'s' if threads > 1 else ''}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("hyp")
    p.add_argument("ref")
    p.add_argument("--generate-log")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--name")
    p.add_argument("--throughput-log", help="fairseq-generate log of the same sentences at a large batch")
    p.add_argument("--throughput-batch", type=int)
    a = p.parse_args(argv)

    hyp, ref = read_lines(a.hyp), read_lines(a.ref)
    if len(hyp) != len(ref):
        print(f"error: {a.hyp} has {len(hyp)} lines but {a.ref} has {len(ref)}", file=sys.stderr)
        return 1
    bleu = BLEU()
    score = bleu.corpus_score(hyp, [ref])
    tok_bleu = BLEU(tokenize="none").corpus_score(compound_split_tokenized(hyp), [compound_split_tokenized(ref)])
    result = dict(
        name=a.name, sentences=len(hyp),
        bleu=round(score.score, 2), bleu_signature=str(bleu.get_signature()), bleu_brevity_penalty=round(score.bp, 3),
        length_ratio=round(score.sys_len / max(score.ref_len, 1), 3),
        tok_bleu=round(tok_bleu.score, 2),
    )
    if a.generate_log:
        n, secs, rate = decoding_time(a.generate_log)
        if n != len(hyp):
            print(f"error: fairseq-generate translated {n} sentences, not {len(hyp)}", file=sys.stderr)
            return 1
        result.update(batch_size=a.batch_size, device=device_description(a.device),
                      decode_seconds=secs, ms_per_sentence=round(1000 / rate, 2))
    if a.throughput_log:
        n, secs, rate = decoding_time(a.throughput_log)
        if n != len(hyp):
            print(f"error: the throughput run translated {n} sentences, not {len(hyp)}", file=sys.stderr)
            return 1
        result.update(throughput_batch=a.throughput_batch, sentences_per_second=round(n / secs, 1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
