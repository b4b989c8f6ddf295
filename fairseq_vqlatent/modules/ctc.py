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
    of target words, fairseq's sample size."""
    words, lengths = ctc_targets(target, pad, eos)
    input_lengths = (~padding_mask).sum(1)
    nll = F.ctc_loss(
        lprobs.transpose(0, 1),  # [T_out, B, V]
        words,
        input_lengths,
        lengths,
        blank=blank,
        reduction="sum",
        zero_infinity=True,  # a target longer than its positions can hold scores 0, not inf
    )
    uniform = -lprobs.mean(-1).masked_fill(padding_mask, 0.0)  # [B, T_out]
    smooth = (uniform.sum(1) * lengths / input_lengths.clamp_min(1)).sum()
    return (1.0 - epsilon) * nll + epsilon * smooth, nll, int(lengths.sum())


def ctc_collapse(tokens: Tensor, blank: int) -> List[int]:
    """tokens [T] (one sentence's argmax path) -> indices [i ...] of the positions that
    survive: the first of each run of equal tokens, blanks dropped."""
    first = torch.ones_like(tokens, dtype=torch.bool)
    first[1:] = tokens[1:] != tokens[:-1]
    return (first & tokens.ne(blank)).nonzero().flatten().tolist()


def best_alignment(lprobs: Tensor, padding_mask: Tensor, target: Tensor, blank: int, pad: int, eos: int) -> Tensor:
    """The most probable alignment (Viterbi): lprobs [B, T_out, V], padding_mask [B, T_out],
    target [B, T] -> [B, T_out], the target word or the blank that each real position
    emits on the best path that reads the target (padding where padding). Glancing
    (Gu and Kong 2021) shows the decoder words at their places on this path."""
    words, lengths = ctc_targets(target, pad, eos)
    B, T_out, _ = lprobs.shape
    S = 2 * words.size(1) + 1  # blank, y_1, blank, y_2, ..., blank
    labels = words.new_full((B, S), blank)
    labels[:, 1::2] = words.masked_fill(words.eq(pad), blank)
    emit = lprobs.gather(2, labels.unsqueeze(1).expand(B, T_out, S))  # [B, T_out, S]
    # A word may follow the word two states back only when the two differ (else a blank must part them).
    skip = torch.zeros(B, S, dtype=torch.bool, device=lprobs.device)
    skip[:, 2:] = labels[:, 2:].ne(blank) & labels[:, 2:].ne(labels[:, :-2])
    neg = torch.finfo(lprobs.dtype).min / 4
    score = torch.full((B, S), neg, dtype=lprobs.dtype, device=lprobs.device)
    score[:, :2] = emit[:, 0, :2]
    back = torch.zeros(B, T_out, S, dtype=torch.long, device=lprobs.device)  # 0 stay, 1 step, 2 skip
    for t in range(1, T_out):
        step = F.pad(score, (1, 0), value=neg)[:, :-1]
        jump = F.pad(score, (2, 0), value=neg)[:, :-2].masked_fill(~skip, neg)
        best, move = torch.stack([score, step, jump], -1).max(-1)
        real = ~padding_mask[:, t : t + 1]  # padding positions carry the score unchanged
        score = torch.where(real, best + emit[:, t], score)
        back[:, t] = torch.where(real, move, back[:, t])
    # The path ends on the last word or the blank after it.
    last = 2 * lengths
    ends = torch.stack([score.gather(1, last.unsqueeze(1)), score.gather(1, (last - 1).clamp_min(0).unsqueeze(1))], -1)
    state = torch.where(ends[:, 0, 0] >= ends[:, 0, 1], last, (last - 1).clamp_min(0))
    aligned = labels.new_full((B, T_out), pad)
    n = (~padding_mask).sum(1)
    for t in range(T_out - 1, -1, -1):
        real = t < n
        aligned[:, t] = torch.where(real, labels.gather(1, state.unsqueeze(1)).squeeze(1), aligned[:, t])
        state = torch.where(real, state - back[:, t].gather(1, state.unsqueeze(1)).squeeze(1), state)
    return aligned
