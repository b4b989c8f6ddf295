#!/usr/bin/env bash
# Every stage from raw corpus to a BLEU and latency table:
#   data -> teacher -> distillation -> latent model -> evaluation (3 systems) -> table
#
#   scripts/pipeline.sh CORPUS [options]        CORPUS: multi30k or wmt14
#
#   --corpus-dir DIR       local corpus (repeatable for wmt14: train dir, then dev/test dir);
#                          without it, the official release is downloaded
#   --work DIR             where everything goes (default work/CORPUS)
#   --full                 the full budgets below instead of the demo budgets
#   --teacher-minutes M    --teacher-updates N    (env TEACHER_MINUTES, TEACHER_UPDATES)
#   --latent-minutes M     --latent-updates N     (env LATENT_MINUTES, LATENT_UPDATES)
#   --max-lines N          cap the training pairs (env MAX_LINES; smoke tests)
#   --max-eval-lines N     cap valid/test (env MAX_EVAL_LINES; smoke tests)
#   --bpe-merges N         (env BPE_MERGES)
#   --spm [--vocab-size V] sentencepiece instead of BPE (env SPM=1, VOCAB_SIZE)
#   --teacher-args "ARGS"  --latent-args "ARGS"   extra fairseq-train options for a stage,
#                          e.g. a smaller architecture; split at spaces, without quoting
#                          (env TEACHER_ARGS, LATENT_ARGS)
#   --examples N           example translations to show (default 5)
#   --average-last N       also average the latent model's last N interval checkpoints and
#                          keep whichever of that and checkpoint_best.pt scores better on
#                          valid (default 0 = off; env AVERAGE_LAST)
#
# Budgets (a training stops at whichever of minutes/updates comes first; 0 = no limit):
#   multi30k demo: teacher 8 min, latent 15 min      multi30k --full: 20k / 30k updates
#   (make benchmark-cpu: teacher 70 min, latent 60 min, about 150 minutes on 2 cores)
#   wmt14:         teacher 100k, latent 200k updates (a GPU cluster's job)
# Resumable: a finished stage is skipped, an interrupted training resumes from its
# checkpoint. Each stage logs to WORK/logs/STAGE.log.
set -euo pipefail
source "$(dirname "$0")/common.sh"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }
CORPUS=${1:-}; [ -n "$CORPUS" ] || usage; shift
case "$CORPUS" in multi30k|wmt14) ;; -h|--help) usage ;; *) die "unknown corpus '$CORPUS' (multi30k or wmt14)" ;; esac
CORPUS_DIRS=() WORK=work/$CORPUS FULL=0 EXAMPLES=5
while [ $# -gt 0 ]; do
  case "$1" in
    --corpus-dir) CORPUS_DIRS+=("${2:?}"); shift 2 ;;
    --work) WORK=${2:?}; shift 2 ;;
    --full) FULL=1; shift ;;
    --teacher-minutes) TEACHER_MINUTES=${2:?}; shift 2 ;;
    --teacher-updates) TEACHER_UPDATES=${2:?}; shift 2 ;;
    --latent-minutes) LATENT_MINUTES=${2:?}; shift 2 ;;
    --latent-updates) LATENT_UPDATES=${2:?}; shift 2 ;;
    --max-lines) MAX_LINES=${2:?}; shift 2 ;;
    --max-eval-lines) MAX_EVAL_LINES=${2:?}; shift 2 ;;
    --bpe-merges) BPE_MERGES=${2:?}; shift 2 ;;
    --spm) SPM=1; shift ;;
    --vocab-size) VOCAB_SIZE=${2:?}; shift 2 ;;
    --teacher-args) TEACHER_ARGS=${2?}; shift 2 ;;
    --latent-args) LATENT_ARGS=${2?}; shift 2 ;;
    --examples) EXAMPLES=${2:?}; shift 2 ;;
    --average-last) AVERAGE_LAST=${2:?}; shift 2 ;;
    -h|--help) usage ;;
    *) echo "unknown option $1" >&2; usage ;;
  esac
done

if [ "$CORPUS" = multi30k ] && [ "$FULL" = 0 ]; then
  : "${TEACHER_MINUTES:=8}" "${TEACHER_UPDATES:=0}" "${LATENT_MINUTES:=15}" "${LATENT_UPDATES:=0}"
elif [ "$CORPUS" = multi30k ]; then
  : "${TEACHER_MINUTES:=0}" "${TEACHER_UPDATES:=20000}" "${LATENT_MINUTES:=0}" "${LATENT_UPDATES:=30000}"
else
  : "${TEACHER_MINUTES:=0}" "${TEACHER_UPDATES:=100000}" "${LATENT_MINUTES:=0}" "${LATENT_UPDATES:=200000}"
fi
: "${MAX_LINES:=0}" "${MAX_EVAL_LINES:=0}" "${SPM:=0}" "${TEACHER_ARGS:=}" "${LATENT_ARGS:=}" "${AVERAGE_LAST:=0}"
need_minutes "--teacher-minutes (TEACHER_MINUTES)" "$TEACHER_MINUTES"
need_minutes "--latent-minutes (LATENT_MINUTES)" "$LATENT_MINUTES"
need_count "--teacher-updates (TEACHER_UPDATES)" "$TEACHER_UPDATES"
need_count "--latent-updates (LATENT_UPDATES)" "$LATENT_UPDATES"
need_count "--max-lines (MAX_LINES)" "$MAX_LINES"
need_count "--max-eval-lines (MAX_EVAL_LINES)" "$MAX_EVAL_LINES"
[[ "$AVERAGE_LAST" =~ ^[0-9]+$ ]] || die "--average-last must be a number of checkpoints (0 = off), got '$AVERAGE_LAST'"
if [ "$CORPUS" = multi30k ]; then : "${BPE_MERGES:=10000}" "${VOCAB_SIZE:=8000}"
else : "${BPE_MERGES:=40000}" "${VOCAB_SIZE:=32000}"; fi
SUBWORDS=(--bpe-merges "$BPE_MERGES"); [ "$SPM" = 1 ] && SUBWORDS=(--spm --vocab-size "$VOCAB_SIZE")
read -ra TEACHER_EXTRA <<< "$TEACHER_ARGS"
read -ra LATENT_EXTRA <<< "$LATENT_ARGS"
[ "$AVERAGE_LAST" -gt 0 ] && LATENT_EXTRA=(--keep-interval-updates "$AVERAGE_LAST" "${LATENT_EXTRA[@]}")

mkdir -p "$WORK/logs"
WORK=$(cd "$WORK" && pwd)
LOGS=$WORK/logs TIMES=$WORK/logs/stage-times.tsv
START=$(date +%s) STAGE_NO=0 STAGES=7
[ "$AVERAGE_LAST" -gt 0 ] && STAGES=10
: > "$TIMES"

elapsed() { local s=$(( $(date +%s) - $1 )); printf '%dm%02ds' $((s / 60)) $((s % 60)); }

# progress MINUTES UPDATES: from a stage's output, the lines worth a console line: each
# validation of a training (update, valid BLEU or loss, time used and left of the budget)
# and what a stage reports as "progress: ...". mawk and gawk both: srand() returns the time.
progress() {
  local line_by_line=()  # mawk reads its input in blocks unless told otherwise; gawk reads lines
  awk -W version 2>/dev/null | grep -q mawk && line_by_line=(-W interactive)
  awk "${line_by_line[@]}" -v minutes="$1" -v updates="$2" '
    function clock(s) { return sprintf("%dm%02ds", s / 60, s % 60) }
    BEGIN { srand(); t0 = srand() }
    /\| valid on / {
      n = split($0, f, / \| /); u = b = best = loss = ""
      for (i = 1; i <= n; i++) {
        if (f[i] ~ /^num_updates /) u = substr(f[i], 13)
        else if (f[i] ~ /^bleu /) b = substr(f[i], 6)
        else if (f[i] ~ /^best_bleu /) best = substr(f[i], 11)
        else if (f[i] ~ /^loss /) loss = substr(f[i], 6)
      }
      srand(); used = srand() - t0
      line = "    update " u (updates > 0 ? " of " updates : "")
      line = line (b != "" ? ", valid BLEU " b (best != "" ? " (best " best ")" : "") : ", valid loss " loss)
      line = line ", " clock(used) " into the stage"
      if (minutes > 0) line = line ", about " clock(minutes * 60 > used ? minutes * 60 - used : 0) " of its " minutes " minutes left"
      print line; fflush()
    }
    /^progress: / { sub(/^progress: /, "    "); print; fflush() }'
}

# stage NAME DONE_FILE CMD...: run CMD with its output in LOGS/NAME.log, unless DONE_FILE exists.
# STAGE_MINUTES and STAGE_UPDATES (a training's budget) go into its progress lines.
stage() {
  local name=$1 done_file=$2 t0; shift 2
  STAGE_NO=$((STAGE_NO + 1))
  if [ -e "$done_file" ]; then
    echo "=== [$STAGE_NO/$STAGES] $name: finished earlier, skipped"
    printf '%s\tskipped (took %s when it ran)\n' "$name" "$(cat "$LOGS/$name.time" 2>/dev/null || echo '?')" >> "$TIMES"
    return
  fi
  echo "=== [$STAGE_NO/$STAGES] $name ($(date +%H:%M:%S), $(elapsed "$START") into the pipeline; log: $LOGS/$name.log)"
  t0=$(date +%s)
  if ! PYTHONUNBUFFERED=1 "$@" 2>&1 | tee "$LOGS/$name.log" | progress "${STAGE_MINUTES:-0}" "${STAGE_UPDATES:-0}"; then
    tail -15 "$LOGS/$name.log" >&2
    die "stage '$name' failed after $(elapsed "$t0") (log: $LOGS/$name.log); rerun the same command to resume"
  fi
  [ -e "$done_file" ] || die "stage '$name' ended without writing $done_file (log: $LOGS/$name.log)"
  elapsed "$t0" > "$LOGS/$name.time"
  printf '%s\t%s\n' "$name" "$(elapsed "$t0")" >> "$TIMES"
  echo "    done in $(elapsed "$t0")"
}

DATA=$WORK/data
FROM=()
for d in "${CORPUS_DIRS[@]}"; do FROM+=(--from "$d"); done
if [ "$CORPUS" = multi30k ]; then
  PREPARE=$REPO/data-prep/prepare-multi30k.sh
else
  PREPARE=$REPO/data-prep/prepare-wmt14en2de.sh
fi
SCHEME=subword_nmt; [ "$SPM" = 1 ] && SCHEME=sentencepiece
if [ -e "$DATA/bin/subword-scheme" ] && [ "$(cat "$DATA/bin/subword-scheme")" != "$SCHEME" ]; then
  die "$DATA was prepared with $(cat "$DATA/bin/subword-scheme"), not $SCHEME: use another --work, or drop --spm to match"
fi
stage data "$DATA/bin/subword-scheme" bash "$PREPARE" "$DATA" "${FROM[@]}" \
  "${SUBWORDS[@]}" --max-lines "$MAX_LINES" --max-eval-lines "$MAX_EVAL_LINES"
grep -h "kept\|data ready" "$LOGS/data.log" 2>/dev/null | sed 's/^ */    /' || true

STAGE_MINUTES=$TEACHER_MINUTES STAGE_UPDATES=$TEACHER_UPDATES stage teacher "$WORK/teacher/.done" bash "$REPO/scripts/train-teacher.sh" "$DATA/bin" "$WORK/teacher" \
  --size "$CORPUS" --max-update "$TEACHER_UPDATES" --minutes "$TEACHER_MINUTES" -- "${TEACHER_EXTRA[@]}"
grep "| valid on" "$LOGS/teacher.log" 2>/dev/null | tail -1 | sed 's/.*| valid on/    teacher valid:/' || true
TEACHER=$(best_checkpoint "$WORK/teacher")

stage distill "$WORK/distilled/bin/.done" bash "$REPO/scripts/distill.sh" "$TEACHER" "$DATA" "$WORK/distilled" --beam 4
grep -h "keep their reference\|corpus ready" "$LOGS/distill.log" 2>/dev/null | sed 's/^ */    /' || true

# The latent model starts from the teacher's encoder, embeddings and decoder layers.
if [ ! -e "$WORK/latent/.done" ]; then  # a new or resumed training: an earlier average is stale
  rm -rf "$WORK/latent/checkpoint_avg.pt" "$WORK"/eval/valid-checkpoint_*
fi
STAGE_MINUTES=$LATENT_MINUTES STAGE_UPDATES=$LATENT_UPDATES stage latent "$WORK/latent/.done" bash "$REPO/scripts/train-vqlatent.sh" "$WORK/distilled/bin" "$WORK/latent" \
  --size "$CORPUS" --max-update "$LATENT_UPDATES" --minutes "$LATENT_MINUTES" -- --init-from-teacher "$TEACHER" "${LATENT_EXTRA[@]}"
grep "| valid on" "$LOGS/latent.log" 2>/dev/null | tail -1 | sed 's/.*| valid on/    latent valid:/' || true
LATENT=$(best_checkpoint "$WORK/latent")

# Optional (--average-last N): the one-shot model's valid BLEU swings by a point or two from
# one checkpoint to the next, and the mean of the last few sometimes beats the best single
# one, sometimes not (benchmarks/results/one-shot-gap-multi30k.md). One-shot BLEU on valid
# picks which is used.
INTERVAL_CHECKPOINTS=$(find "$WORK/latent" -maxdepth 1 -name 'checkpoint_*_*.pt' | wc -l)
if [ "$AVERAGE_LAST" -gt 0 ] && [ "$INTERVAL_CHECKPOINTS" -eq 0 ]; then
  echo "=== [$((STAGE_NO + 1))-$((STAGE_NO + 3))/$STAGES] latent-average: skipped, the latent training saved no interval checkpoint (fewer updates than its validation interval)"
  STAGE_NO=$((STAGE_NO + 3))
elif [ "$AVERAGE_LAST" -gt 0 ]; then
  AVERAGED=$WORK/latent/checkpoint_avg.pt
  stage latent-average "$AVERAGED" python3 -m fairseq_vqlatent.average_checkpoints "$WORK/latent" \
    --last "$AVERAGE_LAST" --output "$AVERAGED"
  sed 's/^/    /' "$LOGS/latent-average.log" | grep averaged || true
  for c in "$LATENT" "$AVERAGED"; do
    name=valid-$(basename "$c" .pt)
    stage "$name" "$WORK/eval/$name/result.json" bash "$REPO/scripts/evaluate.sh" "$c" "$DATA" "$WORK/eval/$name" \
      --task translation_vqlatent --subset valid --batch-size 64 -- "${MAX_LEN[@]}"
  done
  LATENT=$(python3 - "$WORK/eval" "$LATENT" "$AVERAGED" <<'PICK'
import json, os, sys
evals, *checkpoints = sys.argv[1:]
bleu = {c: json.load(open(os.path.join(evals, "valid-" + os.path.basename(c)[:-3], "result.json")))["bleu"]
        for c in checkpoints}
best = max(checkpoints, key=bleu.get)  # a tie keeps the single checkpoint
print(" and ".join(f"{os.path.basename(c)} {bleu[c]}" for c in checkpoints), file=sys.stderr)
print(best)
PICK
)
  echo "    valid sacreBLEU above; the latent model used below: $(basename "$LATENT")"
fi

# Latency is measured at batch size 1, then throughput at batch size 128, one system
# after the other, on this machine.
TPUT=(--throughput-batch 128)
stage eval-teacher-beam4 "$WORK/eval/teacher-beam4/result.json" bash "$REPO/scripts/evaluate.sh" \
  "$TEACHER" "$DATA" "$WORK/eval/teacher-beam4" --task translation "${TPUT[@]}" -- --beam 4 "${MAX_LEN[@]}"
stage eval-teacher-greedy "$WORK/eval/teacher-greedy/result.json" bash "$REPO/scripts/evaluate.sh" \
  "$TEACHER" "$DATA" "$WORK/eval/teacher-greedy" --task translation "${TPUT[@]}" -- --beam 1 "${MAX_LEN[@]}"
stage eval-latent "$WORK/eval/latent/result.json" bash "$REPO/scripts/evaluate.sh" \
  "$LATENT" "$DATA" "$WORK/eval/latent" --task translation_vqlatent "${TPUT[@]}" -- "${MAX_LEN[@]}"

echo
echo "=== examples (test set)"
paste "$DATA/orig/test.en" "$DATA/orig/test.de" "$WORK/eval/teacher-beam4/hyp.txt" "$WORK/eval/latent/hyp.txt" \
  | awk -F'\t' -v n="$EXAMPLES" 'NR <= n { print "SRC      " $1; print "REF      " $2; print "TEACHER  " $3; print "LATENT   " $4; print "" }'

echo "=== results: $CORPUS, $(basename "$TEACHER") of the teacher, $(basename "$LATENT") of the latent model"
python3 "$REPO/scripts/results_table.py" --bleu-baseline 2 --speed-baseline 2 \
  "teacher, beam 4=$WORK/eval/teacher-beam4/result.json" \
  "teacher, greedy=$WORK/eval/teacher-greedy/result.json" \
  "latent codes (one-shot decoder)=$WORK/eval/latent/result.json" | tee "$WORK/results.md"

echo
echo "=== wall time per stage (this invocation)"
awk -F'\t' '{ printf "  %-22s %s\n", $1, $2 }' "$TIMES"
echo "  total                  $(elapsed "$START")"
