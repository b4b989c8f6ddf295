#!/usr/bin/env bash
# Prepare Multi30k En->De for fairseq: a joint sentencepiece model, then
# fairseq-preprocess with a joined dictionary.
#
#   data-prep/prepare-multi30k.sh --from CORPUS_DIR OUT_DIR [--max-lines N] [--vocab-size V]
#
# CORPUS_DIR holds train.{en,de}, val.{en,de}, test_2016_flickr.{en,de}.
# OUT_DIR gets spm.model, raw/ (subword text) and bin/ (fairseq binaries).
set -euo pipefail

usage() { echo "usage: $0 --from CORPUS_DIR OUT_DIR [--max-lines N] [--vocab-size V]" >&2; exit 2; }
CORPUS="" OUT="" MAX_LINES=0 VOCAB=8000
while [ $# -gt 0 ]; do
  case "$1" in
    --from) CORPUS="$2"; shift 2 ;;
    --max-lines) MAX_LINES="$2"; shift 2 ;;
    --vocab-size) VOCAB="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) [ -z "$OUT" ] && OUT="$1" && shift || usage ;;
  esac
done
[ -n "$CORPUS" ] && [ -n "$OUT" ] || usage

die() { echo "error: $*" >&2; exit 1; }
step() { echo "== $*"; }

declare -A SPLIT=([train]=train [valid]=val [test]=test_2016_flickr)
for s in train valid test; do
  for l in en de; do
    f="$CORPUS/${SPLIT[$s]}.$l"
    [ -s "$f" ] || die "missing or empty corpus file $f"
  done
  ne=$(wc -l < "$CORPUS/${SPLIT[$s]}.en"); nd=$(wc -l < "$CORPUS/${SPLIT[$s]}.de")
  [ "$ne" -eq "$nd" ] || die "$CORPUS/${SPLIT[$s]}.en has $ne lines but ${SPLIT[$s]}.de has $nd: the sides must be line-aligned"
done

mkdir -p "$OUT/raw"
if [ ! -s "$OUT/raw/.done" ]; then
  step "copying text (train capped at ${MAX_LINES:-all} lines) to $OUT/raw"
  for s in train valid test; do
    for l in en de; do
      if [ "$s" = train ] && [ "$MAX_LINES" -gt 0 ]; then
        head -n "$MAX_LINES" "$CORPUS/${SPLIT[$s]}.$l" > "$OUT/raw/$s.txt.$l"
      else
        cp "$CORPUS/${SPLIT[$s]}.$l" "$OUT/raw/$s.txt.$l"
      fi
    done
  done
  echo ok > "$OUT/raw/.done"
fi

if [ ! -s "$OUT/spm.model" ]; then
  step "learning a joint sentencepiece model ($VOCAB pieces)"
  python - "$OUT" "$VOCAB" <<'PY'
import sys, sentencepiece as spm
out, vocab = sys.argv[1], int(sys.argv[2])
spm.SentencePieceTrainer.train(
    input=f"{out}/raw/train.txt.en,{out}/raw/train.txt.de", model_prefix=f"{out}/spm.tmp",
    vocab_size=vocab, character_coverage=1.0, model_type="unigram", hard_vocab_limit=False,
    bos_id=-1, eos_id=-1, pad_id=-1, unk_id=0, minloglevel=2)
PY
  mv "$OUT/spm.tmp.model" "$OUT/spm.model"; mv "$OUT/spm.tmp.vocab" "$OUT/spm.vocab"
fi

if [ ! -s "$OUT/raw/.encoded" ]; then
  step "encoding with sentencepiece"
  python - "$OUT" <<'PY'
import sys, sentencepiece as spm
out = sys.argv[1]
sp = spm.SentencePieceProcessor(model_file=f"{out}/spm.model")
for s in ("train", "valid", "test"):
    for l in ("en", "de"):
        with open(f"{out}/raw/{s}.txt.{l}", encoding="utf-8") as f, open(f"{out}/raw/{s}.{l}", "w", encoding="utf-8") as g:
            for line in f:
                g.write(" ".join(sp.encode(line.strip(), out_type=str)) + "\n")
PY
  echo ok > "$OUT/raw/.encoded"
fi

if [ ! -s "$OUT/bin/.done" ]; then
  step "binarising with fairseq-preprocess (joined dictionary)"
  rm -rf "$OUT/bin"
  fairseq-preprocess --source-lang en --target-lang de \
    --trainpref "$OUT/raw/train" --validpref "$OUT/raw/valid" --testpref "$OUT/raw/test" \
    --destdir "$OUT/bin" --joined-dictionary --workers 2 > "$OUT/preprocess.log" 2>&1 \
    || { cat "$OUT/preprocess.log" >&2; die "fairseq-preprocess failed (log: $OUT/preprocess.log)"; }
  echo ok > "$OUT/bin/.done"
fi
step "data ready in $OUT/bin"
