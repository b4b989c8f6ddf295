# Helpers shared by the stage scripts; sourced, not run.
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
USER_DIR="$REPO/fairseq_vqlatent"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc 2>/dev/null || echo 2)}

die() { echo "error: $*" >&2; exit 1; }
step() { echo "== $*"; }
count_lines() { awk 'END { print NR }' "$1"; }

# --cpu unless torch sees a GPU; the same scripts run on laptops and clusters.
device_flags() {
  if python3 -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo ""
  else
    echo "--cpu"
  fi
}

# The length budget of every decode the pipeline makes (distillation, evaluation, and the
# latent model's validation, which picks checkpoint_best.pt): at most 1.2 |x| + 10 tokens,
# for the latent model ceil((1.2 |x| + 10) / 2^n_c) codes. With fairseq's default (200
# tokens) a prior that fails to stop for a few sentences fills them with 25 codes of
# noise, and valid BLEU swung between 12.5 and 4.5 from one validation to the next.
MAX_LEN=(--max-len-a 1.2 --max-len-b 10)
MAX_LEN_JSON='{"max_len_a": 1.2, "max_len_b": 10}'

# need_count NAME VALUE / need_minutes NAME VALUE: a budget is checked as a number here,
# before it reaches any program, so that no option or variable is ever run as code.
need_count() { [[ "$2" =~ ^[0-9]+$ ]] || die "$1 must be a whole number of updates (0 = no limit), got '$2'"; }
need_minutes() { [[ "$2" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "$1 must be a number of minutes (0 = no limit), got '$2'"; }

# hours MINUTES: fairseq's --stop-time-hours takes hours; MINUTES has passed need_minutes.
hours() { need_minutes minutes "$1"; awk -v m="$1" 'BEGIN { printf "%.6g\n", m / 60 }'; }

# best_checkpoint SAVE_DIR: checkpoint_best.pt (by the training's --best-checkpoint-metric), else checkpoint_last.pt.
best_checkpoint() {
  local d=$1
  if [ -s "$d/checkpoint_best.pt" ]; then echo "$d/checkpoint_best.pt"
  elif [ -s "$d/checkpoint_last.pt" ]; then echo "$d/checkpoint_last.pt"
  else die "no checkpoint in $d"; fi
}

# run_fairseq_train DATA SAVE_DIR ARGS...: resumable training with a completion marker.
# An interrupted run resumes from SAVE_DIR/checkpoint_last.pt; --stop-time-hours
# counts the time of earlier runs too, so resuming never exceeds the budget.
run_fairseq_train() {
  local data=$1 save=$2; shift 2
  [ -s "$data/dict.en.txt" ] || die "no fairseq data in $data (run data-prep first)"
  if [ -e "$save/.done" ]; then
    step "training in $save finished earlier, skipped (delete $save/.done to train on)"
    return
  fi
  mkdir -p "$save"
  [ -e "$save/checkpoint_last.pt" ] && step "resuming from $save/checkpoint_last.pt"
  # shellcheck disable=SC2046
  fairseq-train "$data" --user-dir "$USER_DIR" --save-dir "$save" $(device_flags) \
    --num-workers 0 --log-format simple --log-interval 50 --no-progress-bar \
    --no-epoch-checkpoints "$@" || die "fairseq-train failed"
  [ -s "$save/checkpoint_last.pt" ] || die "fairseq-train wrote no checkpoint to $save"
  touch "$save/.done"
}

# parse_training_args DATA_BIN SAVE_DIR [--size S] [--max-update N] [--minutes M] [-- EXTRA...]
# sets DATA SAVE SIZE MAX_UPDATE MINUTES EXTRA for the train-*.sh scripts.
parse_training_args() {
  local usage="usage: $0 DATA_BIN SAVE_DIR [--size multi30k|wmt14] [--max-update N] [--minutes M] [-- EXTRA]"
  DATA=${1:-}; SAVE=${2:-}
  [ -n "$DATA" ] && [ -n "$SAVE" ] || { echo "$usage" >&2; exit 2; }
  shift 2
  SIZE=multi30k MAX_UPDATE=0 MINUTES=0 EXTRA=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --size) SIZE=${2:?}; shift 2 ;;
      --max-update) MAX_UPDATE=${2:?}; shift 2 ;;
      --minutes) MINUTES=${2:?}; shift 2 ;;
      --) shift; EXTRA=("$@"); break ;;
      *) echo "$usage" >&2; exit 2 ;;
    esac
  done
  need_count --max-update "$MAX_UPDATE"
  need_minutes --minutes "$MINUTES"
  [ "$MAX_UPDATE" -gt 0 ] || [ "$(hours "$MINUTES")" != 0 ] || die "give a budget: --max-update N and/or --minutes M"
}

# budget_args: fairseq-train's stopping options for MAX_UPDATE and MINUTES.
budget_args() {
  [ "$MAX_UPDATE" -gt 0 ] && echo "--max-update $MAX_UPDATE"
  [ "$(hours "$MINUTES")" != 0 ] && echo "--stop-time-hours $(hours "$MINUTES")"
  return 0
}
