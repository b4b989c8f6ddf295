"""Codebook health over a whole split.

    python -m fairseq_vqlatent.inspect_codes CHECKPOINT DATA [--split valid] [--top 10]

Encodes every target of the split with the trained compressor and bottleneck
(eval mode: deterministic codes) and prints the code perplexity, how many
distinct codes were used, the most frequent codes and the distribution of latent
lengths. A healthy codebook uses a large share of its codes; a collapsed one
shows a perplexity near 1 and a handful of codes.

Distinct ids can hide a collapse: codes that sit on one point, or a decoder that
never reads them. Two more lines show it: the spread of the used codes (their
mean distance from each other over their mean norm) and the share of output
tokens that change when every code is replaced by the most frequent one. A
decoder that reads its codes changes many; a collapsed model changes none.
For vq and soft_em one more line gives the width of the E-step's posterior
softmax(-||z - e_k||^2) per latent and the mutual information I(z; c): a
posterior as wide as hundreds of codes means soft EM samples nearly at random.

With --bleu it also decodes the split twice in one shot: from the prior's codes
(what users get) and from the target's own codes (an oracle). Equal scores mean
the codes the prior picks are as good as the true ones, and the gap to the
teacher lies in the one-shot decoder; a higher oracle score points at the prior.
"""

import argparse
import collections
import math
import os
import sys
from typing import Optional, Tuple

import torch


def _batches(model, task, split: str, max_tokens: int):
    dataset = task.dataset(split)
    return task.get_batch_iterator(
        dataset=dataset, max_tokens=max_tokens, max_positions=model.max_positions(), ignore_invalid_inputs=True
    ).next_epoch_itr(shuffle=False)


def code_statistics(model, task, split: str, max_tokens: int):
    """-> (counts [K] tensor, Counter of latent lengths)."""
    itr = _batches(model, task, split, max_tokens)
    counts = torch.zeros(model.bottleneck.num_codes)
    lengths = collections.Counter()
    model.eval()
    with torch.no_grad():
        for sample in itr:
            net_input = sample["net_input"]
            encoder_out = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
            bn, latent_mask = model.encode_latents(sample["target"], encoder_out)
            counts += torch.bincount(bn.codes[~latent_mask], minlength=len(counts)).float()
            lengths.update((~latent_mask).sum(1).tolist())
    return counts, lengths


def code_spread(bottleneck, counts: torch.Tensor) -> float:
    """Mean distance between the used codes, weighted by use, over their mean norm:
    near 0 when distinct ids share one point of the code space."""
    used = (counts > 0).nonzero().flatten()
    if len(used) < 2:
        return 0.0
    with torch.no_grad():
        e = bottleneck.code_vectors(used).float()  # [U, code_dim]: in the space where codes are compared
    w = counts[used] / counts[used].sum()
    mean_distance = (w[:, None] * w[None, :] * torch.cdist(e, e)).sum() / (1 - (w**2).sum())
    return float(mean_distance / e.norm(dim=-1).mean().clamp_min(1e-9))


def code_reliance(model, task, split: str, max_tokens: int, counts: torch.Tensor) -> float:
    """Share of output tokens (argmax, at real positions) that change when each
    sentence's own codes are all replaced by the most frequent code."""
    frequent = int(counts.argmax())
    changed = total = 0
    with torch.no_grad():
        for sample in _batches(model, task, split, max_tokens):
            net_input = sample["net_input"]
            encoder_out = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
            bn, latent_mask = model.encode_latents(sample["target"], encoder_out)
            tokens = []
            for codes in (bn.codes, torch.full_like(bn.codes, frequent)):
                logits, out_mask = model.decode_latents(model.embed_codes(codes), latent_mask, encoder_out)
                tokens.append(logits.argmax(-1))
            changed += int((tokens[0] != tokens[1])[~out_mask].sum())
            total += int((~out_mask).sum())
    return changed / max(total, 1)


def posterior_information(model, task, split: str, max_tokens: int) -> Optional[Tuple[float, float]]:
    """EM bottlenecks (vq, soft_em): -> (E_n[H(q_n)], H(q_bar)) in nats over the split's
    latents, for the E-step's posterior q(c | z) = softmax(-||z - e_k||^2); their
    difference is the mutual information I(z; c). None for the other bottlenecks."""
    from .modules.bottlenecks.em_bottleneck import EMBottleneck

    bottleneck = model.bottleneck
    if not isinstance(bottleneck, EMBottleneck):
        return None
    entropy, q_sum, n = 0.0, 0.0, 0
    with torch.no_grad():
        for sample in _batches(model, task, split, max_tokens):
            net_input = sample["net_input"]
            encoder_out = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
            z_e, latent_mask = model.compressor(sample["target"], encoder_out)
            z = bottleneck.codebook.normalize(bottleneck.project_in(z_e, latent_mask)[~latent_mask]).float()
            log_q = bottleneck.log_posterior(z, bottleneck.codebook.embed.float())  # [N, K]
            q = log_q.exp()
            entropy -= float((q * log_q).sum())
            q_sum = q_sum + q.sum(0)
            n += len(z)
    q_bar = q_sum / max(n, 1)
    return entropy / max(n, 1), float(-(q_bar * q_bar.clamp_min(1e-12).log()).sum())


def code_oracle_bleu(
    model, task, split: str, max_tokens: int, bpe: str, max_len_a: float = 1.2, max_len_b: int = 10,
    blank_penalty: float = 2.0,
) -> dict:
    """Tokenised BLEU of one-shot decoding from the prior's codes and from the
    target's own codes -> {"prior codes": sacrebleu result, "own codes": ...}."""
    import sacrebleu

    from .latent_generator import LatentGenerator

    d = task.target_dictionary
    generator = LatentGenerator([model], d, max_len_a=max_len_a, max_len_b=max_len_b, blank_penalty=blank_penalty)
    text = {"prior codes": {}, "own codes": {}, "reference": {}}

    def detok(tokens):
        return d.string(tokens[tokens.ne(d.pad())], bpe_symbol=bpe)

    with torch.no_grad():
        for sample in _batches(model, task, split, max_tokens):
            net_input = sample["net_input"]
            encoder_out = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
            bn, latent_mask = model.encode_latents(sample["target"], encoder_out)
            logits, out_mask = model.decode_latents(model.embed_codes(bn.codes), latent_mask, encoder_out)
            own = generator.hypotheses(logits, out_mask, model.compression, model.ctc_blank)
            prior = generator.generate([model], sample)
            for i, sid in enumerate(sample["id"].tolist()):
                text["own codes"][sid] = detok(own[i]["tokens"])
                text["prior codes"][sid] = detok(prior[i][0]["tokens"])
                text["reference"][sid] = detok(sample["target"][i])
    ids = sorted(text["reference"])
    refs = [[text["reference"][i] for i in ids]]
    return {k: sacrebleu.corpus_bleu([text[k][i] for i in ids], refs, tokenize="none", force=True)
            for k in ("prior codes", "own codes")}


def report(
    counts: torch.Tensor, lengths: collections.Counter, top: int, spread: float, reliance: float,
    posterior: Optional[Tuple[float, float]] = None,
) -> str:
    from .criterions.vqlatent_loss import code_perplexity

    total = int(counts.sum())
    used = int((counts > 0).sum())
    lines = [
        f"latent positions   {total}",
        f"code perplexity    {code_perplexity(counts):.1f}",
        f"distinct codes     {used} of {len(counts)} ({100.0 * used / len(counts):.1f}%)",
        f"code spread        {spread:.3f} (mean distance between used codes / their norm)",
        f"tokens changed     {100.0 * reliance:.1f}% when every code is replaced by the most frequent one",
    ]
    if posterior is not None:  # soft EM samples among the codes a latent's posterior spreads over
        each, whole = posterior
        lines.append(f"code posterior     {each:.2f} nats per latent (as wide as {math.exp(each):.0f} codes alike); "
                     f"batch-averaged {whole:.2f}; I(z; c) = {whole - each:.2f} nats")
    lines.append("most frequent codes (code: count, share):")
    values, codes = counts.topk(min(top, len(counts)))
    for c, v in zip(codes.tolist(), values.tolist()):
        if v > 0:
            lines.append(f"  {c:>6}: {int(v):>8}  {100.0 * v / max(total, 1):5.1f}%")
    lines.append("latent length (codes per sentence: sentences):")
    for n in sorted(lengths):
        lines.append(f"  {n:>4}: {lengths[n]}")
    return "\n".join(lines)


def main(argv=None) -> None:
    from .errors import install_excepthook

    install_excepthook()
    from .tasks.translation_vqlatent import TranslationVQLatentConfig

    parser = argparse.ArgumentParser(prog="python -m fairseq_vqlatent.inspect_codes", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a vqlatent_transformer checkpoint (.pt)")
    parser.add_argument("data", help="the fairseq-preprocess directory the model was trained on")
    parser.add_argument("--split", default="valid", help="split to inspect (default: valid)")
    parser.add_argument("--top", type=int, default=10, help="how many frequent codes to list")
    parser.add_argument("--max-tokens", type=int, default=8000, help="batch size in tokens")
    parser.add_argument(
        "--bleu", action="store_true", help="also decode the split from the prior's codes and from its own codes"
    )
    parser.add_argument("--max-len-a", type=float, default=1.2, help="--bleu: code budget a|x| + b (the pipeline's)")
    parser.add_argument("--max-len-b", type=int, default=10, help="--bleu: code budget a|x| + b (the pipeline's)")
    parser.add_argument(
        "--ctc-blank-penalty", type=float, default=TranslationVQLatentConfig.ctc_blank_penalty,
        help="--bleu, CTC models: as the task's option (default: its default)",
    )
    args = parser.parse_args(argv)

    from fairseq import checkpoint_utils

    from .errors import VQLatentError, loading_checkpoint
    from .models.vqlatent_transformer import is_vqlatent_model

    for path, what in ((args.checkpoint, "checkpoint"), (args.data, "data directory")):
        if not os.path.exists(path):
            sys.exit(f"error: {what} {path} does not exist")
    with loading_checkpoint(args.checkpoint):
        models, _, task = checkpoint_utils.load_model_ensemble_and_task(
            [args.checkpoint], arg_overrides={"data": args.data}
        )
    model = models[0]
    if not is_vqlatent_model(model):
        raise VQLatentError(f"{args.checkpoint} is not a vqlatent_transformer checkpoint")
    try:
        task.load_dataset(args.split)
    except FileNotFoundError as e:
        sys.exit(f"error: split {args.split!r} not found in {args.data}: {e}")
    counts, lengths = code_statistics(model, task, args.split, args.max_tokens)
    spread = code_spread(model.bottleneck, counts)
    reliance = code_reliance(model, task, args.split, args.max_tokens, counts)
    print(f"{args.checkpoint} on {args.data} [{args.split}], bottleneck {model.cfg.bottleneck}")
    posterior = posterior_information(model, task, args.split, args.max_tokens)
    print(report(counts, lengths, args.top, spread, reliance, posterior))
    if args.bleu:
        scheme_file = os.path.join(args.data, "subword-scheme")
        scheme = open(scheme_file).read().strip() if os.path.exists(scheme_file) else "subword_nmt"
        bpe = "sentencepiece" if scheme == "sentencepiece" else "@@ "
        print("one-shot BLEU (tokenised, subwords joined) against the split's targets:")
        for name, bleu in code_oracle_bleu(
            model, task, args.split, args.max_tokens, bpe, args.max_len_a, args.max_len_b, args.ctc_blank_penalty
        ).items():
            print(f"  {name:<12} {bleu.score:6.2f}  "
                  f"length ratio {bleu.sys_len / max(bleu.ref_len, 1):.3f}")


if __name__ == "__main__":
    main()
