#!/usr/bin/env bash
# Multi30k (WMT16 multimodal task 1) En->De for fairseq.
#
#   data-prep/prepare-multi30k.sh [--from DIR] OUT [--bpe-merges N | --spm [--vocab-size V]]
#                                 [--max-lines N] [--max-eval-lines N] [--max-len N] [--ratio R]
#
# Without --from, downloads the official release (multi30k/dataset, data/task1/raw;
# set MULTI30K_MIRROR to another base URL, file:// included, to use a mirror).
# --from DIR takes local plain text: train.{en,de}, val.{en,de}, test_2016_flickr.{en,de}.
# Subwords: joint BPE (subword-nmt, 10,000 merges by default) on Moses-tokenised
# text, or a joint sentencepiece model (--spm, 8,000 pieces) on normalised text.
# --max-lines caps the training pairs and --max-eval-lines the valid/test pairs
# (for smoke tests). Training pairs longer than --max-len subwords (250) or with
# a length ratio above --ratio are dropped; the ratio defaults to 3 rather than
# WMT's 1.5, because on short captions 1.5 drops about 4% of good pairs. The layout of OUT is described in data-prep/common.sh.
set -euo pipefail
source "$(dirname "$0")/common.sh"

usage() { echo "usage: $0 [--from DIR] OUT [--bpe-merges N | --spm [--vocab-size V]] [--max-lines N] [--max-eval-lines N] [--max-len N] [--ratio R]" >&2; exit 2; }
FROM="" OUT="" SCHEME=subword_nmt MERGES=10000 VOCAB=8000 MAX_LINES=0 MAX_EVAL_LINES=0 MAX_LEN=250 RATIO=3
while [ $# -gt 0 ]; do
  case "$1" in
    --from) FROM=${2:?}; shift 2 ;;
    --bpe-merges) MERGES=${2:?}; shift 2 ;;
    --spm) SCHEME=sentencepiece; shift ;;
    --vocab-size) VOCAB=${2:?}; shift 2 ;;
    --max-lines) MAX_LINES=${2:?}; shift 2 ;;
    --max-eval-lines) MAX_EVAL_LINES=${2:?}; shift 2 ;;
    --max-len) MAX_LEN=${2:?}; shift 2 ;;
    --ratio) RATIO=${2:?}; shift 2 ;;
    -h|--help) usage ;;
    -*) echo "unknown option $1" >&2; usage ;;
    *) [ -z "$OUT" ] || usage; OUT=$1; shift ;;
  esac
done
[ -n "$OUT" ] || usage
mkdir -p "$OUT"

# Official names of the three splits.
declare -A NAME=([train]=train [valid]=val [test]=test_2016_flickr)
URL=${MULTI30K_MIRROR:-https://github.com/multi30k/dataset/raw/master/data/task1/raw}

if [ -z "$FROM" ]; then
  FROM="$OUT/download"
  mkdir -p "$FROM"
  for s in train valid test; do
    for l in $SRC $TGT; do
      f="${NAME[$s]}.$l"
      [ -s "$FROM/$f" ] && continue
      download "$URL/$f.gz" "$FROM/$f.gz"
      gzip -dc "$FROM/$f.gz" > "$FROM/$f.tmp" && mv "$FROM/$f.tmp" "$FROM/$f"
    done
  done
fi
[ -d "$FROM" ] || die "corpus directory $FROM does not exist"

if [ -d "$OUT/orig" ]; then skip "collect $FROM -> $OUT/orig"
else
  step "collecting $FROM -> $OUT/orig (train capped at ${MAX_LINES/#0/all} lines, valid/test at ${MAX_EVAL_LINES/#0/all})"
  check_pair "$FROM/${NAME[train]}"; check_pair "$FROM/${NAME[valid]}" eval; check_pair "$FROM/${NAME[test]}" eval
  rm -rf "$OUT/orig.tmp"; mkdir -p "$OUT/orig.tmp"
  for s in train valid test; do
    cap=$MAX_EVAL_LINES; [ "$s" = train ] && cap=$MAX_LINES
    for l in $SRC $TGT; do first_lines "$cap" "$FROM/${NAME[$s]}.$l" "$OUT/orig.tmp/$s.$l"; done
  done
  mv "$OUT/orig.tmp" "$OUT/orig"
fi

SIZE=$MERGES; [ "$SCHEME" = sentencepiece ] && SIZE=$VOCAB
prepare_from_orig "$OUT" "$SCHEME" "$SIZE" "$MAX_LEN" "$RATIO"
