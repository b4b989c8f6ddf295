"""The beam search over the prior's codes (modules/prior_search.py) finds what fairseq's
SequenceGenerator finds, on either path through the prior's layers."""

import contextlib

import pytest
import torch

from conftest import padded_sources, sequence_generator_codes, toy_task, trained_prior_model
from fairseq_vqlatent.latent_generator import LatentGenerator
from fairseq_vqlatent.modules import lean_transformer
from fairseq_vqlatent.modules.prior_search import FairseqSteps, beam_search, prior_steps


@pytest.mark.parametrize("lean", [True, False])
@pytest.mark.parametrize("beam, nbest", [(1, 1), (3, 1), (4, 4), (5, 2)])
def test_beam_search_gives_sequence_generators_codes(beam, nbest, lean):
    task = toy_task()
    model, _ = trained_prior_model(task)
    src, lengths = padded_sources(task)
    gen = LatentGenerator([model], task.target_dictionary, latent_beam=beam, max_len_a=0, max_len_b=40)
    budget = gen.max_latents(int(lengths.max()))
    with torch.no_grad():
        enc = model.encoder(src, src_lengths=lengths)
        expected = sequence_generator_codes(model, enc, src, lengths, budget, beam, nbest)
        with contextlib.nullcontext() if lean else lean_transformer.fairseq_layers():
            codes, mask = gen.beam_codes(model, enc, budget, nbest=nbest)
    found = [codes[row][~mask[row]] for row in range(codes.size(0))]
    assert len(found) == nbest * src.size(0)
    for sentence, hyps in enumerate(expected):
        for i, hyp in enumerate(hyps):
            assert torch.equal(found[sentence * nbest + i], model.prior.tokens_to_codes(hyp)), (sentence, i)
    assert len({len(h) for hyps in expected for h in hyps}) > 1  # the budget does not decide every length


def test_the_scores_are_sequence_generators_and_best_first():
    task = toy_task()
    model, _ = trained_prior_model(task)
    src, lengths = padded_sources(task)
    with torch.no_grad():
        enc = model.encoder(src, src_lengths=lengths)
        each = {**enc, "encoder_out": [enc["encoder_out"][0].repeat_interleave(3, 1)],
                "encoder_padding_mask": [enc["encoder_padding_mask"][0].repeat_interleave(3, 0)]}
        hyps = beam_search(prior_steps(model.prior, each, 6), src.size(0), 3, 6, model.prior.end_token, src.device)
        # a hypothesis' score is its tokens' summed log-probability, the end included, over their count
        for row, sentence in enumerate(hyps):
            assert [s for _, s in sentence] == sorted((s for _, s in sentence), reverse=True)
            tokens, score = sentence[0]
            prev = torch.cat([torch.tensor([model.prior.end_token]), tokens]).unsqueeze(0)
            one = {**enc, "encoder_out": [enc["encoder_out"][0][:, row : row + 1]],
                   "encoder_padding_mask": [enc["encoder_padding_mask"][0][row : row + 1]]}
            lprobs = torch.log_softmax(model.prior(prev, encoder_out=one)[0].float(), -1)[0]
            target = torch.cat([tokens, torch.tensor([model.prior.end_token])])
            total = lprobs.gather(1, target.unsqueeze(1)).sum()
            assert score == pytest.approx(float(total) / len(target), abs=1e-4)


def test_reordering_keeps_each_rows_own_state():
    """Rows swapped between steps continue as those rows would have, on both paths."""
    task = toy_task()
    model, _ = trained_prior_model(task)
    src, lengths = padded_sources(task)
    prior = model.prior
    with torch.no_grad():
        enc = model.encoder(src, src_lengths=lengths)
        first = prior.codes_to_tokens(torch.arange(6) % 5)
        second = prior.codes_to_tokens(torch.arange(6) % 3)
        straight = FairseqSteps(prior, enc)
        straight.step(torch.full((6,), prior.end_token))
        straight.step(first)
        expected = straight.step(second)
        rows = torch.tensor([5, 3, 1])
        for steps in (prior_steps(prior, enc, 4), FairseqSteps(prior, enc)):
            steps.step(torch.full((6,), prior.end_token))
            steps.step(first)
            steps.reorder(rows)
            torch.testing.assert_close(steps.step(second[rows]), expected[rows], atol=1e-5, rtol=1e-5)
