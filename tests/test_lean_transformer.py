"""The lean inference path (modules/lean_transformer.py) computes what fairseq's
layer modules compute: the prior step by step, and the one-shot decoder pass."""

import pytest
import torch

from conftest import build_tiny_model, toy_batch, toy_task, trained_prior_model
from fairseq_vqlatent.latent_generator import LatentGenerator
from fairseq_vqlatent.modules import lean_transformer
from fairseq_vqlatent.modules.lean_transformer import IncrementalDecoder, fairseq_layers


def padded_source_encoding(model, task):
    """encoder_out of 3 sources, two of them left-padded, so that source masks matter."""
    src = toy_batch(task, [5, 5, 5], src_len=9, seed=1)["src_tokens"]
    pad = task.source_dictionary.pad()
    src[1, :3] = pad
    src[2, :5] = pad
    lengths = src.ne(pad).sum(1)
    return model.encoder(src, src_lengths=lengths)


@pytest.mark.parametrize("normalize_before", [True, False])
def test_the_prior_step_by_step_gives_fairseqs_incremental_logits(normalize_before):
    task = toy_task()
    torch.manual_seed(0)
    model = build_tiny_model(task, prior_layers=2, normalize_before=normalize_before).eval()
    prior = model.prior
    with torch.no_grad():
        enc = padded_source_encoding(model, task)
        assert lean_transformer.supports(prior)
        lean = IncrementalDecoder(prior, enc, steps=5)
        tokens = torch.full((3, 1), prior.end_token)
        state = {}
        for t in range(5):
            expected = prior(tokens, encoder_out=enc, incremental_state=state)[0][:, -1]
            torch.testing.assert_close(lean.step(tokens[:, -1]), expected, atol=1e-5, rtol=1e-5)
            tokens = torch.cat([tokens, prior.codes_to_tokens(torch.tensor([t, 3 * t, 7]) % 16).unsqueeze(1)], 1)


@pytest.mark.parametrize("causal", ["causal", "full"])
@pytest.mark.parametrize("normalize_before", [True, False])
def test_the_one_shot_decoder_pass_gives_fairseqs_features(causal, normalize_before):
    task = toy_task()
    torch.manual_seed(0)
    model = build_tiny_model(task, decoder_layers=2, normalize_before=normalize_before,
                             decoder_self_attention=causal).eval()
    with torch.no_grad():
        enc = padded_source_encoding(model, task)
        x = torch.randn(3, 16, model.decoder.embed_dim)
        mask = torch.arange(16).unsqueeze(0) >= torch.tensor([[16], [8], [5]])  # padded positions
        lean = model.decoder(x, mask, enc)
        with fairseq_layers():
            assert not lean_transformer.supports(model.decoder)
            expected = model.decoder(x, mask, enc)
    keep = ~mask
    torch.testing.assert_close(lean[keep], expected[keep], atol=1e-5, rtol=1e-5)


def test_training_keeps_fairseqs_layers():
    model = build_tiny_model(toy_task())
    assert not lean_transformer.supports(model.decoder) and not lean_transformer.supports(model.prior)
    assert lean_transformer.supports(model.eval().decoder)


def test_the_generator_gives_the_same_translations_on_either_path():
    task = toy_task()
    model, sample = trained_prior_model(task)
    gen = LatentGenerator([model], task.target_dictionary, max_len_a=0, max_len_b=40)
    lean = gen.generate([model], sample)
    fairseq = LatentGenerator([model], task.target_dictionary, max_len_a=0, max_len_b=40, fairseq_layers=True)
    expected = fairseq.generate([model], sample)
    for a, b in zip(lean, expected):
        assert torch.equal(a[0]["tokens"], b[0]["tokens"])
        torch.testing.assert_close(a[0]["positional_scores"], b[0]["positional_scores"], atol=1e-5, rtol=1e-5)


def test_bf16_decoding_keeps_the_prior_in_float32_and_translates_as_float32_does():
    task = toy_task()
    model, sample = trained_prior_model(task)
    expected = LatentGenerator([model], task.target_dictionary, max_len_a=0, max_len_b=40).generate([model], sample)
    gen = LatentGenerator([model], task.target_dictionary, max_len_a=0, max_len_b=40, bf16=True)
    assert model.encoder.embed_tokens.weight.dtype == model.decoder.layers[0].fc1.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.prior.parameters())
    hyps = gen.generate([model], sample)
    same = [torch.equal(a[0]["tokens"], b[0]["tokens"]) for a, b in zip(hyps, expected)]
    assert sum(same) >= len(same) - 1, same  # bfloat16 rounding may flip a near tie
