#!/usr/bin/env bash
# GPU check: does the latent model train in fp16 on CUDA, and how fast do the teacher
# and the latent model decode there? One short run (under 8 minutes on one GPU) on a
# work dir that scripts/pipeline.sh multi30k made on any machine.
#
#   benchmarks/gpu_check.sh WORK_DIR [--out DIR] [--smoke]
#
# WORK_DIR needs data/ (bin/, orig/), teacher/checkpoint_best.pt and distilled/bin.
# Trains the latent model from the teacher for 300 updates (env GPU_CHECK_UPDATES,
# at most GPU_CHECK_MINUTES of training, default 4) with --fp16 into OUT/latent,
# decodes test with the teacher (greedy) and the latent model at batch 1 and 128
# into OUT/eval/, and writes OUT/results.md (the pipeline's table), OUT/device.txt
# (the device's name, then the CPU's vector flags) and OUT/logs/. OUT defaults to
# WORK_DIR/gpu-check; each run starts over in it.
#   --smoke   CPU smoke mode (for the tests): float32 on the CPU, 5 updates,
#             throughput at batch 8
# env LATENT_ARGS: extra fairseq-train options for the latent model, split at spaces
# (the shapes of a teacher that is not the pipeline's Multi30k size).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2; exit 2; }
WORK=${1:-}; [ -n "$WORK" ] || usage; shift
case "$WORK" in -h|--help|-*) usage ;; esac
OUT=$WORK/gpu-check SMOKE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=${2:?}; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    -h|--help) usage ;;
    *) echo "unknown option $1" >&2; usage ;;
  esac
done

for f in data/bin/subword-scheme data/orig/test.de teacher/checkpoint_best.pt distilled/bin/.done; do
  [ -e "$WORK/$f" ] || die "$WORK/$f not found: WORK_DIR must be a work dir of scripts/pipeline.sh multi30k"
done
WORK=$(cd "$WORK" && pwd)
TEACHER=$WORK/teacher/checkpoint_best.pt

if [ "$SMOKE" = 1 ]; then
  export CUDA_VISIBLE_DEVICES=""  # the smoke mode is the CPU path even where a GPU is
  UPDATES=${GPU_CHECK_UPDATES:-5} TPUT=8 FP16=() PRECISION=float32 DEVICE_NAME=cpu
else
  [ -z "$(device_flags)" ] || die "no CUDA device: run with --smoke for the CPU smoke mode"
  UPDATES=${GPU_CHECK_UPDATES:-300} TPUT=128 FP16=(--fp16) PRECISION=fp16
  DEVICE_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)
  [ -n "$DEVICE_NAME" ] || DEVICE_NAME=$(python3 -c "import torch; print(torch.cuda.get_device_name(0))" 2>/dev/null || true)
  : "${DEVICE_NAME:=cpu}"
fi
read -ra LATENT_EXTRA <<< "${LATENT_ARGS:-}"
CPU_FLAGS=$(lscpu 2>/dev/null | awk '/^Flags:/ { for (i = 2; i <= NF; i++) print $i }' \
  | grep -E '^(avx2|avx512.*|.*vnni.*|amx.*)$' | paste -sd ' ' - || true)
CPU_FLAGS="cpu flags: ${CPU_FLAGS:-none of avx2, avx512*, vnni, amx (or no lscpu)}"

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# A check measures this machine: nothing of an earlier run (elsewhere, or --smoke) is reused.
rm -rf "$OUT/latent" "$OUT/eval" "$OUT/logs" "$OUT/results.md" "$OUT/device.txt"
mkdir -p "$OUT/logs"
printf '%s\n%s\n' "$DEVICE_NAME" "$CPU_FLAGS" > "$OUT/device.txt"
echo "device: $DEVICE_NAME"
echo "$CPU_FLAGS"

START=$(date +%s)
# run_step NAME CMD...: CMD's output goes to OUT/logs/NAME.log; a failure shows its tail.
run_step() {
  local name=$1 t0; shift
  step "$name ($(( $(date +%s) - START )) s in; log: $OUT/logs/$name.log)"
  t0=$(date +%s)
  if ! "$@" > "$OUT/logs/$name.log" 2>&1; then
    tail -15 "$OUT/logs/$name.log" >&2
    die "$name failed after $(( $(date +%s) - t0 )) s (log: $OUT/logs/$name.log)"
  fi
  echo "   done in $(( $(date +%s) - t0 )) s"
}

run_step latent bash "$REPO/scripts/train-vqlatent.sh" "$WORK/distilled/bin" "$OUT/latent" --size multi30k \
  --max-update "$UPDATES" --minutes "${GPU_CHECK_MINUTES:-4}" -- \
  --init-from-teacher "$TEACHER" "${FP16[@]}" "${LATENT_EXTRA[@]}"
grep "| valid on" "$OUT/logs/latent.log" | tail -1 | sed 's/.*| valid on/   latent valid:/' || true
# --minutes may have stopped it first
DONE_UPDATES=$(grep -oE 'num_updates[ =][0-9]+' "$OUT/logs/latent.log" | tail -1 | grep -oE '[0-9]+$' || echo '?')
LATENT=$(best_checkpoint "$OUT/latent")

run_step eval-teacher-greedy bash "$REPO/scripts/evaluate.sh" "$TEACHER" "$WORK/data" "$OUT/eval/teacher-greedy" \
  --task translation --throughput-batch "$TPUT" -- --beam 1 "${MAX_LEN[@]}"
run_step eval-latent bash "$REPO/scripts/evaluate.sh" "$LATENT" "$WORK/data" "$OUT/eval/latent" \
  --task translation_vqlatent --throughput-batch "$TPUT" -- "${MAX_LEN[@]}"

echo
echo "=== results: the latent model after $DONE_UPDATES updates in $PRECISION on $DEVICE_NAME ($(( $(date +%s) - START )) s in all)"
python3 "$REPO/scripts/results_table.py" \
  "teacher, greedy=$OUT/eval/teacher-greedy/result.json" \
  "latent codes (one-shot decoder)=$OUT/eval/latent/result.json" | tee "$OUT/results.md"
printf '\nDevice: %s; %s.\n' "$DEVICE_NAME" "$CPU_FLAGS" >> "$OUT/results.md"
