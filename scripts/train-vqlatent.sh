#!/usr/bin/env bash
# Train the latent-code model (usually on the distilled corpus).
#
#   scripts/train-vqlatent.sh DATA_BIN SAVE_DIR [--size multi30k|wmt14] [--max-update N]
#                             [--minutes M] [-- EXTRA fairseq-train ARGS]
#
# multi30k: vqlatent_transformer_small; wmt14: vqlatent_transformer_base. Both
# use the configuration measured to keep the codebook alive (hard-EM VQ with EMA
# updates, a 16-dimensional code space, dead-code re-seeding; docs/design.md).
# EXTRA overrides any of it, e.g. `-- --bottleneck soft_em --num-samples 10`.
set -euo pipefail
source "$(dirname "$0")/common.sh"

parse_training_args "$@"

case "$SIZE" in
  multi30k) MODEL=(--arch vqlatent_transformer_small --codebook-size 512 --dropout 0.2
                   --lr 1e-3 --warmup-updates 200 --max-tokens 4096 --max-epoch 500) ;;
  wmt14)    MODEL=(--arch vqlatent_transformer_base --codebook-size 4096 --dropout 0.1
                   --lr 5e-4 --warmup-updates 4000 --max-tokens 8192 --max-epoch 1000) ;;
  *) die "unknown --size $SIZE (multi30k or wmt14)" ;;
esac

run_fairseq_train "$DATA" "$SAVE" --task translation_vqlatent --criterion vqlatent_loss "${MODEL[@]}" \
  --share-all-embeddings --bottleneck vq --code-dim 16 --compress-steps 3 --ema-decay 0.99 \
  --dead-code-threshold 0.3 --label-smoothing 0.1 \
  --optimizer adam --adam-betas '(0.9, 0.98)' --lr-scheduler inverse_sqrt --seed 1 \
  $(budget_args) "${EXTRA[@]}"
