"""Every compression factor with odd target lengths, through training and decoding."""

import pytest
import torch

from conftest import build_tiny_model, toy_batch, toy_task
from fairseq_vqlatent.latent_generator import LatentGenerator
from fairseq_vqlatent.modules import latent_length


@pytest.mark.parametrize("n_c", [1, 2, 3, 4])
@pytest.mark.parametrize("bottleneck", ["vq", "soft_em", "gumbel", "semhash", "gmvq"])
def test_forward_shapes_for_every_compression(n_c, bottleneck):
    task = toy_task()
    model = build_tiny_model(task, compress_steps=n_c, bottleneck=bottleneck).train()
    lengths = [1, 5, 17, 9]  # odd, and one EOS-only target
    batch = toy_batch(task, lengths)
    out = model(**batch)
    factor = 2**n_c
    L = latent_length(max(lengths), n_c)
    assert out.latent_padding_mask.shape == (4, L)
    assert (~out.latent_padding_mask).sum(1).tolist() == [latent_length(n, n_c) for n in lengths]
    assert out.logits.shape == (4, L * factor, len(task.target_dictionary))
    assert (~out.output_padding_mask).sum(1).tolist() == [latent_length(n, n_c) * factor for n in lengths]
    assert out.prior_logits.shape == (4, L + 1, len(model.code_dict))
    assert out.bottleneck.z_q.shape == (4, L, model.cfg.encoder_embed_dim)


def test_codes_do_not_depend_on_batch_padding():
    task = toy_task()
    model = build_tiny_model(task).eval()
    batch = toy_batch(task, [11, 30])
    enc = model.encoder(batch["src_tokens"], src_lengths=batch["src_lengths"])
    bn, mask = model.encode_latents(batch["target"], enc)
    alone = {k: v[:1] for k, v in batch.items()}
    alone["target"] = alone["target"][:, :11]
    enc1 = model.encoder(alone["src_tokens"], src_lengths=alone["src_lengths"])
    bn1, _ = model.encode_latents(alone["target"], enc1)
    n = bn1.z_q.size(1)
    torch.testing.assert_close(bn.z_q[0, :n], bn1.z_q[0])


@pytest.mark.parametrize("n_c", [1, 4])
@pytest.mark.parametrize("beam", [1, 3])
def test_generator_returns_one_hypothesis_per_sentence(n_c, beam):
    task = toy_task()
    model = build_tiny_model(task, compress_steps=n_c).eval()
    batch = toy_batch(task, [3, 7, 12])
    sample = {"id": torch.arange(3), "net_input": {k: batch[k] for k in ("src_tokens", "src_lengths")}}
    gen = LatentGenerator([model], task.target_dictionary, latent_beam=beam, max_len_a=1.0, max_len_b=5)
    hypos = gen.generate([model], sample)
    eos = task.target_dictionary.eos()
    budget = gen.max_latents(7) * 2**n_c
    assert len(hypos) == 3
    for (h,) in hypos:
        assert h["tokens"][-1] == eos and (h["tokens"][:-1] != eos).all()
        assert 1 <= len(h["tokens"]) <= budget + 1
        assert h["positional_scores"].shape == h["tokens"].shape
        torch.testing.assert_close(h["score"], h["positional_scores"].mean())


def test_a_low_dimensional_code_space_round_trips():
    task = toy_task()
    model = build_tiny_model(task, code_dim=4).train()
    out = model(**toy_batch(task, [5, 9]))
    assert model.bottleneck.codebook.embed.shape == (16, 4)
    assert out.bottleneck.z_q.shape[-1] == model.cfg.encoder_embed_dim  # back out of the code space
    assert out.logits.shape[:2] == (2, 16)


@pytest.mark.parametrize("code_dim, code_norm", [(4, "layer"), (4, "batch"), (0, "batch")])
def test_a_checkpoint_from_before_the_bottleneck_owned_its_projections_loads(code_dim, code_norm):
    """to_code_space / from_code_space were the model's; their weights move into the bottleneck."""
    task = toy_task()
    model = build_tiny_model(task, code_dim=code_dim, code_norm=code_norm).eval()
    old_names = {k.replace("bottleneck.project_in.", "to_code_space.").replace("bottleneck.project_out.", "from_code_space."): v
                 for k, v in model.state_dict().items()}
    if code_norm == "layer":  # the first layout: nn.Sequential(Linear, LayerNorm)
        old_names = {k.replace("to_code_space.linear.", "to_code_space.0."): v for k, v in old_names.items()}
    assert not any(k.startswith("bottleneck.project") for k in old_names)
    assert any(k.startswith("to_code_space.") for k in old_names)
    torch.manual_seed(1)
    fresh = build_tiny_model(task, code_dim=code_dim, code_norm=code_norm).eval()
    fresh.load_state_dict(old_names)  # fairseq's load_state_dict upgrades the names
    batch = toy_batch(task, [5, 9])
    with torch.no_grad():
        torch.testing.assert_close(fresh(**batch).logits, model(**batch).logits)


def test_compressor_attending_to_the_source_and_target_mixing_run():
    task = toy_task()
    model = build_tiny_model(task, compress_attend_source=True, target_mix_updates=10).train()
    model.set_num_updates(0)  # p = 1: every non-padding decoder input is the previous target token
    batch = toy_batch(task, [5, 9])
    assert model._mix_probability() == 1.0
    out = model(**batch)
    assert out.logits.shape == (2, 16, len(task.target_dictionary))
    x = torch.zeros(2, 16, model.cfg.encoder_embed_dim)
    mixed = model._mix_targets(x, batch["prev_output_tokens"])
    prev = torch.nn.functional.pad(batch["prev_output_tokens"], (0, 16 - 9), value=1)
    real = prev.ne(1)
    emb = model.decoder.embed_tokens(prev) * model.cfg.encoder_embed_dim**0.5
    torch.testing.assert_close(mixed[real], emb[real])
    assert mixed[~real].abs().sum() == 0
    model.set_num_updates(10)
    assert model._mix_probability() == 0.0 and not model._mixing()


def test_target_mixing_with_full_self_attention_is_refused():
    import pytest as _pytest

    from fairseq_vqlatent import VQLatentError

    with _pytest.raises(VQLatentError, match="use causal"):
        build_tiny_model(decoder_self_attention="full", target_mix_updates=100)


def test_full_self_attention_decoder_runs():
    task = toy_task()
    model = build_tiny_model(task, decoder_self_attention="full").eval()
    out = model(**toy_batch(task, [5, 9]))
    assert not model.decoder.causal and torch.isfinite(out.logits).all()


def test_source_attention_warmup_hides_the_source_then_shows_it():
    task = toy_task()
    model = build_tiny_model(task, source_attention_warmup=10).train()
    batch = toy_batch(task, [5, 9])
    src = batch["src_tokens"]
    other_src = torch.cat([torch.flip(src[:, :-1], [1]), src[:, -1:]], 1)
    codes = torch.tensor([[1, 0], [2, 3]])

    def decoder_logits(src_tokens):
        encoder_out = model.encoder(src_tokens, src_lengths=batch["src_lengths"])
        return model.decode_latents(model.embed_codes(codes), codes.eq(-1), encoder_out)[0]

    model.set_num_updates(0)  # every sentence hidden: the decoder reads only its codes
    assert model._hide_source_probability() == 1.0
    torch.testing.assert_close(decoder_logits(src), decoder_logits(other_src))
    model.set_num_updates(5)
    assert model._hide_source_probability() == 0.5
    model.set_num_updates(10)  # warmup over: the source matters again
    assert model._hide_source_probability() == 0.0
    assert not torch.allclose(decoder_logits(src), decoder_logits(other_src))
    model.eval().set_num_updates(0)  # never at inference
    assert not torch.allclose(decoder_logits(src), decoder_logits(other_src))


def test_a_batch_normed_code_space_has_unit_variance_over_real_latents_only():
    task = toy_task()
    model = build_tiny_model(task, code_dim=4, code_norm="batch").train()
    batch = toy_batch(task, [5, 9, 30, 17])
    z_e, mask = model.compressor(batch["target"], None)
    z = model.bottleneck.project_in(z_e, mask)
    real = z[~mask]
    torch.testing.assert_close(real.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(real.var(0, unbiased=False), torch.ones(4), atol=1e-3, rtol=0)
    assert z[mask].abs().sum() == 0  # padding neither counts nor changes
    model(**batch)  # and the whole model trains with it
