"""Codebook health over a whole split.

    python -m fairseq_vqlatent.inspect_codes CHECKPOINT DATA [--split valid] [--top 10]

Encodes every target of the split with the trained compressor and bottleneck
(eval mode: deterministic codes) and prints the code perplexity, how many
distinct codes were used, the most frequent codes and the distribution of latent
lengths. A healthy codebook uses a large share of its codes; a collapsed one
shows a perplexity near 1 and a handful of codes.
"""

import argparse
import collections
import os
import sys

import torch


def code_statistics(model, task, split: str, max_tokens: int):
    """-> (counts [K] tensor, Counter of latent lengths)."""
    dataset = task.dataset(split)
    itr = task.get_batch_iterator(
        dataset=dataset, max_tokens=max_tokens, max_positions=model.max_positions(), ignore_invalid_inputs=True
    ).next_epoch_itr(shuffle=False)
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


def report(counts: torch.Tensor, lengths: collections.Counter, top: int) -> str:
    from .criterions.vqlatent_loss import code_perplexity

    total = int(counts.sum())
    used = int((counts > 0).sum())
    lines = [
        f"latent positions   {total}",
        f"code perplexity    {code_perplexity(counts):.1f}",
        f"distinct codes     {used} of {len(counts)} ({100.0 * used / len(counts):.1f}%)",
        "most frequent codes (code: count, share):",
    ]
    values, codes = counts.topk(min(top, len(counts)))
    for c, v in zip(codes.tolist(), values.tolist()):
        if v > 0:
            lines.append(f"  {c:>6}: {int(v):>8}  {100.0 * v / max(total, 1):5.1f}%")
    lines.append("latent length (codes per sentence: sentences):")
    for n in sorted(lengths):
        lines.append(f"  {n:>4}: {lengths[n]}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fairseq_vqlatent.inspect_codes", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a vqlatent_transformer checkpoint (.pt)")
    parser.add_argument("data", help="the fairseq-preprocess directory the model was trained on")
    parser.add_argument("--split", default="valid", help="split to inspect (default: valid)")
    parser.add_argument("--top", type=int, default=10, help="how many frequent codes to list")
    parser.add_argument("--max-tokens", type=int, default=8000, help="batch size in tokens")
    args = parser.parse_args(argv)

    from fairseq import checkpoint_utils

    from .errors import VQLatentError
    from .models.vqlatent_transformer import is_vqlatent_model

    for path, what in ((args.checkpoint, "checkpoint"), (args.data, "data directory")):
        if not os.path.exists(path):
            sys.exit(f"error: {what} {path} does not exist")
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
    print(f"{args.checkpoint} on {args.data} [{args.split}], bottleneck {model.cfg.bottleneck}")
    print(report(counts, lengths, args.top))


if __name__ == "__main__":
    main()
