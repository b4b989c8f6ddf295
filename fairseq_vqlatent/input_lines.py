"""Raw input lines (fairseq-interactive, the hub interface) checked before they are translated.

fairseq maps whatever it cannot read to ``<unk>`` and carries on: raw text given to a
model trained on subwords, without ``--bpe``, came out as ``A <unk> <unk> …`` with exit
code 0, and bytes that are not UTF-8 the same. Each such line is refused here in one
line that names it, counted from 1 over the whole input, and says what to do.
"""

import functools
from typing import Callable, Optional, Sequence, Union

import torch
from fairseq.data import Dictionary

from .errors import VQLatentError, first_line

SUBWORD_OPTIONS = {
    "sentencepiece": "--bpe sentencepiece --sentencepiece-model MODEL",
    "subword_nmt": "--tokenizer moses --bpe subword_nmt --bpe-codes CODES",
}


@functools.lru_cache(maxsize=8)
def _subword_scheme(symbols: tuple) -> Optional[str]:
    """Which subword model a dictionary came from, by its symbols; None for whole words."""
    if sum(s.startswith("\u2581") for s in symbols) > len(symbols) // 4:
        return "sentencepiece"
    if any(s.endswith("@@") for s in symbols):
        return "subword_nmt"
    return None


def subword_scheme(dictionary: Dictionary) -> Optional[str]:
    return _subword_scheme(tuple(dictionary.symbols))


def as_text(line: Union[str, bytes], where: str) -> str:
    """``line`` as str; bytes that are not UTF-8 (or stdin's stand-ins for them) are refused."""
    if isinstance(line, bytes):
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise VQLatentError(f"{where} is not UTF-8 text (byte {line[e.start:e.start + 1]!r} at byte {e.start + 1}): "
                                "convert it first, e.g. iconv -f latin1 -t utf-8") from None
    if not isinstance(line, str):
        raise VQLatentError(f"{where} is a {type(line).__name__}, not text")
    # Python reads undecodable stdin bytes as lone surrogates (surrogateescape).
    bad = next((i for i, ch in enumerate(line) if "\udc80" <= ch <= "\udcff"), None)
    if bad is not None:
        byte = bytes([ord(line[bad]) - 0xDC00])
        raise VQLatentError(f"{where} is not UTF-8 text (byte {byte!r} at column {bad + 1}): "
                            "convert it first, e.g. iconv -f latin1 -t utf-8")
    return line


def encode_line(line: str, number: int, encode_fn: Callable[[str], str], dictionary: Dictionary,
                subwords_given: bool) -> torch.Tensor:
    """Line ``number``'s token ids, after the checks above."""
    where = f"line {number}"
    line = as_text(line, where)
    if not line.strip():
        raise VQLatentError(f"{where} is empty: give one sentence per line")
    control = next((i for i, ch in enumerate(line) if (ch < " " and ch != "\t") or ch == "\x7f"), None)
    if control is not None:  # the tokenisers drop some (a NUL joined the words on either side) and keep others
        raise VQLatentError(f"{where} holds a control character (U+{ord(line[control]):04X} at column {control + 1}): "
                            "it is not a line of text")
    try:
        encoded = encode_fn(line)
    except Exception as e:  # a tokeniser's or subword model's own failure, e.g. sentencepiece's RuntimeError
        raise VQLatentError(f"{where} could not be split into subwords ({type(e).__name__}: {first_line(e)})") from None
    tokens = dictionary.encode_line(encoded, add_if_not_exist=False).long()
    scheme = None if subwords_given else subword_scheme(dictionary)
    if scheme and looks_raw(encoded.split(), tokens, dictionary, scheme):
        raise VQLatentError(f"{where} looks like raw text, but the model reads {scheme} subwords and no --bpe was "
                            f"given: add {SUBWORD_OPTIONS[scheme]}, or apply the subword model to the input first")
    return tokens


def looks_raw(words: Sequence[str], tokens: torch.Tensor, dictionary: Dictionary, scheme: str) -> bool:
    if scheme == "sentencepiece":  # every sentencepiece-encoded word starts with ▁
        return not any(w.startswith("\u2581") for w in words)
    # BPE text marks split words with @@; raw text has words the dictionary lacks and no marks
    return bool(tokens.eq(dictionary.unk()).any()) and not any(w.endswith("@@") for w in words)
