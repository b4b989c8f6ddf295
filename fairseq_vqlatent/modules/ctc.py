"""CTC output for the one-shot decoder (optional, --ctc-upsample k).

Cross-entropy at fixed positions marks a whole sentence wrong when the decoder
puts one word a slot early: every later word is then scored against its
neighbour. Connectionist temporal classification (Graves et al. 2006), as
Libovický and Helcl (2018) and Gu and Kong (2021) use it for one-shot
translation, scores every monotonic alignment of the target to the decoder's
positions instead: the decoder reads each decompressed position k times, emits
a word or a blank at each of its L * 2^n_c * k positions, and the output is
what remains after merging repeated words and dropping blanks.

The blank is the dictionary's <unk>: subword targets never contain it, a
translation should never say it, and a new symbol would change the dictionary
the teacher and the binarised data share.
"""

from dataclasses import dataclass
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def upsample(x: Tensor, padding_mask: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """x [B, T, D], padding_mask [B, T] -> each position k times: [B, T * k, D], [B, T * k]."""
    return x.repeat_interleave(k, dim=1), padding_mask.repeat_interleave(k, dim=1)


def ctc_targets(target: Tensor, pad: int, eos: int) -> Tuple[Tensor, Tensor]:
    """target [B, T] (right-padded, EOS-terminated) -> (words [B, T] with EOS turned to
    padding, lengths [B]). The EOS is not emitted: the output ends where the words do."""
    words = target.masked_fill(target.eq(eos), pad)
    return words, words.ne(pad).sum(1)


def ctc_loss(
    lprobs: Tensor, padding_mask: Tensor, target: Tensor, blank: int, pad: int, eos: int, epsilon: float
) -> Tuple[Tensor, Tensor, int]:
    """lprobs [B, T_out, V], padding_mask [B, T_out], target [B, T] -> (loss, nll, words):
    the CTC negative log-likelihood summed over sentences, smoothed as label smoothing
    smooths cross-entropy (a share epsilon of the loss is the mean -log p over the
    vocabulary at each real position, rescaled to the target's length), and the number
    of target words, fairseq's sample size. A sentence whose words cannot fit its
    positions scores 0."""
    lattice = Lattice.build(lprobs, padding_mask, target, blank, pad, eos)
    score = lattice.forward(torch.logsumexp)  # [B, S]
    end = torch.logsumexp(lattice.final(score), -1)  # [B]
    nll = torch.where(end > NEVER / 2, -end, torch.zeros_like(end)).sum()
    input_lengths = (~padding_mask).sum(1)
    uniform = -lprobs.mean(-1).masked_fill(padding_mask, 0.0)  # [B, T_out]
    smooth = (uniform.sum(1) * lattice.lengths / input_lengths.clamp_min(1)).sum()
    return (1.0 - epsilon) * nll + epsilon * smooth, nll, int(lattice.lengths.sum())


def ctc_survivors(tokens: Tensor, blank: int) -> Tensor:
    """tokens [..., T] (argmax paths) -> [..., T] True at the positions that survive
    the collapse: the first of each run of equal tokens, blanks dropped."""
    first = torch.ones_like(tokens, dtype=torch.bool)
    first[..., 1:] = tokens[..., 1:] != tokens[..., :-1]
    return first & tokens.ne(blank)


def ctc_collapse(tokens: Tensor, blank: int) -> List[int]:
    """tokens [T] (one sentence's argmax path) -> indices [i ...] of the positions that survive."""
    return ctc_survivors(tokens, blank).nonzero().flatten().tolist()


def best_alignment(lprobs: Tensor, padding_mask: Tensor, target: Tensor, blank: int, pad: int, eos: int) -> Tensor:
    """The most probable alignment (Viterbi): lprobs [B, T_out, V], padding_mask [B, T_out],
    target [B, T] -> [B, T_out], the target word or the blank that each real position
    emits on the best path that reads the target (padding where padding). Glancing
    (Gu and Kong 2021) shows the decoder words at their places on this path."""
    lattice = Lattice.build(lprobs, padding_mask, target, blank, pad, eos)
    moves = []
    score = lattice.forward(lambda s, dim: _max_and_record(s, dim, moves))
    ends = lattice.final(score)  # [B, 2]: the last word, the blank after it
    state = torch.where(ends[:, 0] >= ends[:, 1], (lattice.last - 1).clamp_min(0), lattice.last)
    B, T_out = padding_mask.shape
    aligned = lattice.labels.new_full((B, T_out), pad)
    n = (~padding_mask).sum(1)
    for t in range(T_out - 1, -1, -1):
        real = t < n
        aligned[:, t] = torch.where(real, lattice.labels.gather(1, state.unsqueeze(1)).squeeze(1), pad)
        if t > 0:  # moves[t - 1] took step t - 1 to step t: 0 stay, 1 from the state before, 2 from two before
            back = moves[t - 1].gather(1, state.unsqueeze(1)).squeeze(1)
            state = torch.where(real, state - back, state)
    return aligned


def _max_and_record(scores: Tensor, dim: int, moves: list) -> Tensor:
    best, move = scores.max(dim)
    moves.append(move)
    return best


NEVER = -1e9  # log-score of an unreachable state: finite, so that no gradient is NaN


@dataclass
class Lattice:
    """The CTC lattice of a batch (Graves et al. 2006): states blank, y_1, blank, y_2, ...,
    y_S, blank; a path moves at each real position to the same state, the next, or (to a
    word unlike the one two states back) skips the blank between."""

    labels: Tensor  # [B, 2S + 1] the token each state emits
    emit: Tensor  # [B, T_out, 2S + 1] its log-probability at each position
    skip: Tensor  # [B, 2S + 1] True where a state may be entered from two states back
    padding_mask: Tensor  # [B, T_out]
    lengths: Tensor  # [B] target words
    last: Tensor  # [B] the state of the blank after the last word (0 for an empty target)

    @classmethod
    def build(cls, lprobs: Tensor, padding_mask: Tensor, target: Tensor, blank: int, pad: int, eos: int) -> "Lattice":
        words, lengths = ctc_targets(target, pad, eos)
        B, T_out, _ = lprobs.shape
        labels = words.new_full((B, 2 * words.size(1) + 1), blank)
        labels[:, 1::2] = words.masked_fill(words.eq(pad), blank)
        emit = lprobs.gather(2, labels.unsqueeze(1).expand(B, T_out, labels.size(1)))
        skip = torch.zeros_like(labels, dtype=torch.bool)
        skip[:, 2:] = labels[:, 2:].ne(blank) & labels[:, 2:].ne(labels[:, :-2])
        return cls(labels, emit, skip, padding_mask, lengths, 2 * lengths)

    def forward(self, reduce) -> Tensor:
        """Scores [B, 2S + 1] of the paths ending in each state after the last real
        position; ``reduce(scores [B, S, 3], dim)`` merges stay, step and skip:
        logsumexp sums over paths (the loss), max keeps the best (Viterbi)."""
        first = torch.full_like(self.emit[:, 0], NEVER)
        score = torch.cat([self.emit[:, 0, :2], first[:, 2:]], dim=1)
        for t in range(1, self.emit.size(1)):
            step = F.pad(score, (1, 0), value=NEVER)[:, :-1]
            jump = F.pad(score, (2, 0), value=NEVER)[:, :-2].masked_fill(~self.skip, NEVER)
            merged = reduce(torch.stack([score, step, jump], -1), -1) + self.emit[:, t]
            score = torch.where(self.padding_mask[:, t : t + 1], score, merged)  # padding changes nothing
        return score

    def final(self, score: Tensor) -> Tensor:
        """[B, 2S + 1] -> [B, 2]: the scores of ending on the last word and on the blank after it."""
        word = score.gather(1, (self.last - 1).clamp_min(0).unsqueeze(1))
        word = torch.where(self.lengths.unsqueeze(1) > 0, word, torch.full_like(word, NEVER))
        return torch.cat([word, score.gather(1, self.last.unsqueeze(1))], dim=1)
