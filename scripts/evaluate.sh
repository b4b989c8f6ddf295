#!/usr/bin/env bash
# Translate a test set with a checkpoint and score it.
#
#   scripts/evaluate.sh CKPT DATA_DIR OUT_DIR [--task translation|translation_vqlatent]
#                       [--subset test] [--batch-size 1] [--throughput-batch B] [-- EXTRA fairseq-generate ARGS]
#
# DATA_DIR is a data-prep output (bin/ and the raw references in orig/). OUT_DIR gets
#   hyp.txt      detokenised hypotheses, one per source line
#   result.json  sacreBLEU (detokenised, with its signature); tokenised BLEU with
#                compound splitting, as the papers report it; and the latency per
#                sentence, from fairseq-generate's own timer (decoding only, no loading)
# Latency is per sentence at the batch size used; the pipeline uses batch size 1.
# --throughput-batch B decodes the same sentences once more at batch size B and adds
# sentences_per_second: speed-ups of one-shot models shrink at large batch.
set -euo pipefail
source "$(dirname "$0")/common.sh"

usage() { echo "usage: $0 CKPT DATA_DIR OUT_DIR [--task T] [--subset S] [--batch-size B] [--throughput-batch B] [-- EXTRA]" >&2; exit 2; }
CKPT=${1:-}; DATA=${2:-}; OUT=${3:-}; [ -n "$CKPT" ] && [ -n "$DATA" ] && [ -n "$OUT" ] || usage; shift 3
TASK=translation SUBSET=test BATCH=1 TPUT=0 EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --task) TASK=${2:?}; shift 2 ;;
    --subset) SUBSET=${2:?}; shift 2 ;;
    --batch-size) BATCH=${2:?}; shift 2 ;;
    --throughput-batch) TPUT=${2:?}; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) usage ;;
  esac
done
[ -s "$CKPT" ] || die "checkpoint $CKPT not found"
[ -s "$DATA/bin/subword-scheme" ] || die "$DATA/bin/subword-scheme not found: DATA_DIR must be the output of a data-prep script"
REF="$DATA/orig/$SUBSET.de"
[ -s "$REF" ] || die "reference $REF not found"
if [ -s "$OUT/result.json" ]; then step "$OUT/result.json exists, skipped"; exit 0; fi
mkdir -p "$OUT"
SCHEME=$(cat "$DATA/bin/subword-scheme")
N=$(count_lines "$REF")
SOURCE_TEXT="$DATA/sub/$SUBSET.en"  # the subword text the binarised set was made from, line for line
if [ -s "$SOURCE_TEXT" ] && [ "$(count_lines "$SOURCE_TEXT")" -ne "$N" ]; then
  die "reference $REF has $N lines, but the $SUBSET set in $DATA/bin has $(count_lines "$SOURCE_TEXT") sentences: the reference must be that set's own"
fi
DEVICE=$(device_flags)
DEVICE_NAME=gpu; [ -n "$DEVICE" ] && DEVICE_NAME=cpu

step "translating $N sentences of $SUBSET (batch size $BATCH, $DEVICE_NAME) -> $OUT/generate.out"
case "$SCHEME" in
  subword_nmt) REMOVE_BPE=(--remove-bpe) ;;
  sentencepiece) REMOVE_BPE=(--remove-bpe sentencepiece) ;;
  *) die "unknown subword scheme '$SCHEME' in $DATA/bin/subword-scheme" ;;
esac
# shellcheck disable=SC2086
fairseq-generate "$DATA/bin" --user-dir "$USER_DIR" --task "$TASK" --path "$CKPT" --gen-subset "$SUBSET" \
  --batch-size "$BATCH" --required-batch-size-multiple 1 "${REMOVE_BPE[@]}" $DEVICE "${EXTRA[@]}" \
  > "$OUT/generate.out" 2> "$OUT/generate.log" \
  || { tail -5 "$OUT/generate.log" >&2; die "fairseq-generate failed (log: $OUT/generate.log)"; }

THROUGHPUT=()
if [ "$TPUT" -gt 0 ]; then
  step "throughput: the same $N sentences at batch size $TPUT"
  # shellcheck disable=SC2086
  fairseq-generate "$DATA/bin" --user-dir "$USER_DIR" --task "$TASK" --path "$CKPT" --gen-subset "$SUBSET" \
    --batch-size "$TPUT" --required-batch-size-multiple 1 "${REMOVE_BPE[@]}" $DEVICE "${EXTRA[@]}" --quiet \
    > /dev/null 2> "$OUT/throughput.log" \
    || { tail -5 "$OUT/throughput.log" >&2; die "fairseq-generate failed (log: $OUT/throughput.log)"; }
  THROUGHPUT=(--throughput-log "$OUT/throughput.log" --throughput-batch "$TPUT")
fi

python3 "$REPO/scripts/collect_hypotheses.py" "$OUT/generate.out" "$OUT/hyp.tok" --count "$N" --field H --allow-empty
if [ "$SCHEME" = subword_nmt ]; then
  sacremoses -q -l de -j 1 detokenize < "$OUT/hyp.tok" > "$OUT/hyp.txt"
else
  cp "$OUT/hyp.tok" "$OUT/hyp.txt"
fi

step "scoring -> $OUT/result.json"
python3 "$REPO/scripts/score_translations.py" "$OUT/hyp.txt" "$REF" \
  --generate-log "$OUT/generate.log" --batch-size "$BATCH" --device "$DEVICE_NAME" --name "$(basename "$OUT")" "${THROUGHPUT[@]}" > "$OUT/result.json.tmp"
mv "$OUT/result.json.tmp" "$OUT/result.json"
cat "$OUT/result.json"
