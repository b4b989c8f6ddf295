# Steps shared by the prepare-*.sh scripts; sourced, not run.
#
# Every step prints what it does, writes into a temporary name and renames it
# only when it succeeded, and is skipped when its output already exists. A
# half-finished step therefore never looks finished: rerunning the script redoes
# exactly the steps that did not complete.
#
# Layout of OUT, the same for every corpus and both download paths:
#   orig/{train,valid,test}.{en,de}   the corpus as given (plain text)
#   tok/ ...                          normalised (and, for BPE, Moses-tokenised)
#   bpe.codes | spm.model             the joint subword model
#   sub/ ...                          subword text; train cleaned by length and ratio
#   bin/                              fairseq-preprocess output, joined dictionary,
#                                     plus bin/subword-scheme (subword_nmt | sentencepiece)

SRC=en
TGT=de
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
HERE_COMMON=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() { echo "error: $*" >&2; exit 1; }
step() { echo "== $*"; }
skip() { echo "== $* (done already, skipped)"; }

count_lines() { awk 'END { print NR }' "$1"; }

# first_lines N IN OUT: IN's first N lines (all of them when N is 0) into OUT.
first_lines() { if [ "$1" -gt 0 ]; then head -n "$1" "$2" > "$3"; else cp "$2" "$3"; fi; }

# check_pair PREFIX [eval]: PREFIX.en and PREFIX.de exist, are non-empty, line-aligned and
# clean text (check_text.py); with "eval", no line is empty either. Run on the corpus as
# given, before anything is copied, so that a fixed corpus is what a rerun uses.
check_pair() {
  local p=$1 kind=${2:-train} l a b
  for l in $SRC $TGT; do
    [ -e "$p.$l" ] || die "missing corpus file $p.$l"
    [ -s "$p.$l" ] || die "empty corpus file $p.$l"
  done
  python3 "$HERE_COMMON/check_text.py" "$p.$SRC" "$p.$TGT" || exit 1
  a=$(count_lines "$p.$SRC"); b=$(count_lines "$p.$TGT")
  [ "$a" -eq "$b" ] || die "$p.$SRC has $a lines but $p.$TGT has $b: the two sides must be line-aligned"
  if [ "$kind" = eval ]; then check_no_empty_lines "$p.$SRC"; check_no_empty_lines "$p.$TGT"; fi
}

# check_no_empty_lines FILE: evaluation sets may not contain empty lines, since
# dropping one would misalign every later hypothesis with its reference.
check_no_empty_lines() {
  local n
  n=$(awk 'NF == 0 { print NR; exit }' "$1")
  [ -z "$n" ] || die "$1 line $n is empty: evaluation sets need a sentence on every line"
}

# download URL DEST: Python's urllib, since a fresh machine may lack curl and wget.
download() {
  local url=$1 dest=$2
  if [ -s "$dest" ]; then skip "download $url"; return; fi
  step "downloading $url"
  if ! python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' \
       "$url" "$dest.part" 2>/dev/null; then
    rm -f "$dest.part"
    die "could not download $url (no internet? use --from DIR with local files)"
  fi
  mv "$dest.part" "$dest"
}

# normalise_and_tokenise IN_DIR OUT_DIR MOSES(1|0)
normalise_and_tokenise() {
  local in=$1 out=$2 moses=$3 s l
  if [ -d "$out" ]; then skip "normalise and tokenise -> $out"; return; fi
  if [ "$moses" = 1 ]; then step "normalising and Moses-tokenising with sacremoses -> $out"
  else step "normalising punctuation with sacremoses -> $out"; fi
  rm -rf "$out.tmp"; mkdir -p "$out.tmp"
  for s in train valid test; do
    for l in $SRC $TGT; do
      if [ "$moses" = 1 ]; then
        sacremoses -q -l $l -j "$JOBS" normalize -c < "$in/$s.$l" | sacremoses -q -l $l -j "$JOBS" tokenize -a > "$out.tmp/$s.$l"
      else
        sacremoses -q -l $l -j "$JOBS" normalize -c < "$in/$s.$l" > "$out.tmp/$s.$l"
      fi
      [ "$(count_lines "$out.tmp/$s.$l")" -eq "$(count_lines "$in/$s.$l")" ] \
        || die "sacremoses changed the line count of $in/$s.$l"
    done
  done
  mv "$out.tmp" "$out"
}

# learn_bpe TOK_DIR CODES MERGES: one BPE model for both languages (joint dictionary).
learn_bpe() {
  local tok=$1 codes=$2 merges=$3
  if [ -s "$codes" ]; then skip "learn BPE -> $codes"; return; fi
  step "learning joint BPE with subword-nmt ($merges merges) -> $codes"
  cat "$tok/train.$SRC" "$tok/train.$TGT" | subword-nmt learn-bpe -s "$merges" > "$codes.tmp" 2>/dev/null
  mv "$codes.tmp" "$codes"
}

# learn_spm TOK_DIR MODEL_PREFIX VOCAB
learn_spm() {
  local tok=$1 prefix=$2 vocab=$3
  if [ -s "$prefix.model" ]; then skip "learn sentencepiece -> $prefix.model"; return; fi
  step "learning a joint sentencepiece model ($vocab pieces) -> $prefix.model"
  python3 - "$tok" "$prefix" "$vocab" "$SRC" "$TGT" <<'PY'
import sys, sentencepiece as spm
tok, prefix, vocab, src, tgt = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
spm.SentencePieceTrainer.train(
    input=f"{tok}/train.{src},{tok}/train.{tgt}", model_prefix=f"{prefix}.tmp", vocab_size=vocab,
    character_coverage=1.0, model_type="unigram", hard_vocab_limit=False, input_sentence_size=5_000_000,
    shuffle_input_sentence=True, bos_id=-1, eos_id=-1, pad_id=-1, unk_id=0, minloglevel=2)
PY
  mv "$prefix.tmp.vocab" "$prefix.vocab"; mv "$prefix.tmp.model" "$prefix.model"
}

# apply_subwords TOK_DIR SUB_DIR SCHEME MODEL
apply_subwords() {
  local tok=$1 out=$2 scheme=$3 model=$4 s l
  if [ -d "$out" ]; then skip "apply $scheme -> $out"; return; fi
  step "applying $scheme -> $out"
  rm -rf "$out.tmp"; mkdir -p "$out.tmp"
  for s in train valid test; do
    for l in $SRC $TGT; do
      if [ "$scheme" = subword_nmt ]; then
        subword-nmt apply-bpe -c "$model" --num-workers "$JOBS" < "$tok/$s.$l" > "$out.tmp/$s.$l"
      else
        spm_encode_file "$model" "$tok/$s.$l" "$out.tmp/$s.$l"
      fi
    done
  done
  mv "$out.tmp" "$out"
}

spm_encode_file() {
  python3 - "$@" <<'PY'
import sys, sentencepiece as spm
sp = spm.SentencePieceProcessor(model_file=sys.argv[1])
with open(sys.argv[2], encoding="utf-8") as f, open(sys.argv[3], "w", encoding="utf-8") as g:
    for line in f:
        g.write(" ".join(sp.encode(line.strip(), out_type=str)) + "\n")
PY
}

# clean_train SUB_DIR MAX_LEN RATIO: drop training pairs that are empty, too long or too unequal.
clean_train() {
  local sub=$1 max_len=$2 ratio=$3
  if [ -s "$sub/train.clean.$SRC" ]; then skip "clean training data"; return; fi
  step "cleaning training data (1..$max_len subwords per side, length ratio <= $ratio)"
  python3 "$HERE_COMMON/clean_corpus.py" "$sub/train" "$sub/train.clean.tmp" \
    --src $SRC --tgt $TGT --min-len 1 --max-len "$max_len" --ratio "$ratio" \
    || { rm -f "$sub"/train.clean.tmp.*; die "cleaning failed"; }
  mv "$sub/train.clean.tmp.$TGT" "$sub/train.clean.$TGT"; mv "$sub/train.clean.tmp.$SRC" "$sub/train.clean.$SRC"
}

# binarise SUB_DIR BIN_DIR SCHEME: fairseq-preprocess with one dictionary for both sides.
binarise() {
  local sub=$1 bin=$2 scheme=$3
  if [ -s "$bin/subword-scheme" ]; then skip "binarise -> $bin"; return; fi
  step "binarising with fairseq-preprocess (joined dictionary) -> $bin"
  rm -rf "$bin.tmp"
  fairseq-preprocess --source-lang $SRC --target-lang $TGT \
    --trainpref "$sub/train.clean" --validpref "$sub/valid" --testpref "$sub/test" \
    --destdir "$bin.tmp" --joined-dictionary --workers "$JOBS" > "$bin.out" 2>&1 \
    || { tail -5 "$bin.out" >&2; die "fairseq-preprocess failed (output: $bin.out)"; }
  rm -f "$bin.out"
  echo "$scheme" > "$bin.tmp/subword-scheme"
  rm -rf "$bin"; mv "$bin.tmp" "$bin"
}

# prepare_from_orig OUT SCHEME MERGES_OR_VOCAB MAX_LEN RATIO: every step after orig/.
prepare_from_orig() {
  local out=$1 scheme=$2 size=$3 max_len=$4 ratio=$5 s
  check_pair "$out/orig/train"; check_pair "$out/orig/valid" eval; check_pair "$out/orig/test" eval
  if [ "$scheme" = subword_nmt ]; then
    normalise_and_tokenise "$out/orig" "$out/tok" 1
    learn_bpe "$out/tok" "$out/bpe.codes" "$size"
    apply_subwords "$out/tok" "$out/sub" subword_nmt "$out/bpe.codes"
  else
    normalise_and_tokenise "$out/orig" "$out/tok" 0
    learn_spm "$out/tok" "$out/spm" "$size"
    apply_subwords "$out/tok" "$out/sub" sentencepiece "$out/spm.model"
  fi
  clean_train "$out/sub" "$max_len" "$ratio"
  binarise "$out/sub" "$out/bin" "$scheme"
  echo "== data ready: $out/bin ($(count_lines "$out/sub/train.clean.$SRC") training pairs, $scheme)"
}
