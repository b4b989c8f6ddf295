"""Raw text to token ids and back, as data-prep and fairseq-generate do it.

data-prep (data-prep/common.sh) normalises punctuation with sacremoses, Moses-tokenises
(aggressive dash splits, XML escapes) before subword-nmt's BPE, or hands the
normalised text to sentencepiece; fairseq-preprocess maps the subwords to dictionary
ids and appends EOS. Output goes the other way: fairseq's --remove-bpe, then the
Moses detokeniser that scripts/evaluate.sh applies. The same libraries and options,
so that a raw sentence reaches the model as the binarised test set did
(tests/test_export.py checks it line by line).
"""

from typing import Dict, List


def read_dictionary(path: str, nspecial: int) -> List[str]:
    """A fairseq dict.txt -> its symbols in index order: the specials, then one per line."""
    symbols = ["<s>", "<pad>", "</s>", "<unk>"][:nspecial]
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.endswith(" #fairseq:overwrite"):
                line = line[: -len(" #fairseq:overwrite")]
            symbols.append(line.rsplit(" ", 1)[0])
    return symbols


class TextCodec:
    def __init__(self, config: dict, source_symbols: List[str], target_symbols: List[str], subword_model: str):
        tok = config["tokenizer"]
        self.src, self.tgt = config["source_lang"], config["target_lang"]
        self.normalize, self.moses = tok["normalize_punctuation"], tok["moses"]
        self.dash_splits, self.escape = tok["aggressive_dash_splits"], tok["xml_escape"]
        if self.normalize or self.moses:
            from sacremoses import MosesDetokenizer, MosesPunctNormalizer, MosesTokenizer

            self.normalizer = MosesPunctNormalizer(self.src)
            self.tokenizer = MosesTokenizer(self.src)
            self.detokenizer = MosesDetokenizer(self.tgt)
        self.scheme = config["subword"]["scheme"]
        if self.scheme == "subword_nmt":
            from subword_nmt.apply_bpe import BPE

            with open(subword_model, encoding="utf-8") as f:
                self.bpe = BPE(f)
        else:
            import sentencepiece

            self.spm = sentencepiece.SentencePieceProcessor(model_file=subword_model)
        d = config["dictionary"]
        self.unk, self.eos = d["unk"], d["eos"]
        self.source_ids: Dict[str, int] = {}
        for i, s in enumerate(source_symbols):
            self.source_ids.setdefault(s, i)  # fairseq's Dictionary keeps a symbol's first index
        self.target_symbols = target_symbols

    def subwords(self, line: str) -> List[str]:
        """A raw sentence -> its subwords, as data-prep's sub/ files hold them."""
        if self.normalize:
            line = self.normalizer.normalize(line)
        if self.moses:
            line = self.tokenizer.tokenize(line, aggressive_dash_splits=self.dash_splits, return_str=True,
                                           escape=self.escape)
        if self.scheme == "subword_nmt":
            return self.bpe.process_line(line.strip()).split()
        return self.spm.encode(line.strip(), out_type=str)

    def encode(self, line: str) -> List[int]:
        """A raw sentence -> source ids, EOS last (fairseq-preprocess's encode_line)."""
        return [self.source_ids.get(w, self.unk) for w in self.subwords(line)] + [self.eos]

    def decode(self, ids) -> str:
        """Target ids (no EOS) -> detokenised text, as scripts/evaluate.sh writes hyp.txt."""
        text = " ".join(self.target_symbols[i] for i in ids)
        if self.scheme == "subword_nmt":
            text = (text + " ").replace("@@ ", "").rstrip()
        else:
            text = text.replace(" ", "").replace("\u2581", " ").strip()
        if self.moses:
            text = self.detokenizer.detokenize(text.split(), return_str=True, unescape=self.escape)
        return text
