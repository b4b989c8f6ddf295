#!/usr/bin/env bash
# The demo: prepare Multi30k, train vqlatent_transformer_small for a CPU budget,
# translate test_2016_flickr in one shot with fairseq-generate, print examples and BLEU.
#
#   scripts/demo.sh CORPUS_DIR WORK_DIR [MINUTES]
set -euo pipefail
CORPUS=${1:?usage: $0 CORPUS_DIR WORK_DIR [MINUTES]}
WORK=${2:?usage: $0 CORPUS_DIR WORK_DIR [MINUTES]}
MINUTES=${3:-20}
HERE=$(cd "$(dirname "$0")/.." && pwd)
USER_DIR="$HERE/fairseq_vqlatent"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

banner() { echo; echo "=== $* ($(date +%H:%M:%S))"; }

banner "data: $CORPUS -> $WORK/data"
bash "$HERE/data-prep/prepare-multi30k.sh" --from "$CORPUS" "$WORK/data" --vocab-size 8000

banner "training vqlatent_transformer_small for up to $MINUTES CPU-minutes (log: $WORK/train.log)"
# A finished or interrupted run resumes from $WORK/checkpoints/checkpoint_last.pt.
fairseq-train "$WORK/data/bin" --user-dir "$USER_DIR" --task translation_vqlatent \
  --arch vqlatent_transformer_small --criterion vqlatent_loss --share-all-embeddings \
  --bottleneck vq --ema-decay 0.99 --dead-code-threshold 0.3 --dropout 0.2 --label-smoothing 0.1 \
  --optimizer adam --adam-betas '(0.9, 0.98)' --lr 1e-3 --lr-scheduler inverse_sqrt --warmup-updates 500 \
  --max-tokens 4096 --stop-time-hours "$(python -c "print($MINUTES / 60)")" --max-epoch 100 \
  --cpu --num-workers 0 --save-dir "$WORK/checkpoints" --keep-last-epochs 1 \
  --log-interval 50 --no-progress-bar > "$WORK/train.log" 2>&1 \
  || { tail -20 "$WORK/train.log" >&2; echo "error: training failed (log: $WORK/train.log)" >&2; exit 1; }
grep -E "\| valid on" "$WORK/train.log" | tail -1 | sed 's/.*| valid on/valid:/'

banner "translating test_2016_flickr in one shot"
fairseq-generate "$WORK/data/bin" --user-dir "$USER_DIR" --task translation_vqlatent \
  --path "$WORK/checkpoints/checkpoint_last.pt" --gen-subset test --batch-size 128 --cpu \
  --remove-bpe sentencepiece > "$WORK/generate.out" 2> "$WORK/generate.log" \
  || { tail -20 "$WORK/generate.log" >&2; exit 1; }
grep "^D-" "$WORK/generate.out" | sed 's/^D-//' | sort -n -k1,1 | cut -f3 > "$WORK/test.hyp"
n_src=$(wc -l < "$CORPUS/test_2016_flickr.en"); n_hyp=$(wc -l < "$WORK/test.hyp")
[ "$n_src" -eq "$n_hyp" ] || { echo "error: $n_hyp hypotheses for $n_src test sentences" >&2; exit 1; }

banner "examples"
paste <(head -5 "$CORPUS/test_2016_flickr.en") <(head -5 "$CORPUS/test_2016_flickr.de") <(head -5 "$WORK/test.hyp") |
  awk -F'\t' '{print "SRC  " $1; print "REF  " $2; print "HYP  " $3; print ""}'

banner "BLEU (sacreBLEU, detokenized, test_2016_flickr, $n_hyp sentences)"
sacrebleu "$CORPUS/test_2016_flickr.de" -i "$WORK/test.hyp" -m bleu -w 2 -f text
