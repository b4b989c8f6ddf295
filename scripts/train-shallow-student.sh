#!/usr/bin/env bash
# Train the "deep encoder, shallow decoder" autoregressive baseline (Kasai et al. 2021):
# the teacher's encoder with a 1-layer decoder, on the distilled corpus.
#
#   scripts/train-shallow-student.sh TEACHER_CKPT DATA_BIN SAVE_DIR [--max-update N] [--minutes M]
#                                    [-- EXTRA fairseq-train ARGS]
#
# The teacher's multi30k settings with DECODER_LAYERS decoder layers (env, default 1). Training starts
# from SAVE_DIR/teacher-init.pt, the teacher with only its top N decoder layers
# (scripts/shallow_student_init.py), so the warmup is short. Training stops at
# --max-update or after --minutes of training, whichever comes first; rerunning
# resumes an interrupted run and skips a finished one.
set -euo pipefail
source "$(dirname "$0")/common.sh"

TEACHER=${1:-}
[ -n "$TEACHER" ] || { echo "usage: $0 TEACHER_CKPT DATA_BIN SAVE_DIR [--max-update N] [--minutes M] [-- EXTRA]" >&2; exit 2; }
shift
parse_training_args "$@"
LAYERS=${DECODER_LAYERS:-1}

# A fresh start loads the cut-down teacher and resets the rest. A resumed run must not:
# with --restore-file, fairseq would start over from INIT instead of checkpoint_last.pt.
INIT=$SAVE/teacher-init.pt RESTORE=()
if [ ! -e "$SAVE/.done" ] && [ ! -e "$SAVE/checkpoint_last.pt" ]; then
  mkdir -p "$SAVE"
  step "starting point from the teacher, top $LAYERS decoder layer(s) -> $INIT"
  python3 "$REPO/scripts/shallow_student_init.py" "$TEACHER" "$INIT" --decoder-layers "$LAYERS"
  RESTORE=(--restore-file "$INIT" --reset-optimizer --reset-dataloader --reset-meters --reset-lr-scheduler)
fi

# train-teacher.sh's multi30k model, shallower; a short warmup, since the weights are trained.
MODEL=(--arch transformer --encoder-layers 3 --decoder-layers "$LAYERS"
       --encoder-embed-dim 256 --decoder-embed-dim 256
       --encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024
       --encoder-attention-heads 4 --decoder-attention-heads 4
       --encoder-normalize-before --decoder-normalize-before
       --dropout 0.3 --lr 2e-3 --warmup-updates 100 --max-tokens 2048 --max-epoch 200)

# --user-dir (in run_fairseq_train) makes torch.load accept fairseq's argparse checkpoints.
run_fairseq_train "$DATA" "$SAVE" --task translation "${MODEL[@]}" --share-all-embeddings \
  --criterion label_smoothed_cross_entropy --label-smoothing 0.1 \
  --optimizer adam --adam-betas '(0.9, 0.98)' --clip-norm 0.0 --lr-scheduler inverse_sqrt \
  --weight-decay 0.0001 --seed 1 "${RESTORE[@]}" $(budget_args) "${EXTRA[@]}"
