#!/usr/bin/env bash
# Sequence-level distillation: the teacher's beam-search translations of the
# training sources become the training targets.
#
#   scripts/distill.sh TEACHER_CKPT DATA_DIR OUT_DIR [--beam 4] [--max-tokens N] [-- EXTRA generate ARGS]
#
# DATA_DIR is a data-prep output (sub/train.clean.* and bin/). OUT_DIR gets
# text/train.{en,de} (sources unchanged, distilled targets in subwords) and bin/:
# the distilled training set binarised with the teacher's dictionary, beside the
# original valid and test sets. A source the teacher cannot translate (longer
# than its positions) or translates to nothing keeps its reference target, so
# the corpus stays line-aligned; the line count is checked before anything is
# marked finished.
set -euo pipefail
source "$(dirname "$0")/common.sh"

usage() { echo "usage: $0 TEACHER_CKPT DATA_DIR OUT_DIR [--beam N] [--max-tokens N] [-- EXTRA]" >&2; exit 2; }
CKPT=${1:-}; DATA=${2:-}; OUT=${3:-}; [ -n "$CKPT" ] && [ -n "$DATA" ] && [ -n "$OUT" ] || usage; shift 3
BEAM=4 MAX_TOKENS=8000 EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --beam) BEAM=${2:?}; shift 2 ;;
    --max-tokens) MAX_TOKENS=${2:?}; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) usage ;;
  esac
done
[ -s "$CKPT" ] || die "teacher checkpoint $CKPT not found"
for f in sub/train.clean.en sub/train.clean.de bin/dict.en.txt bin/train.en-de.en.idx; do
  [ -s "$DATA/$f" ] || die "$DATA/$f not found: DATA_DIR must be the output of a data-prep script"
done
if [ -s "$OUT/bin/.done" ]; then step "distilled corpus $OUT/bin exists, skipped"; exit 0; fi
mkdir -p "$OUT/text"
N=$(count_lines "$DATA/sub/train.clean.en")

step "translating $N training sentences with the teacher (beam $BEAM) -> $OUT/generate-train.out"
# --required-batch-size-multiple 1: fairseq otherwise drops a last batch of odd size.
# shellcheck disable=SC2046
fairseq-generate "$DATA/bin" --user-dir "$USER_DIR" --task translation --path "$CKPT" \
  --gen-subset train --beam "$BEAM" --max-tokens "$MAX_TOKENS" --required-batch-size-multiple 1 \
  "${MAX_LEN[@]}" --skip-invalid-size-inputs-valid-test $(device_flags) "${EXTRA[@]}" 2> "$OUT/generate-train.log" \
  | awk -v n="$N" -v out="$OUT/generate-train.out.tmp" -v every=$(( N >= 10 ? N / 10 : 1 )) '
      { print > out }
      /^S-/ { if (++done % every == 0) { printf "progress: %d of %d sentences distilled\n", done, n > "/dev/stderr" } }' \
  || { tail -5 "$OUT/generate-train.log" >&2; die "teacher decoding failed (log: $OUT/generate-train.log)"; }
mv "$OUT/generate-train.out.tmp" "$OUT/generate-train.out"

step "writing the distilled targets in source order -> $OUT/text/train.de"
cp "$DATA/sub/train.clean.en" "$OUT/text/train.en"
python3 "$REPO/scripts/collect_hypotheses.py" "$OUT/generate-train.out" "$OUT/text/train.de.tmp" \
  --count "$N" --field H --fallback "$DATA/sub/train.clean.de"
[ "$(count_lines "$OUT/text/train.de.tmp")" -eq "$N" ] || die "distilled targets are not line-aligned with the sources"
mv "$OUT/text/train.de.tmp" "$OUT/text/train.de"

step "binarising with the teacher's dictionary -> $OUT/bin"
rm -rf "$OUT/bin.tmp"
fairseq-preprocess --source-lang en --target-lang de --trainpref "$OUT/text/train" \
  --srcdict "$DATA/bin/dict.en.txt" --tgtdict "$DATA/bin/dict.de.txt" \
  --destdir "$OUT/bin.tmp" --workers "$OMP_NUM_THREADS" > "$OUT/preprocess.out" 2>&1 \
  || { tail -5 "$OUT/preprocess.out" >&2; die "fairseq-preprocess failed (output: $OUT/preprocess.out)"; }
# Validation and test keep their human references.
cp "$DATA"/bin/valid.* "$DATA"/bin/test.* "$DATA/bin/subword-scheme" "$OUT/bin.tmp/"
touch "$OUT/bin.tmp/.done"
rm -rf "$OUT/bin"; mv "$OUT/bin.tmp" "$OUT/bin"
step "distilled corpus ready: $OUT/bin ($N pairs)"
