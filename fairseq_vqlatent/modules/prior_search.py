"""Beam search over the latent prior's codes, on an incremental state built once per batch.

The prior runs one step at a time for every row of the batch, through
lean_transformer.IncrementalDecoder or, where that path does not apply
(--latent-fairseq-layers, layers it does not cover), fairseq's own modules with
their incremental state (``FairseqSteps``). Between steps the state is reordered
to the surviving beams and shrunk to the unfinished sentences. There is no wrapper
model and no SequenceGenerator per batch.

The search is fairseq's (sequence_generator.py with search.BeamSearch), so that
``--latent-beam`` means what ``--beam`` means to a fairseq user: each step takes the
2k best extensions of each sentence; an end-of-latents among the first k finishes a
hypothesis, scored by its summed log-probability over its length (codes and the
end); the first k others go on; a sentence is done with k finished hypotheses or at
the budget, where only the end is allowed; at least one code is emitted. The tests
compare its codes with SequenceGenerator's (tests/test_prior_search.py).
"""

import math
from typing import List, Optional, Protocol, Tuple

import torch
from torch import Tensor, nn

from . import lean_transformer


class PriorSteps(Protocol):
    def step(self, tokens: Tensor) -> Tensor:
        """tokens [B] -> logits [B, V] of the next token."""

    def reorder(self, rows: Tensor) -> None:
        """Keep the rows ``rows`` [B'] of the state, in that order."""


class FairseqSteps:
    """The prior through fairseq's modules and their incremental state."""

    def __init__(self, prior: nn.Module, encoder_out: dict):
        self.prior, self.encoder_out, self.state = prior, encoder_out, {}
        self.prev: Optional[Tensor] = None  # [B, t]: fairseq's layers read the step's position from its length

    def step(self, tokens: Tensor) -> Tensor:
        tokens = tokens.unsqueeze(1)
        self.prev = tokens if self.prev is None else torch.cat([self.prev, tokens], 1)
        return self.prior(self.prev, encoder_out=self.encoder_out, incremental_state=self.state)[0][:, -1]

    def reorder(self, rows: Tensor) -> None:
        self.prior.reorder_incremental_state_scripting(self.state, rows)
        self.prev = self.prev.index_select(0, rows)
        masks = self.encoder_out["encoder_padding_mask"]
        self.encoder_out = {
            **self.encoder_out,
            "encoder_out": [self.encoder_out["encoder_out"][0].index_select(1, rows)],  # [S, B, D]
            "encoder_padding_mask": [masks[0].index_select(0, rows)] if len(masks) > 0 else [],
        }


def prior_steps(prior: nn.Module, encoder_out: dict, budget: int) -> PriorSteps:
    """The lean path where it applies, fairseq's modules otherwise."""
    if lean_transformer.supports(prior):
        return lean_transformer.IncrementalDecoder(prior, encoder_out, budget + 1)
    return FairseqSteps(prior, encoder_out)


def beam_search(
    steps: PriorSteps, batch: int, beam: int, budget: int, end: int, device: torch.device
) -> List[List[Tuple[Tensor, float]]]:
    """``steps`` over ``batch * beam`` rows (each sentence ``beam`` times, consecutive)
    -> per sentence, ``beam`` finished hypotheses best first: (prior tokens [n] without
    the end, length-normalised score)."""
    k = beam
    tokens = torch.full((batch * k, budget + 2), end, dtype=torch.long, device=device)  # column 0: the start
    scores = torch.zeros(batch * k, budget + 1, device=device)  # cumulative log-probabilities
    finished: List[List[Tuple[Tensor, float]]] = [[] for _ in range(batch)]
    alive = torch.arange(batch, device=device)  # the sentences still searched, in row order
    ignore = torch.zeros(batch, k, dtype=torch.bool, device=device)  # beams that ended already
    for step in range(budget + 1):
        lprobs = torch.log_softmax(steps.step(tokens[:, step]).float(), -1)  # [n * k, V]
        lprobs[lprobs != lprobs] = -math.inf
        if step == budget:  # only the end
            lprobs[:, :end] = -math.inf
            lprobs[:, end + 1 :] = -math.inf
        if step == 0:  # at least one code
            lprobs[:, end] = -math.inf
        n, V = alive.numel(), lprobs.size(1)
        lprobs = lprobs.view(n, k, V)
        if step == 0:  # every beam of a sentence is the same start
            lprobs = lprobs[:, :1]
        else:
            lprobs = lprobs + scores[:, step - 1].view(n, k, 1)
        flat = lprobs.reshape(n, -1)
        cand_scores, cand = flat.topk(min(2 * k, flat.size(1) - 1))  # [n, 2k]
        cand_rows = torch.div(cand, V, rounding_mode="trunc") + (torch.arange(n, device=device) * k).unsqueeze(1)
        cand_tokens = cand.fmod(V)
        ends = cand_tokens.eq(end) & cand_scores.ne(-math.inf)
        ends[:, :k][ignore] = False

        done = _finish(ends[:, :k], cand_rows[:, :k], cand_scores[:, :k], tokens, step, alive, finished, k, budget)
        if len(done) == n:
            break
        if done:
            keep = torch.ones(n, dtype=torch.bool, device=device)
            keep[done] = False
            kept = keep.nonzero().squeeze(1)
            alive, ignore = alive[kept], ignore[kept]
            ends, cand_rows, cand_scores, cand_tokens = ends[kept], cand_rows[kept], cand_scores[kept], cand_tokens[kept]
            n = kept.numel()

        # The first k candidates that neither end nor extend an ended beam go on.
        ends[:, :k] |= ignore
        order = ends.long() * ends.size(1) + torch.arange(ends.size(1), device=device)
        rank, active = order.topk(k, dim=1, largest=False)
        ignore = rank.ge(ends.size(1))
        rows = cand_rows.gather(1, active).view(-1)  # rows of the state before this step, [n * k]
        steps.reorder(rows)
        tokens = tokens.index_select(0, rows)
        tokens[:, step + 1] = cand_tokens.gather(1, active).view(-1)
        scores = scores.index_select(0, rows)
        scores[:, step] = cand_scores.gather(1, active).view(-1)
    for hyps in finished:
        order = torch.sort(torch.tensor([s for _, s in hyps]), descending=True)[1].tolist()
        hyps[:] = [hyps[i] for i in order]
    return finished


def _finish(ends, rows, end_scores, tokens, step, alive, finished, k, budget) -> List[int]:
    """Store the hypotheses that end here (``ends`` [n, k] over the first k candidates,
    their state ``rows`` and cumulative ``end_scores``); -> the positions in ``alive``
    of the sentences this finishes."""
    done = []
    for i, j in ends.nonzero().tolist():
        sentence = finished[int(alive[i])]
        if len(sentence) < k:
            sentence.append((tokens[rows[i, j], 1 : step + 1].clone(), float(end_scores[i, j] / (step + 1))))  # float32, as fairseq
        if (len(sentence) == k or step == budget) and (not done or done[-1] != i):
            done.append(i)
    return done
