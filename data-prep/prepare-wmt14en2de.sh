#!/usr/bin/env bash
# WMT'14 En->De for fairseq: Europarl v7, Common Crawl and News Commentary v9 for
# training, newstest2013 for validation, the full newstest2014 (3,003 lines) for test
# (both capped by --max-eval-lines when given).
#
#   data-prep/prepare-wmt14en2de.sh OUT [--from DIR]... [--bpe-merges N | --spm [--vocab-size V]]
#                                   [--max-lines N] [--max-eval-lines N] [--max-len N] [--ratio R]
#
# Without --from, downloads the official archives from statmt.org (set
# WMT14_MIRROR to another base URL, file:// included, to use a mirror).
# --from DIR (repeatable) takes local plain text instead: every pair X.en / X.de
# in the directories is used, newstest2013 as valid, newstest2014 as test, and
# all other pairs, concatenated in name order, as training data.
# --max-lines caps the training pairs and --max-eval-lines valid and test (smoke tests).
# Text is normalised and Moses-tokenised with sacremoses, then split into joint
# BPE (subword-nmt, 40,000 merges) or sentencepiece (--spm, 32,000 pieces).
# Training pairs longer than --max-len (250) subwords or with a length ratio above
# --ratio (1.5) are dropped. The layout of OUT is described in data-prep/common.sh.
set -euo pipefail
source "$(dirname "$0")/common.sh"

usage() { echo "usage: $0 OUT [--from DIR]... [--bpe-merges N | --spm [--vocab-size V]] [--max-lines N] [--max-eval-lines N] [--max-len N] [--ratio R]" >&2; exit 2; }
OUT="" SCHEME=subword_nmt MERGES=40000 VOCAB=32000 MAX_LINES=0 MAX_EVAL_LINES=0 MAX_LEN=250 RATIO=1.5
FROM=()
while [ $# -gt 0 ]; do
  case "$1" in
    --from) FROM+=("${2:?}"); shift 2 ;;
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
VALID=newstest2013 TEST=newstest2014

# sgm_to_text SGM TXT: the segments of a WMT sgm file, one per line (as fairseq's script does).
sgm_to_text() {
  grep '<seg id' "$1" | sed -e 's/<seg id="[0-9]*">\s*//g' -e 's/\s*<\/seg>\s*//g' -e "s/\’/\'/g" > "$2"
}

# The official release, unpacked into plain text pairs under OUT/download/text.
download_wmt14() {
  local base=${WMT14_MIRROR:-http://statmt.org} dl="$OUT/download" text="$OUT/download/text" a
  if [ -s "$text/.done" ]; then skip "download and unpack WMT'14"; return; fi
  mkdir -p "$dl"
  for a in wmt13/training-parallel-europarl-v7.tgz wmt13/training-parallel-commoncrawl.tgz \
           wmt14/training-parallel-nc-v9.tgz wmt14/dev.tgz wmt14/test-full.tgz; do
    download "$base/$a" "$dl/$(basename "$a")"
  done
  step "unpacking the archives -> $text"
  rm -rf "$dl/unpacked" "$text"; mkdir -p "$dl/unpacked" "$text"
  for a in "$dl"/*.tgz; do tar -xzf "$a" -C "$dl/unpacked" || die "could not unpack $a (a partial download? delete it and rerun)"; done
  local c l
  for c in training/europarl-v7.de-en commoncrawl.de-en training/news-commentary-v9.de-en; do
    for l in $SRC $TGT; do cp "$dl/unpacked/$c.$l" "$text/$(basename "${c%.de-en}").$l" || die "archive lacks $c.$l"; done
  done
  for l in $SRC $TGT; do cp "$dl/unpacked/dev/$VALID.$l" "$text/$VALID.$l" || die "dev.tgz lacks $VALID.$l"; done
  sgm_to_text "$dl/unpacked/test-full/$TEST-deen-src.$SRC.sgm" "$text/$TEST.$SRC"
  sgm_to_text "$dl/unpacked/test-full/$TEST-deen-ref.$TGT.sgm" "$text/$TEST.$TGT"
  rm -rf "$dl/unpacked"
  echo ok > "$text/.done"
}

if [ ${#FROM[@]} -eq 0 ]; then download_wmt14; FROM=("$OUT/download/text"); fi

# Collect every pair of the --from directories into orig/{train,valid,test}.
if [ -d "$OUT/orig" ]; then skip "collect corpora -> $OUT/orig"
else
  step "collecting corpora -> $OUT/orig"
  rm -rf "$OUT/orig.tmp"; mkdir -p "$OUT/orig.tmp"
  valid="" test="" train=()
  for d in "${FROM[@]}"; do
    [ -d "$d" ] || die "corpus directory $d does not exist"
    for f in $(ls "$d"/*.$SRC 2>/dev/null | sort); do
      p=${f%.$SRC}; name=$(basename "$p")
      [ -e "$p.$TGT" ] || { echo "   (skipping $f: no $p.$TGT beside it)"; continue; }
      check_pair "$p"
      case "$name" in
        "$VALID") valid=$p ;;
        "$TEST") test=$p ;;
        *) train+=("$p") ;;
      esac
    done
  done
  [ -n "$valid" ] || die "no $VALID.{$SRC,$TGT} (the validation set) in ${FROM[*]}"
  [ -n "$test" ] || die "no $TEST.{$SRC,$TGT} (the test set) in ${FROM[*]}"
  [ ${#train[@]} -gt 0 ] || die "no training pairs (X.$SRC / X.$TGT) in ${FROM[*]}"
  check_pair "$valid" eval; check_pair "$test" eval
  for p in "${train[@]}"; do echo "   train: $p ($(count_lines "$p.$SRC") pairs)"; done
  echo "   valid: $valid"; echo "   test:  $test"
  for l in $SRC $TGT; do
    for p in "${train[@]}"; do cat "$p.$l"; done > "$OUT/orig.tmp/train.$l"
    if [ "$MAX_LINES" -gt 0 ]; then  # in place: the full corpus is 4.5M lines, not worth a second copy
      head -n "$MAX_LINES" "$OUT/orig.tmp/train.$l" > "$OUT/orig.tmp/cap" && mv "$OUT/orig.tmp/cap" "$OUT/orig.tmp/train.$l"
    fi
    first_lines "$MAX_EVAL_LINES" "$valid.$l" "$OUT/orig.tmp/valid.$l"
    first_lines "$MAX_EVAL_LINES" "$test.$l" "$OUT/orig.tmp/test.$l"
  done
  mv "$OUT/orig.tmp" "$OUT/orig"
fi

SIZE=$MERGES; [ "$SCHEME" = sentencepiece ] && SIZE=$VOCAB
prepare_from_orig "$OUT" "$SCHEME" "$SIZE" "$MAX_LEN" "$RATIO"
