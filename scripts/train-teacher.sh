#!/usr/bin/env bash
# Train the autoregressive teacher: fairseq's own `transformer`, sized per corpus.
#
#   scripts/train-teacher.sh DATA_BIN SAVE_DIR [--size multi30k|wmt14] [--max-update N]
#                            [--minutes M] [-- EXTRA fairseq-train ARGS]
#
# multi30k: 3+3 layers, 256 wide, pre-norm (Multi30k is small; a bigger model
#           overfits; pre-norm trains stably with the short warmup a CPU budget needs).
#           Batches of 2,048 tokens and lr 2e-3: on the same tokens, valid perplexity
#           after one epoch was 52, against 234 with 4,096-token batches and lr 1e-3.
# wmt14:    transformer_wmt_en_de, Vaswani et al.'s base model.
# Training stops at --max-update or after --minutes of training, whichever comes
# first; rerunning resumes an interrupted run and skips a finished one.
set -euo pipefail
source "$(dirname "$0")/common.sh"

parse_training_args "$@"

case "$SIZE" in
  multi30k) MODEL=(--arch transformer --encoder-layers 3 --decoder-layers 3
                   --encoder-embed-dim 256 --decoder-embed-dim 256
                   --encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024
                   --encoder-attention-heads 4 --decoder-attention-heads 4
                   --encoder-normalize-before --decoder-normalize-before
                   --dropout 0.3 --lr 2e-3 --warmup-updates 200 --max-tokens 2048 --max-epoch 200) ;;
  wmt14)    MODEL=(--arch transformer_wmt_en_de --dropout 0.1 --lr 7e-4 --warmup-updates 4000
                   --max-tokens 8192 --max-epoch 1000) ;;
  *) die "unknown --size $SIZE (multi30k or wmt14)" ;;
esac

# --user-dir (in run_fairseq_train) makes torch.load accept fairseq's argparse checkpoints on resume.
run_fairseq_train "$DATA" "$SAVE" --task translation "${MODEL[@]}" --share-all-embeddings \
  --criterion label_smoothed_cross_entropy --label-smoothing 0.1 \
  --optimizer adam --adam-betas '(0.9, 0.98)' --clip-norm 0.0 --lr-scheduler inverse_sqrt \
  --weight-decay 0.0001 --seed 1 $(budget_args) "${EXTRA[@]}"
