#!/usr/bin/env bash
# Train the latent-code model (usually on the distilled corpus).
#
#   scripts/train-vqlatent.sh DATA_BIN SAVE_DIR [--size multi30k|wmt14] [--max-update N]
#                             [--minutes M] [-- EXTRA fairseq-train ARGS]
#
# multi30k: vqlatent_transformer_small; wmt14: vqlatent_transformer_base. Soft EM
# (10 samples) in a 16-dimensional, batch-normalised code space with dead-code re-seeding; a CTC
# output decoder reading each position twice (valid BLEU 29.1 after 300 updates on make
# benchmark-cpu's corpus, where cross-entropy needed 1,800 for 29.0); batches and
# learning rate as the teacher's (2,048 tokens at 2e-3 on Multi30k), a warmup that
# fits a CPU budget. Validation every $VALIDATE_EVERY updates (Multi30k 100, WMT'14
# 2000) decodes valid in one shot, and checkpoint_best.pt is the best valid BLEU: what
# users get, not the loss of a decoder fed the target's own codes.
# benchmarks/results/latent-ablation-multi30k.md has the measurements behind it.
# EXTRA overrides any of it, e.g. `-- --bottleneck vq --init-from-teacher CKPT`.
set -euo pipefail
source "$(dirname "$0")/common.sh"

parse_training_args "$@"

case "$SIZE" in
  multi30k) MODEL=(--arch vqlatent_transformer_small --codebook-size 512 --dropout 0.2
                   --lr 2e-3 --warmup-updates 100 --max-tokens 2048 --max-epoch 500)
            : "${VALIDATE_EVERY:=100}" ;;
  wmt14)    MODEL=(--arch vqlatent_transformer_base --codebook-size 4096 --dropout 0.1
                   --lr 5e-4 --warmup-updates 4000 --max-tokens 8192 --max-epoch 1000)
            : "${VALIDATE_EVERY:=2000}" ;;
  *) die "unknown --size $SIZE (multi30k or wmt14)" ;;
esac
case "$(cat "$DATA/subword-scheme" 2>/dev/null || echo subword_nmt)" in
  sentencepiece) REMOVE_BPE=sentencepiece ;;
  *) REMOVE_BPE=subword_nmt ;;
esac

run_fairseq_train "$DATA" "$SAVE" --task translation_vqlatent --criterion vqlatent_loss "${MODEL[@]}" \
  --share-all-embeddings --bottleneck soft_em --num-samples 10 --code-dim 16 --code-norm batch --compress-steps 3 \
  --ema-decay 0.99 --dead-code-threshold 0.3 --label-smoothing 0.1 --ctc-upsample 2 \
  --optimizer adam --adam-betas '(0.9, 0.98)' --lr-scheduler inverse_sqrt --seed 1 \
  --eval-bleu --eval-bleu-detok moses --eval-bleu-remove-bpe "$REMOVE_BPE" --eval-bleu-args "$MAX_LEN_JSON" \
  --best-checkpoint-metric bleu --maximize-best-checkpoint-metric \
  --validate-interval-updates "$VALIDATE_EVERY" --save-interval-updates "$VALIDATE_EVERY" \
  --keep-interval-updates 1 \
  $(budget_args) "${EXTRA[@]}"
