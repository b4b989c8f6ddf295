"""One-shot decoding through latent codes.

    encode x -> decode codes with the prior (greedy or beam, until end-of-latents
    or ceil((a|x| + b) / 2^n_c) codes) -> embed codes -> decompress -> one decoder
    pass -> argmax -> the sentence ends at the first EOS of its last block.

Greedy code search runs the prior's incremental state directly. It stops a
sentence when end-of-latents is more probable than all codes together
(``stop="mass"``), not merely more probable than the single likeliest code
(``stop="argmax"``): the prior is trained on soft-EM targets spread over several
codes, so its mass per code is small and an argmax stop ends sentences early.
Beam search (--latent-beam > 1) is fairseq's beam search, run on the same
incremental state (modules/prior_search.py).

Noisy parallel decoding (--latent-candidates N, Gu et al. 2018) decodes N code
sequences per sentence in the same decoder pass: the greedy path and N - 1
samples from the prior, or the N best of the latent beam; a sequence drawn twice
is decoded and scored once. The candidate kept is
the one with the best mean token log-probability, under the one-shot decoder
itself or, with --rescore-teacher, under the autoregressive teacher (one
batched forward pass, teacher_scorer.py).

Training puts EOS only in a sentence's last latent block and fills that block
after the EOS with EOS (criterions/vqlatent_loss.py), so decoding allows EOS only
there. A one-shot decoder's typical error is the same word at neighbouring
positions ("einem einem einem"): each position is chosen without seeing its
neighbours' choices. Unless ``allow_repeats``, each position takes the best token
other than the one just emitted. Deleting repeats afterwards, as NAT papers do
(Lee et al. 2018, Gu et al. 2018), shortens the output: a third of the tokens of
a 300-update model, which then loses more to the brevity penalty than it gains
(benchmarks/results/decoding-rules-multi30k.md). Hypotheses come in fairseq's
format, so fairseq-generate and fairseq-interactive print and score them as usual.

With --latent-onnx the encoder, the prior's steps and the decoder pass run as ONNX
Runtime graphs (onnx_decoding.py); every search and rule above stays as it is.
"""

import contextlib
import math
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .errors import VQLatentError
from .modules import lean_transformer
from .modules.ctc import ctc_survivors
from .modules.prior_search import beam_search, prior_steps
from .teacher_scorer import TeacherScorer

if TYPE_CHECKING:  # imported at run time, it would warn under `python -m fairseq_vqlatent.shortlist`
    from .onnx_decoding import OnnxDecoding
    from .shortlist import Shortlist


# Batches of at most this many rows are decoded in one padded pass, not one pass per code
# count: the decoder pass of 8 candidates of one sentence took 27.5 ms instead of 33-40 ms
# (benchmarks/results/profile-multi30k.md).
ONE_PASS_ROWS = 16


class LatentGenerator(nn.Module):
    def __init__(
        self,
        models,
        tgt_dict,
        latent_beam: int = 1,
        max_len_a: float = 0.0,
        max_len_b: int = 200,
        allow_empty_sources: bool = False,
        stop: str = "mass",
        candidates: int = 1,
        candidates_from: str = "sample",
        scorer: Optional[TeacherScorer] = None,
        allow_repeats: bool = False,
        blank_penalty: float = 2.0,  # = --ctc-blank-penalty's default
        shortlist: Optional["Shortlist"] = None,
        fairseq_layers: bool = False,
        bf16: bool = False,
        onnx: bool = False,
    ):
        super().__init__()
        if len(models) != 1:
            raise VQLatentError("ensembles of vqlatent models are not supported: pass one --path")
        self.model = models[0]
        self.tgt_dict = tgt_dict
        self.eos = tgt_dict.eos()  # fairseq-generate strips it from printed output
        self.latent_beam = latent_beam
        if stop not in ("mass", "median", "argmax"):
            raise VQLatentError(f"unknown latent stop rule {stop!r} (mass, median or argmax)")
        self.stop = stop
        if candidates < 1:
            raise VQLatentError(f"--latent-candidates must be at least 1, got {candidates}")
        if candidates_from not in ("sample", "beam"):
            raise VQLatentError(f"unknown candidate source {candidates_from!r} (sample or beam)")
        self.candidates, self.candidates_from, self.scorer = candidates, candidates_from, scorer
        self.allow_repeats = allow_repeats
        self.blank_penalty = blank_penalty
        if shortlist is not None and self.model.ctc_blank is None:
            raise VQLatentError("--latent-shortlist needs a CTC output decoder (a model trained with --ctc-upsample)")
        self.shortlist = shortlist
        self.fairseq_layers = fairseq_layers
        if onnx and (bf16 or fairseq_layers):
            raise VQLatentError("--latent-onnx runs its own float32 graphs: drop --latent-bf16 and --latent-fairseq-layers")
        # The graphs hold the weights of the moment they are exported (onnx_decoding.py): here for
        # a model in eval mode (fairseq-generate, before its timer starts), and validation during
        # training turns the option off.
        self.onnx = onnx
        self._onnx_sessions: Optional["OnnxDecoding"] = None
        if onnx and not self.model.training:
            self._sessions()
        if bf16:
            cast_for_bf16_inference(self.model)
        self.max_len_a = max_len_a
        self.max_len_b = max_len_b
        # Validation (--eval-bleu) must not stop training over an empty line; the CLIs refuse one.
        self.allow_empty_sources = allow_empty_sources
        self.banned = [tgt_dict.pad(), tgt_dict.bos()]  # never emitted

    def max_latents(self, src_length: int) -> int:
        """ceil((a |x| + b) / 2^n_c): the code budget for a source of this length."""
        return max(1, math.ceil((self.max_len_a * src_length + self.max_len_b) / self.model.compression))

    # no_grad, not inference_mode: under --eval-bleu, caches built here (sinusoidal
    # positions) are reused by training, which cannot save inference tensors.
    @torch.no_grad()
    def generate(self, models, sample, prefix_tokens=None, constraints=None, **unused) -> List[List[Dict]]:
        if prefix_tokens is not None or constraints is not None:
            raise VQLatentError("one-shot latent decoding supports neither --prefix-size nor --constraints")
        net_input = sample["net_input"]
        src_tokens, src_lengths = net_input["src_tokens"], net_input["src_lengths"]
        if not self.allow_empty_sources:
            self._check_sources(sample, src_lengths)
        with lean_transformer.fairseq_layers() if self.fairseq_layers else contextlib.nullcontext():
            return self._generate(models[0] if models else self.model, sample)

    def _generate(self, model, sample) -> List[List[Dict]]:
        net_input = sample["net_input"]
        src_tokens, src_lengths = net_input["src_tokens"], net_input["src_lengths"]
        encoder_out = self._sessions().encode(src_tokens) if self.onnx else model.encoder(src_tokens, src_lengths=src_lengths)
        N = self.candidates
        if N == 1:
            codes, latent_mask = self.decode_codes(model, encoder_out, src_tokens, src_lengths)  # [B, L]
            return [[h] for h in self.decode_by_length(model, codes, latent_mask, encoder_out, src_tokens)]
        # every sentence's candidates side by side, for the search
        sentence = torch.arange(src_tokens.size(0), device=src_tokens.device).repeat_interleave(N)  # [B * N]
        each = model.encoder.reorder_encoder_out(encoder_out, sentence)
        codes, latent_mask = self.decode_codes(model, encoder_out, src_tokens, src_lengths, each)  # [B * N, L]
        # Samples of a peaked prior repeat each other: each sentence's distinct code
        # sequences are decoded and scored once.
        keyed = torch.cat([sentence.unsqueeze(1), codes.masked_fill(latent_mask, -1)], 1)
        distinct, inverse = torch.unique(keyed, dim=0, return_inverse=True)  # [M, 1 + L], [B * N]
        rows = torch.full((len(distinct),), len(keyed), device=codes.device).scatter_reduce_(
            0, inverse, torch.arange(len(keyed), device=codes.device), "amin")  # a row of each, [M]
        hyps = self.decode_by_length(model, codes[rows], latent_mask[rows],
                                     model.encoder.reorder_encoder_out(encoder_out, sentence[rows]),
                                     src_tokens[sentence[rows]])
        if self.scorer is not None:
            scorer = self.scorer.to(encoder_out["encoder_out"][0])
            fitness = scorer.score(src_tokens, src_lengths, [h["tokens"] for h in hyps], sentence[rows])
        else:
            fitness = torch.stack([h["score"] for h in hyps])
        best = inverse.view(-1, N).gather(1, fitness[inverse].view(-1, N).argmax(1, keepdim=True)).squeeze(1)
        return [[hyps[i]] for i in best.tolist()]

    def decode_by_length(
        self, model, codes: Tensor, latent_mask: Tensor, encoder_out: dict, src_tokens: Optional[Tensor] = None
    ) -> List[Dict]:
        """codes [B, L], latent padding mask [B, L] -> one hypothesis per row, from one
        decoder pass per code count. A batch padded to its longest code sequence spends
        about 30% of the decoder's positions on padding (Multi30k test, batch 128), and
        the decoder's work grows with its positions; a sentence decodes alike alone
        and in a batch, so grouping changes no output. Up to ONE_PASS_ROWS rows take
        one padded pass: there a pass costs its calls more than its positions. With a shortlist each group's
        decoder scores the types its sources [B, S] list."""
        lengths = (~latent_mask).sum(1)
        counts = lengths.unique().tolist() if codes.size(0) > ONE_PASS_ROWS else [int(lengths.max())]
        hyps: List[Optional[Dict]] = [None] * codes.size(0)
        dtype = encoder_out["encoder_out"][0].dtype
        for n in counts:
            if len(counts) == 1:
                rows, enc = torch.arange(codes.size(0), device=codes.device), encoder_out
            else:
                rows = lengths.eq(n).nonzero().squeeze(1)
                enc = model.encoder.reorder_encoder_out(encoder_out, rows)
            vocab = None
            if self.shortlist is not None:  # the blank, never what is never emitted
                vocab = self.shortlist.for_sources(
                    src_tokens[rows], keep=[model.ctc_blank], drop=self.banned + [self.eos]
                )
            if self.onnx:
                logits, out_mask = self._sessions().decode(codes[rows, :n], latent_mask[rows, :n], enc, vocab)
            else:
                z_q = model.embed_codes(codes[rows, :n]).to(dtype)
                logits, out_mask = model.decode_latents(z_q, latent_mask[rows, :n], enc, vocab=vocab)
            group = self.hypotheses(logits, out_mask, model.compression, model.ctc_blank, vocab)
            for row, hyp in zip(rows.tolist(), group):
                hyps[row] = hyp
        return hyps

    def hypotheses(
        self, logits: Tensor, out_mask: Tensor, block: int, ctc_blank: Optional[int] = None, vocab: Optional[Tensor] = None
    ) -> List[Dict]:
        """The one-shot decoder's logits [B, T, V] -> one fairseq hypothesis per row. CTC
        models may give the logits of a shortlist's types ``vocab`` [V'] alone (sorted,
        without the banned types and EOS)."""
        if ctc_blank is not None:
            return self._ctc_hypotheses(logits, out_mask, ctc_blank, vocab)
        lprobs = torch.log_softmax(logits.float(), -1)
        lprobs[..., self.banned] = float("-inf")
        lprobs[..., self.eos].masked_fill_(self._eos_banned(out_mask, block), float("-inf"))
        if self.allow_repeats:
            scores, tokens = lprobs.max(-1)  # [B, T]
        else:
            scores, tokens = argmax_without_repeats(lprobs, keep=self.eos)
        eos_scores = lprobs[..., self.eos]
        return [
            self._hypothesis(tokens[b], scores[b], eos_scores[b], int((~out_mask[b]).sum()))
            for b in range(tokens.size(0))
        ]

    def _ctc_hypotheses(self, logits: Tensor, out_mask: Tensor, blank: int, vocab: Optional[Tensor]) -> List[Dict]:
        """Best path: the argmax at every position, repeats merged, blanks dropped, then EOS.
        A CTC decoder never learnt to say EOS (modules/ctc.py), so it may not. The best path
        of the log-probabilities is that of the logits, so neither is normalised over [B, T, V]:
        a log-sum-exp per position turns the chosen logits into log-probabilities, and the
        penalty and the bans go into ``logits`` in place. Under --latent-bf16 all of it reads
        the bfloat16 logits, which halves the time this takes at batch 128."""
        log_z = torch.logsumexp(logits, -1).float()  # [B, T]
        if vocab is None:
            logits[..., self.banned + [self.eos]] = float("-inf")
        else:  # columns are the shortlist's types
            blank = int(torch.searchsorted(vocab, blank))
        logits[..., blank] -= self.blank_penalty  # --ctc-blank-penalty: longer outputs
        best, tokens = logits.max(-1)  # [B, T]
        scores = best.float() + self.blank_penalty * tokens.eq(blank) - log_z  # the path's own log-probabilities
        if vocab is not None:
            tokens, blank = vocab[tokens], int(vocab[blank])
        # Every row at once: per-row tensor ops cost more than the arithmetic at batch 128.
        keep = ctc_survivors(tokens, blank) & ~out_mask  # [B, T]
        counts = keep.sum(1).tolist()
        means = scores.masked_fill(out_mask, 0.0).sum(1) / (~out_mask).sum(1)  # the path's own score: blanks and repeats count
        eos = tokens.new_tensor([self.eos])
        return [
            self._fairseq_hypothesis(torch.cat([words, eos]), torch.cat([path, mean.view(1)]), mean)
            for words, path, mean in zip(tokens[keep].split(counts), scores[keep].split(counts), means)
        ]

    @staticmethod
    def _eos_banned(out_mask: Tensor, block: int) -> Tensor:
        """[B, T] True where no sentence ends: before its last latent block, and at
        position 0 (a sentence says at least one token)."""
        lengths = (~out_mask).sum(1, keepdim=True)  # L_b * 2^n_c
        positions = torch.arange(out_mask.size(1), device=out_mask.device).unsqueeze(0)
        return (positions < lengths - block) | (positions == 0)

    def decode_codes(
        self, model, encoder_out: dict, src_tokens: Tensor, src_lengths: Tensor, each: Optional[dict] = None
    ):
        """-> codes [B * N, L] (0 at padding), latent padding mask [B * N, L]: N candidates
        per sentence, consecutive, the search's best first. ``each`` is encoder_out with
        every sentence repeated N times, when the caller has it already."""
        # Each sentence's own budget, so that it decodes alike alone and in any batch (and as
        # vqlatent-translate decodes it); beam search keeps one budget for the batch.
        budgets = torch.tensor([self.max_latents(int(n)) for n in src_lengths.tolist()], device=src_tokens.device)
        budget = int(budgets.max())
        model.check_latent_length(budget)
        encoder_out, each = (in_dtype_of(model.prior, e) for e in (encoder_out, each))
        N = self.candidates
        if N > 1 and self.candidates_from == "sample":
            B = src_tokens.size(0)
            if each is None:
                order = torch.arange(B, device=src_tokens.device).repeat_interleave(N)
                each = model.encoder.reorder_encoder_out(encoder_out, order)
            sample = torch.arange(B * N, device=src_tokens.device) % N != 0  # candidate 0 is the greedy path
            return self.greedy_codes(model, each, budgets.repeat_interleave(N), sample)
        if self.latent_beam == 1 and N == 1:
            return self.greedy_codes(model, encoder_out, budgets)
        return self.beam_codes(model, encoder_out, budget, nbest=N)

    def greedy_codes(self, model, encoder_out: dict, budgets: Tensor, sample: Optional[Tensor] = None):
        """The prior's greedy path over its incremental state; at least one code each, at most
        ``budgets`` [B]. Rows where ``sample`` [B] is True draw each step (a code or the end)
        from the prior instead."""
        prior, d = model.prior, model.code_dict
        end = prior.end_token
        B = encoder_out["encoder_out"][0].size(1)
        device = encoder_out["encoder_out"][0].device
        if sample is not None:
            not_drawn = torch.ones(len(d), dtype=torch.bool, device=device)
            not_drawn[prior.codes_to_tokens(torch.arange(prior.num_codes, device=device))] = False
            not_drawn[end] = False
        prev = torch.full((B, 1), end, dtype=torch.long, device=device)
        budget = int(budgets.max())
        lengths = budgets.clone()
        running = torch.ones(B, dtype=torch.bool, device=device)
        steps = self._prior_steps(prior, encoder_out, budget)
        survival = torch.ones(B, device=device)  # P(not stopped before this step), along the path
        for step in range(budget):
            logits = steps.step(prev[:, -1]).float()  # [B, len(code dictionary)]
            token = prior.codes_to_tokens(prior.code_logits(logits).argmax(-1))
            ends = self._stops(logits, end, survival) if step > 0 else torch.zeros_like(running)
            if sample is not None:
                drawn = torch.multinomial(self._drawable(logits, not_drawn, end, step), 1).squeeze(1)
                token = torch.where(sample, drawn, token)
                ends = torch.where(sample, drawn == end, ends)
            ends |= budgets <= step
            ends &= running
            lengths[ends] = step
            running &= ~ends
            if not running.any():
                break
            prev = torch.cat([prev, token.unsqueeze(1)], dim=1)
        L = int(lengths.max())
        latent_mask = torch.arange(L, device=device).unsqueeze(0) >= lengths.unsqueeze(1)
        codes = prior.tokens_to_codes(prev[:, 1 : L + 1]).masked_fill(latent_mask, 0)
        return codes, latent_mask

    def _stops(self, logits: Tensor, eos: int, survival: Tensor) -> Tensor:
        """[B, len(code dictionary)] -> [B] whether the greedy path ends here; ``survival`` [B]
        (the probability of having gone on so far) is updated in place."""
        p_end = torch.softmax(logits, -1)[:, eos]
        survival.mul_(1 - p_end)
        if self.stop == "median":
            return survival <= 0.5
        if self.stop == "mass":
            return p_end > 0.5
        return logits.argmax(-1) == eos

    @staticmethod
    def _drawable(logits: Tensor, not_drawn: Tensor, eos: int, step: int) -> Tensor:
        """[B, len(code dictionary)] -> probabilities over the codes and, after the first step, the end."""
        logits = logits.masked_fill(not_drawn, float("-inf"))
        if step == 0:
            logits[:, eos] = float("-inf")  # a sentence has at least one code
        return torch.softmax(logits, -1)

    def beam_codes(self, model, encoder_out: dict, budget: int, nbest: int = 1):
        """-> codes [B * nbest, L], latent padding mask [B * nbest, L]: each sentence's ``nbest``
        best hypotheses of a beam of max(--latent-beam, nbest) (modules/prior_search.py); a
        sentence with fewer repeats its last."""
        prior, k = model.prior, max(self.latent_beam, nbest)
        B = encoder_out["encoder_out"][0].size(1)
        device = encoder_out["encoder_out"][0].device
        each = model.encoder.reorder_encoder_out(encoder_out, torch.arange(B, device=device).repeat_interleave(k))
        hyps = beam_search(self._prior_steps(prior, each, budget), B, k, budget, prior.end_token, device)
        best = [h[min(i, len(h) - 1)][0] for h in hyps for i in range(nbest)]
        lengths = torch.tensor([len(t) for t in best], device=device)
        latent_mask = torch.arange(int(lengths.max()), device=device).unsqueeze(0) >= lengths.unsqueeze(1)
        codes = torch.zeros(latent_mask.shape, dtype=torch.long, device=device)
        codes[~latent_mask] = prior.tokens_to_codes(torch.cat(best))
        return codes, latent_mask

    def _prior_steps(self, prior: nn.Module, encoder_out: dict, budget: int):
        return self._sessions().prior_steps(encoder_out) if self.onnx else prior_steps(prior, encoder_out, budget)

    def _sessions(self) -> "OnnxDecoding":
        if self._onnx_sessions is None:
            from .onnx_decoding import OnnxDecoding  # onnxruntime is needed only here

            self._onnx_sessions = OnnxDecoding(self.model, shortlist=self.shortlist is not None)
            if self.scorer is not None:
                self.scorer.use_onnx()
        return self._onnx_sessions

    def _hypothesis(self, tokens: Tensor, scores: Tensor, eos_scores: Tensor, length: int) -> Dict:
        """Cut at the first EOS; a sentence that never ends gets an EOS appended."""
        eos = self.tgt_dict.eos()
        ends = (tokens[:length] == eos).nonzero()
        if len(ends) > 0:
            n = int(ends[0]) + 1
            tokens, scores = tokens[:n], scores[:n]
        else:
            tokens = torch.cat([tokens[:length], tokens.new_tensor([eos])])
            scores = torch.cat([scores[:length], eos_scores[length - 1 : length]])
        return self._fairseq_hypothesis(tokens, scores, scores.mean())

    @staticmethod
    def _fairseq_hypothesis(tokens: Tensor, positional_scores: Tensor, score: Tensor) -> Dict:
        return {
            "tokens": tokens,
            "score": score,
            "positional_scores": positional_scores,
            "alignment": None,
            "attention": None,
        }

    def _check_sources(self, sample, src_lengths: Tensor) -> None:
        empty = (src_lengths <= 1).nonzero().flatten()  # only the EOS
        if len(empty) > 0:
            ids = sample["id"][empty].tolist() if "id" in sample else empty.tolist()
            raise VQLatentError(
                f"empty source sentence (line id {ids[0]}{' and others' if len(ids) > 1 else ''}): "
                "there is nothing to translate; remove empty lines from the input"
            )


def argmax_without_repeats(lprobs: Tensor, keep: int) -> Tuple[Tensor, Tensor]:
    """[B, T, V] -> (scores [B, T], tokens [B, T]): the argmax at each position, or the
    runner-up where the argmax is the token just chosen before it (token ``keep``, EOS,
    may repeat). Left to right, since a replaced token frees its successor."""
    top = lprobs.topk(2, dim=-1)
    scores, tokens = top.values[..., 0].clone(), top.indices[..., 0].clone()
    if not (tokens[:, 1:] == tokens[:, :-1]).any():
        return scores, tokens
    for t in range(1, tokens.size(1)):
        repeat = (tokens[:, t] == tokens[:, t - 1]) & (tokens[:, t] != keep)
        tokens[:, t] = torch.where(repeat, top.indices[:, t, 1], tokens[:, t])
        scores[:, t] = torch.where(repeat, top.values[:, t, 1], scores[:, t])
    return scores, tokens


def cast_for_bf16_inference(model: nn.Module) -> None:
    """In place, as fairseq-generate's --fp16 casts: the encoder and the decoder pass in
    bfloat16, the prior in float32. Large matrix products run several times faster in
    bfloat16 on CPUs with AMX or AVX-512 BF16, but the prior's batch-1 steps are
    matrix-vector products, which run slower (benchmarks/results/decoding-speed-multi30k.md)."""
    model.to(torch.bfloat16)
    model.prior.float()


def in_dtype_of(module: nn.Module, encoder_out: Optional[dict]) -> Optional[dict]:
    """encoder_out with its states in the floating point type of ``module``'s parameters."""
    dtype = next(module.parameters()).dtype
    if encoder_out is None or encoder_out["encoder_out"][0].dtype == dtype:
        return encoder_out
    return {**encoder_out, "encoder_out": [encoder_out["encoder_out"][0].to(dtype)]}

