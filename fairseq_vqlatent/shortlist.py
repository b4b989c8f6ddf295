"""Lexical shortlists (Junczys-Dowmunt et al. 2018; Marian's --shortlist): the one-shot
decoder scores only the target types that a batch's source words make likely, and
the most frequent ones, instead of the whole vocabulary.

    python -m fairseq_vqlatent.shortlist DATA_BIN OUT.pt [-s en] [-t de] [--subset train]
        [--top-k 50] [--frequent 500]
    fairseq-generate ... --task translation_vqlatent --latent-shortlist OUT.pt

A CTC decoder emits at 2 * 2^n_c positions per code, and at batch 128 the output
projection and the best path over [B, T, V] are a large share of its decode
(benchmarks/results/profile-multi30k.md); both shrink with the vocabulary.
A source type's candidates are the target types with the highest Dice coefficient
2 c(s, t) / (c(s) + c(t)) over the training pairs, each type counted once per
sentence (c(s, t): sentences holding both). Decoding with a shortlist approximates:
a word outside it cannot be emitted, and scores are normalised over the shortlist.
Build it from the corpus the model was trained on (the distilled one).
"""

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Iterable, Sequence, Tuple

import torch
from torch import Tensor

from .errors import VQLatentError, checkpoint_problem, first_line


@dataclass
class Shortlist:
    candidates: Tensor  # [V_src, k] target types per source type, best first; -1 where fewer
    frequent: Tensor  # [F] target types every batch may emit
    target_size: int

    @property
    def source_size(self) -> int:
        return self.candidates.size(0)

    def for_sources(self, src_tokens: Tensor, keep: Sequence[int] = (), drop: Sequence[int] = ()) -> Tensor:
        """src_tokens [B, S] -> the sorted target types [V'] these sentences may emit:
        their source types' candidates, the frequent types and ``keep``, without ``drop``."""
        device = src_tokens.device
        found = self.candidates.to(device)[src_tokens.unique()].flatten()
        types = torch.cat([found[found >= 0], self.frequent.to(device), torch.tensor(keep, device=device, dtype=torch.long)])
        types = types.unique()  # sorted
        return types[~torch.isin(types, torch.tensor(drop, device=device, dtype=torch.long))] if drop else types

    def save(self, path: str) -> None:
        torch.save({"candidates": self.candidates, "frequent": self.frequent, "target_size": self.target_size}, path)

    @classmethod
    def load(cls, path: str, source_size: int, target_size: int) -> "Shortlist":
        """The shortlist at ``path``, checked against the dictionaries it will index."""
        if not os.path.isfile(path):
            raise VQLatentError(f"shortlist {path} does not exist (build one with python -m fairseq_vqlatent.shortlist)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            shortlist = cls(state["candidates"].long(), state["frequent"].long(), int(state["target_size"]))
        except Exception as e:  # a truncated file, another kind of file, a pickle weights-only loading refuses
            problem = checkpoint_problem(e)
            if not (problem or "").startswith("refused"):
                problem = f"is not a shortlist ({type(e).__name__}: {first_line(e)})"
            raise VQLatentError(f"shortlist {path} {problem}") from None
        if (shortlist.source_size, shortlist.target_size) != (source_size, target_size):
            raise VQLatentError(
                f"shortlist {path} was built for dictionaries of {shortlist.source_size} source and "
                f"{shortlist.target_size} target types, not {source_size} and {target_size}: build it from this data"
            )
        return shortlist


def dice_shortlist(
    pairs: Iterable[Tuple[Tensor, Tensor]], source_size: int, target_size: int, top_k: int, frequent: int, nspecial: int
) -> Shortlist:
    """Sentence pairs of token ids -> for every source type its top_k target types by Dice
    coefficient, and the ``frequent`` target types found in most sentences. Special
    symbols (ids below nspecial) are neither counted nor listed."""
    source_count = torch.zeros(source_size)
    target_count = torch.zeros(target_size)
    keys = []
    for src, tgt in pairs:
        s, t = src[src >= nspecial].unique(), tgt[tgt >= nspecial].unique()
        source_count[s] += 1
        target_count[t] += 1
        keys.append((s.unsqueeze(1) * target_size + t.unsqueeze(0)).flatten())
    if not keys:
        raise VQLatentError("no sentence pairs to build a shortlist from")
    pair, together = torch.cat(keys).unique(return_counts=True)
    s, t = pair // target_size, pair % target_size
    dice = 2.0 * together / (source_count[s] + target_count[t])
    order = dice.argsort(descending=True, stable=True)
    order = order[s[order].argsort(stable=True)]  # by source type, best first within each
    s, t = s[order], t[order]
    rank = torch.arange(len(s)) - torch.searchsorted(s, s)  # place within the source type's list
    kept = rank < top_k
    candidates = torch.full((source_size, top_k), -1, dtype=torch.long)
    candidates[s[kept], rank[kept]] = t[kept]
    listed = target_count.argsort(descending=True, stable=True)[:frequent]
    return Shortlist(candidates, listed[target_count[listed] > 0].sort().values, target_size)


def read_pairs(data: str, subset: str, source: str, target: str):
    """-> (source dictionary, target dictionary, iterator of (source ids, target ids))."""
    from fairseq.data import Dictionary, data_utils

    dicts, sides = [], []
    for lang in (source, target):
        path = os.path.join(data, f"dict.{lang}.txt")
        if not os.path.isfile(path):
            raise VQLatentError(f"{path} does not exist: is {data} a fairseq-preprocess output for {source}-{target}?")
        dicts.append(Dictionary.load(path))
    for lang, d in zip((source, target), dicts):
        prefix = os.path.join(data, f"{subset}.{source}-{target}.{lang}")
        side = data_utils.load_indexed_dataset(prefix, d)
        if side is None:
            raise VQLatentError(f"{prefix}.bin/.idx do not exist: no binarised {subset} split in {data}")
        sides.append(side)
    if len(sides[0]) != len(sides[1]):
        raise VQLatentError(f"{subset} has {len(sides[0])} source and {len(sides[1])} target sentences")
    return dicts[0], dicts[1], ((sides[0][i], sides[1][i]) for i in range(len(sides[0])))


def main(argv=None) -> int:
    from .errors import install_excepthook

    install_excepthook()
    p = argparse.ArgumentParser(prog="python -m fairseq_vqlatent.shortlist", description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="fairseq-preprocess output (dict.*.txt, SUBSET.*.bin/idx)")
    p.add_argument("output", help="where to write the shortlist (.pt)")
    p.add_argument("-s", "--source-lang", default="en")
    p.add_argument("-t", "--target-lang", default="de")
    p.add_argument("--subset", default="train")
    p.add_argument("--top-k", type=int, default=50, help="candidates per source type")
    p.add_argument("--frequent", type=int, default=500, help="most frequent target types, always allowed")
    a = p.parse_args(argv)
    if a.top_k < 1 or a.frequent < 0:
        p.error("--top-k must be at least 1 and --frequent at least 0")
    if not os.path.isdir(os.path.dirname(os.path.abspath(a.output))):
        p.error(f"the directory of {a.output} does not exist")
    try:
        src_dict, tgt_dict, pairs = read_pairs(a.data, a.subset, a.source_lang, a.target_lang)
        shortlist = dice_shortlist(pairs, len(src_dict), len(tgt_dict), a.top_k, a.frequent, tgt_dict.nspecial)
    except VQLatentError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    shortlist.save(a.output)
    listed = int((shortlist.candidates >= 0).sum())
    print(f"{a.output}: {listed} candidates for {int((shortlist.candidates[:, 0] >= 0).sum())} source types "
          f"(top {a.top_k}), {len(shortlist.frequent)} frequent types, of {len(tgt_dict)} target types")
    return 0


if __name__ == "__main__":
    sys.exit(main())
