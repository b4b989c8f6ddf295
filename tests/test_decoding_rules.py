"""Decoding agrees with training: where a sentence ends, how padding reads, when
the code search stops, and the loss terms' normalisation (issue 8, defects 1-3)."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from conftest import build_tiny_model, sequence_generator_codes, toy_batch, toy_task, trained_prior_model
from fairseq_vqlatent.criterions.vqlatent_loss import VQLatentLoss, output_targets
from fairseq_vqlatent import VQLatentError, latent_generator
from fairseq_vqlatent.latent_generator import LatentGenerator, argmax_without_repeats
from fairseq_vqlatent.modules.lean_transformer import fairseq_layers
from fairseq_vqlatent.teacher_scorer import TeacherScorer


def net_input(batch):
    return {k: batch[k] for k in ("src_tokens", "src_lengths", "prev_output_tokens")}


# ------------------------------------------------------------ where a sentence ends


def test_training_fills_the_last_block_after_eos_with_eos():
    pad, eos = 1, 2
    target = torch.tensor([[7, 8, eos, pad, pad], [7, 8, 9, 10, eos]])
    # blocks of 4: sentence 0 has one latent, sentence 1 two
    out_mask = torch.tensor([[False] * 4 + [True] * 4, [False] * 8])
    expected = torch.tensor([[7, 8, eos, eos, pad, pad, pad, pad], [7, 8, 9, 10, eos, eos, eos, eos]])
    assert torch.equal(output_targets(target, out_mask, pad, eos), expected)


def fixed_logits_generator(model, task, logits, allow_repeats=True):
    """A generator whose decoder pass returns ``logits`` [1, T, V] for a one-sentence batch."""
    model.eval()
    T = logits.size(1)
    model.decode_latents = lambda z_q, mask, enc, **unused: (logits, torch.zeros(1, T, dtype=torch.bool))
    return LatentGenerator([model], task.target_dictionary, max_len_a=0, max_len_b=T, allow_repeats=allow_repeats)


def test_eos_is_only_allowed_in_the_last_block():
    task = toy_task()
    model = build_tiny_model(task, compress_steps=2)  # blocks of 4
    d = task.target_dictionary
    word = d.nspecial + 3
    logits = torch.zeros(1, 8, len(d))
    logits[0, :, word] = 5.0
    logits[0, 1, d.eos()] = 10.0  # an EOS in the first block: training never puts one there
    logits[0, 6, d.eos()] = 10.0  # the last block's first EOS ends the sentence
    gen = fixed_logits_generator(model, task, logits)
    batch = toy_batch(task, [6])
    hyp = gen.generate([model], {"net_input": net_input(batch)})[0][0]
    assert hyp["tokens"].tolist() == [word] * 6 + [d.eos()]


def test_a_sentence_says_at_least_one_token():
    """With n_c = 2 a one-latent sentence's last block starts at position 0: an EOS there
    would be an empty translation (58 of 1,000 test sentences in the n_c = 2 ablation row)."""
    task = toy_task()
    model = build_tiny_model(task, compress_steps=2)
    d = task.target_dictionary
    logits = torch.zeros(1, 4, len(d))
    logits[0, :, d.eos()] = 10.0
    logits[0, 0, d.nspecial + 1] = 5.0
    hyp = fixed_logits_generator(model, task, logits).generate([model], {"net_input": net_input(toy_batch(task, [3]))})
    assert hyp[0][0]["tokens"].tolist() == [d.nspecial + 1, d.eos()]


def test_a_sentence_without_eos_keeps_all_its_positions_and_gets_one():
    task = toy_task()
    model = build_tiny_model(task, compress_steps=2)
    d = task.target_dictionary
    logits = torch.zeros(1, 8, len(d))
    logits[0, :, d.nspecial] = 5.0
    hyp = fixed_logits_generator(model, task, logits).generate([model], {"net_input": net_input(toy_batch(task, [6]))})
    assert hyp[0][0]["tokens"].tolist() == [d.nspecial] * 8 + [d.eos()]


def test_argmax_without_repeats_takes_the_runner_up_left_to_right():
    eos = 2
    # argmax per position: 5 5 5 2 2; runners-up: 6 6 7 3 3
    lprobs = torch.full((1, 5, 8), -9.0)
    for t, (first, second) in enumerate([(5, 6), (5, 6), (5, 7), (eos, 3), (eos, 3)]):
        lprobs[0, t, first], lprobs[0, t, second] = -0.1, -1.0 - t
    scores, tokens = argmax_without_repeats(lprobs, keep=eos)
    # position 1 repeats 5 and takes 6; position 2's 5 then follows a 6 and stays; EOS may repeat
    assert tokens.tolist() == [[5, 6, 5, eos, eos]]
    assert scores[0].tolist() == pytest.approx([-0.1, -2.0, -0.1, -0.1, -0.1])
    no_repeat = lprobs[:, [0, 3]]  # 5 then EOS: the plain argmax
    for ours, plain in zip(argmax_without_repeats(no_repeat, keep=eos), no_repeat.max(-1)):
        assert torch.equal(ours, plain)


def test_the_generator_emits_no_word_twice_in_a_row_unless_allowed():
    task = toy_task()
    model = build_tiny_model(task, compress_steps=2)
    d = task.target_dictionary
    a, b = d.nspecial + 3, d.nspecial + 4
    logits = torch.zeros(1, 8, len(d))
    logits[0, :, a] = 5.0
    logits[0, :, b] = 4.0
    logits[0, 6, d.eos()] = 10.0
    batch = {"net_input": net_input(toy_batch(task, [6]))}
    plain = fixed_logits_generator(model, task, logits, allow_repeats=True).generate([model], batch)[0][0]
    assert plain["tokens"].tolist() == [a] * 6 + [d.eos()]
    hyp = fixed_logits_generator(model, task, logits, allow_repeats=False).generate([model], batch)[0][0]
    assert hyp["tokens"].tolist() == [a, b] * 3 + [d.eos()]
    assert hyp["positional_scores"][1] < plain["positional_scores"][1]


# ------------------------------------------------------------ padding does not leak


@pytest.mark.parametrize("code_dim", [0, 8])  # identity and linear maps out of the code space
def test_a_sentence_decodes_alike_alone_and_beside_longer_ones(code_dim):
    torch.manual_seed(0)
    task = toy_task()
    model = build_tiny_model(task, code_dim=code_dim, decoder_self_attention="full").eval()
    batch = toy_batch(task, [6, 20, 30], src_len=7)
    with torch.no_grad():
        enc = model.encoder(batch["src_tokens"], src_lengths=batch["src_lengths"])
        codes = torch.tensor([[3, 0, 0, 0], [5, 6, 7, 0], [1, 2, 3, 4]])  # 0 at padding, as the search leaves it
        mask = torch.tensor([[False, True, True, True], [False, False, False, True], [False] * 4])
        z_q = model.embed_codes(codes)
        batched, _ = model.decode_latents(z_q, mask, enc)
        enc0 = model.encoder(batch["src_tokens"][:1], src_lengths=batch["src_lengths"][:1])
        alone, _ = model.decode_latents(z_q[:1, :1], mask[:1, :1], enc0)
    torch.testing.assert_close(batched[0, : alone.size(1)], alone[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("one_pass_rows, expected_passes", [(0, [(2, 1), (1, 2), (1, 3)]), (16, [(4, 3)])])
@pytest.mark.parametrize("ctc_upsample", [0, 2])
def test_the_decoder_pass_groups_sentences_by_code_count_and_changes_none(
    ctc_upsample, one_pass_rows, expected_passes, monkeypatch
):
    """Large batches take one pass per code count, small ones one padded pass: the same output."""
    monkeypatch.setattr(latent_generator, "ONE_PASS_ROWS", one_pass_rows)
    torch.manual_seed(0)
    task = toy_task()
    model = build_tiny_model(task, ctc_upsample=ctc_upsample, decoder_self_attention="full").eval()
    gen = LatentGenerator([model], task.target_dictionary, max_len_a=0, max_len_b=40)
    batch = toy_batch(task, [6, 20, 30, 9], src_len=7)
    codes = torch.tensor([[3, 0, 0], [5, 6, 7], [1, 2, 0], [4, 0, 0]])  # 0 at padding
    mask = torch.tensor([[False, True, True], [False] * 3, [False, False, True], [False, True, True]])
    passes = []
    decode = model.decode_latents
    model.decode_latents = lambda z_q, m, enc, **kw: passes.append(tuple(z_q.shape[:2])) or decode(z_q, m, enc, **kw)
    with torch.no_grad():
        enc = model.encoder(batch["src_tokens"], src_lengths=batch["src_lengths"])
        together = gen.decode_by_length(model, codes, mask, enc)
        assert passes == expected_passes  # grouped: one pass per code count, no padding latents
        for b, hyp in enumerate(together):
            n = int((~mask[b]).sum())
            enc_b = model.encoder(batch["src_tokens"][b : b + 1], src_lengths=batch["src_lengths"][b : b + 1])
            alone = gen.decode_by_length(model, codes[b : b + 1, :n], mask[b : b + 1, :n], enc_b)[0]
            assert hyp["tokens"].tolist() == alone["tokens"].tolist()
            torch.testing.assert_close(hyp["positional_scores"], alone["positional_scores"], atol=1e-5, rtol=1e-4)


def test_ctc_scores_are_the_unpenalised_log_probabilities_of_the_best_path():
    task = toy_task()
    d = task.target_dictionary
    model = build_tiny_model(task, ctc_upsample=2, compress_steps=2).eval()
    torch.manual_seed(1)
    logits = torch.randn(2, 6, len(d)) * 3
    logits[:, :, d.unk()] += 2.0  # the blank often leads, so the penalty matters
    lprobs = logits.log_softmax(-1)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    gen = LatentGenerator([model], d, max_len_a=0, max_len_b=8, blank_penalty=1.5)
    for b, hyp in enumerate(gen.hypotheses(logits.clone(), mask, 4, model.ctc_blank)):
        penalised = lprobs[b].clone()
        penalised[:, gen.banned + [d.eos()]] = float("-inf")
        penalised[:, d.unk()] -= 1.5
        path = penalised.argmax(-1)
        expected = [t for i, t in enumerate(path.tolist()) if t != d.unk() and (i == 0 or t != path[i - 1])]
        assert hyp["tokens"].tolist() == expected + [d.eos()]
        path_scores = lprobs[b].gather(1, path.unsqueeze(1)).squeeze(1)
        torch.testing.assert_close(hyp["score"], path_scores.mean())


# ------------------------------------------------------------ when the code search stops


def script_prior(model, rows):
    """Make the prior's next-code distribution at step t rows[t] (probabilities over
    the code dictionary); its code-id helpers stay the real ones."""

    def forward(prev, encoder_out=None, incremental_state=None):
        step = prev.size(1) - 1
        return rows[min(step, len(rows) - 1)].log().expand(prev.size(0), 1, -1), None

    model.prior.forward = forward


def scripted_rows(model, p_end_at_step_1):
    d, K = model.code_dict, model.bottleneck.num_codes
    first = torch.full((len(d),), 1e-9)
    first[d.nspecial] = 1.0
    second = torch.full((len(d),), 1e-9)
    second[d.eos()] = p_end_at_step_1
    second[d.nspecial : d.nspecial + K] = (1 - p_end_at_step_1) / K  # the rest spread over all codes
    end = torch.full((len(d),), 1e-9)
    end[d.eos()] = 1.0
    return [first / first.sum(), second / second.sum(), end]


def scripted_search(stop: str, rows_of) -> tuple:
    """The shape of the codes the search finds, for two sentences, under a scripted prior."""
    task = toy_task()
    model = build_tiny_model(task).eval()
    script_prior(model, rows_of(model))
    gen = LatentGenerator([model], task.target_dictionary, max_len_a=0, max_len_b=80, stop=stop)
    batch = toy_batch(task, [6, 9])
    with torch.no_grad(), fairseq_layers():  # the script replaces forward, which the lean path skips
        enc = model.encoder(batch["src_tokens"], src_lengths=batch["src_lengths"])
        codes, mask = gen.decode_codes(model, enc, batch["src_tokens"], batch["src_lengths"])
    assert not mask.any()
    return tuple(codes.shape)


@pytest.mark.parametrize("stop, p_end, length", [("mass", 0.4, 2), ("argmax", 0.4, 1), ("mass", 0.6, 1)])
def test_the_search_stops_when_end_of_latents_outweighs_the_codes(stop, p_end, length):
    assert scripted_search(stop, lambda model: scripted_rows(model, p_end)) == (2, length)


@pytest.mark.parametrize("stop, length", [("mass", 10), ("median", 2), ("argmax", 1)])
def test_the_median_stop_accumulates_the_priors_stop_probabilities(stop, length):
    # end-of-latents at 0.3 on every step after the first: it never outweighs the codes
    # (mass runs to the budget of 80 / 8 codes), but after two steps the path has more
    # likely ended than not (0.7 * 0.7 = 0.49 left).
    assert scripted_search(stop, lambda model: scripted_rows(model, 0.3)[:2]) == (2, length)


def test_greedy_search_gives_fairseqs_codes_under_the_argmax_stop():
    task = toy_task()
    model, sample = trained_prior_model(task)
    ours = LatentGenerator([model], task.target_dictionary, max_len_a=0, max_len_b=40, stop="argmax")
    src, lengths = sample["net_input"]["src_tokens"], sample["net_input"]["src_lengths"]
    with torch.no_grad():
        enc = model.encoder(src, src_lengths=lengths)
        codes, mask = ours.decode_codes(model, enc, src, lengths)
        expected = sequence_generator_codes(model, enc, src, lengths, ours.max_latents(int(lengths.max())))
    for row, (hyp,) in enumerate(expected):
        assert torch.equal(codes[row][~mask[row]], model.prior.tokens_to_codes(hyp))


# ------------------------------------------------------------ noisy parallel decoding


@pytest.mark.parametrize("source", ["sample", "beam"])
def test_candidates_share_one_pass_and_the_best_scored_is_kept(source):
    task = toy_task()
    model, sample = trained_prior_model(task)
    greedy = LatentGenerator([model], task.target_dictionary, max_len_a=0, max_len_b=40)
    npd = LatentGenerator([model], task.target_dictionary, max_len_a=0, max_len_b=40, candidates=4,
                          candidates_from=source)
    src, lengths = sample["net_input"]["src_tokens"], sample["net_input"]["src_lengths"]
    torch.manual_seed(1)
    with torch.no_grad():
        codes, mask = npd.decode_codes(model, model.encoder(src, src_lengths=lengths), src, lengths)
        one = [h[0] for h in greedy.generate([model], sample)]
        torch.manual_seed(1)
        best = [h[0] for h in npd.generate([model], sample)]
    assert codes.shape[0] == 4 * src.size(0)  # every candidate, side by side
    if source == "sample":
        greedy_codes, greedy_mask = greedy.decode_codes(model, model.encoder(src, src_lengths=lengths), src, lengths)
        L = greedy_codes.size(1)
        assert torch.equal(codes[::4, :L].masked_fill(mask[::4, :L], 0), greedy_codes)  # candidate 0 is greedy
        for g, b in zip(one, best):  # the kept candidate scores at least as well as the greedy one
            assert b["score"] >= g["score"] - 1e-6


def test_a_scorer_chooses_the_candidate():
    task = toy_task()
    model, sample = trained_prior_model(task)

    class PreferLongest:
        seen, sentence = [], None

        def to(self, like):
            return self

        def score(self, src_tokens, src_lengths, hypotheses, sentence):
            assert sentence.max() < src_tokens.size(0)  # each source once, whatever its candidates
            self.seen, self.sentence = hypotheses, sentence.tolist()
            return torch.tensor([float(len(h)) for h in hypotheses])

    scorer = PreferLongest()
    npd = LatentGenerator([model], task.target_dictionary, max_len_a=0, max_len_b=40, candidates=4, scorer=scorer)
    torch.manual_seed(1)
    with torch.no_grad():
        best = [h[0]["tokens"] for h in npd.generate([model], sample)]
    assert sorted(set(scorer.sentence)) == list(range(len(best)))
    for b, chosen in enumerate(best):
        candidates = [h for h, s in zip(scorer.seen, scorer.sentence) if s == b]
        assert 1 <= len(candidates) <= 4
        assert len(chosen) == max(len(c) for c in candidates)
        assert any(torch.equal(chosen, c) for c in candidates)


def test_candidates_drawn_twice_are_decoded_once_and_the_choice_is_unchanged():
    task = toy_task()
    model, sample = trained_prior_model(task)
    npd = LatentGenerator([model], task.target_dictionary, max_len_a=0, max_len_b=40, candidates=8)
    src, lengths = sample["net_input"]["src_tokens"], sample["net_input"]["src_lengths"]
    B = src.size(0)
    with torch.no_grad():
        enc = model.encoder(src, src_lengths=lengths)
        sentence = torch.arange(B).repeat_interleave(8)
        each = model.encoder.reorder_encoder_out(enc, sentence)
        torch.manual_seed(3)
        codes, mask = npd.decode_codes(model, enc, src, lengths, each)
        every = npd.decode_by_length(model, codes, mask, each, src[sentence])  # all 8 of each
        expected = [max(every[8 * b : 8 * b + 8], key=lambda h: float(h["score"]))["tokens"] for b in range(B)]
        decoded = []
        decode_by_length = npd.decode_by_length
        npd.decode_by_length = lambda model, codes, *rest: decoded.append(len(codes)) or decode_by_length(
            model, codes, *rest)
        torch.manual_seed(3)
        got = [h[0]["tokens"] for h in npd.generate([model], sample)]
    distinct = {(s, tuple(c[~m].tolist())) for s, c, m in zip(sentence.tolist(), codes, mask)}
    assert sum(decoded) == len(distinct) < 8 * B  # the toy prior repeats itself
    assert all(torch.equal(g, e) for g, e in zip(got, expected))


def tiny_teacher_model(task):
    from argparse import Namespace

    from fairseq.models.transformer import TransformerModel, base_architecture

    args = Namespace(encoder_layers=1, decoder_layers=1, encoder_embed_dim=16, decoder_embed_dim=16,
                     encoder_ffn_embed_dim=32, decoder_ffn_embed_dim=32, encoder_attention_heads=2,
                     decoder_attention_heads=2, share_all_embeddings=True, max_source_positions=64,
                     max_target_positions=64)
    base_architecture(args)
    torch.manual_seed(2)
    return TransformerModel.build_model(args, task).eval()


def test_the_teacher_scores_each_candidate_by_its_mean_token_log_probability():
    """Sources encoded once for their candidates give each candidate's own forward-pass score."""
    task = toy_task()
    teacher = tiny_teacher_model(task)
    d = task.target_dictionary
    batch = toy_batch(task, [4, 6], src_len=7, seed=5)
    src, lengths = batch["src_tokens"], batch["src_lengths"]
    gen = torch.Generator().manual_seed(0)
    hyps = [torch.cat([torch.randint(d.nspecial, len(d), (n,), generator=gen), torch.tensor([d.eos()])])
            for n in (3, 5, 1, 4, 2, 6)]  # 3 candidates for each of 2 sentences
    scores = TeacherScorer(teacher, d).score(src, lengths, hyps)
    for i, h in enumerate(hyps):
        b = i // 3
        prev = torch.cat([torch.tensor([d.eos()]), h[:-1]]).unsqueeze(0)
        with torch.no_grad():
            logits, _ = teacher(src[b : b + 1], lengths[b : b + 1], prev)
        expected = torch.log_softmax(logits[0], -1).gather(1, h.unsqueeze(1)).mean()
        assert float(scores[i]) == pytest.approx(float(expected), abs=1e-5)


def test_bad_candidate_options_are_refused():
    task = toy_task()
    model = build_tiny_model(task)
    with pytest.raises(VQLatentError, match="at least 1"):
        LatentGenerator([model], task.target_dictionary, candidates=0)
    with pytest.raises(VQLatentError, match="sample or beam"):
        LatentGenerator([model], task.target_dictionary, candidates=2, candidates_from="nope")


# ------------------------------------------------------------ the loss weights mean what they say


def test_each_loss_term_is_a_mean_over_its_own_units():
    torch.manual_seed(0)
    task = toy_task()
    d = task.target_dictionary
    beta, eps, lam = 0.25, 0.1, 0.7
    model = build_tiny_model(task, bottleneck="vq", commitment_beta=beta, compress_steps=2, codebook_init="random")
    model.train()  # TINY_MODEL has no dropout: a second pass computes the same z_e
    crit = VQLatentLoss(SimpleNamespace(target_dictionary=d), eps, lam, 0)
    batch = toy_batch(task, [5, 11, 16])
    sample = {"net_input": net_input(batch), "target": batch["target"], "ntokens": 32}

    captured, forward = {}, model.forward
    model.forward = lambda *a, **k: captured.setdefault("out", forward(*a, **k))
    codes_before_m_step = model.bottleneck.codebook.embed.clone()
    loss, sample_size, log = crit(model, sample)
    out = captured["out"]

    # reconstruction: a label-smoothed mean over output positions (EOS fill included)
    tgt = output_targets(batch["target"], out.output_padding_mask, d.pad(), d.eos())
    keep = tgt.ne(d.pad())
    lp = F.log_softmax(out.logits.float(), -1)[keep]
    recon = ((1 - eps) * -lp.gather(1, tgt[keep].unsqueeze(1)).squeeze(1) - eps / lp.size(1) * lp.sum(1)).mean()
    assert sample_size == int(keep.sum()) == 4 * 2 + 4 * 3 + 4 * 4

    # prior: one step per code plus end-of-latents, a mean over those steps
    K, ns = model.bottleneck.num_codes, model.code_dict.nspecial
    plp = F.log_softmax(out.prior_logits.float(), -1)
    terms = []
    for b, n in enumerate((~out.latent_padding_mask).sum(1).tolist()):
        rows = torch.cat([plp[b, : n + 1, ns : ns + K], plp[b, : n + 1, model.code_dict.eos()].unsqueeze(1)], 1)
        target = torch.zeros(n + 1, K + 1)
        target[torch.arange(n), out.bottleneck.codes[b, :n]] = 1.0
        target[n, K] = 1.0
        target = (1 - eps) * target + eps / (K + 1)
        terms.append(-(target * rows).sum(1))
    prior = torch.cat(terms).mean()

    # commitment: beta times the mean over latents of the squared distance, averaged over dimensions
    with torch.no_grad():
        z_e, latent_mask = model.compressor(batch["target"], None)
        z = model.bottleneck.project_in(z_e, latent_mask)[~latent_mask]
    e = codes_before_m_step[out.bottleneck.codes[~latent_mask]]
    commitment = beta * (z - e).pow(2).mean(-1).mean()

    torch.testing.assert_close(loss.detach() / sample_size, recon + lam * prior + commitment, atol=1e-4, rtol=1e-4)


def test_constructor_defaults_equal_the_cli_defaults():
    """The generator's and the bottleneck's own defaults were once 0 and `layer` while the CLI's
    were 2 and `batch`: code built from Python decoded differently from fairseq-generate."""
    import inspect

    from fairseq_vqlatent.models.vqlatent_transformer import VQLatentTransformerConfig
    from fairseq_vqlatent.modules.bottlenecks.base import Bottleneck
    from fairseq_vqlatent.tasks.translation_vqlatent import TranslationVQLatentConfig

    generator = inspect.signature(LatentGenerator.__init__).parameters
    task = TranslationVQLatentConfig()
    pairs = {"latent_beam": "latent_beam", "stop": "latent_stop", "candidates": "latent_candidates",
             "candidates_from": "latent_candidates_from", "allow_repeats": "latent_allow_repeats",
             "blank_penalty": "ctc_blank_penalty", "fairseq_layers": "latent_fairseq_layers", "bf16": "latent_bf16",
             "onnx": "latent_onnx"}
    assert {a: generator[a].default for a in pairs} == {a: getattr(task, b) for a, b in pairs.items()}
    assert inspect.signature(Bottleneck.__init__).parameters["code_norm"].default == VQLatentTransformerConfig().code_norm
