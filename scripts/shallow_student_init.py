#!/usr/bin/env python3
"""Cut a trained fairseq transformer down to a deep-encoder, shallow-decoder student.

    shallow_student_init.py TEACHER_CKPT OUT_CKPT [--decoder-layers N]

The student of Kasai et al. (2021) keeps the teacher's encoder and decodes with a
single layer: most of autoregressive decoding time goes to the decoder. Rather than
train it from scratch on a CPU budget, it starts from the teacher: everything
outside decoder.layers (encoder, embeddings, the decoder's final layer norm and
output projection) as it is, and the teacher's top N decoder layers renumbered
0..N-1; the top layers are the ones the final layer norm and output projection were
trained to read.

The teacher's training state is dropped along with its lower layers: the optimizer
state, and the extra state, whose training time would count against the student's
--stop-time-hours (fairseq restores it whatever the --reset-* flags say) and whose
iterator points into the teacher's epochs.
"""

import argparse
import os
import re
import sys

LAYER = re.compile(r"decoder\.layers\.(\d+)\.(.*)")


class Refused(Exception):
    """A checkpoint or option this script cannot use; shown as one line."""


def load(path: str) -> dict:
    import fairseq_vqlatent  # noqa: F401  (lets weights-only loading read fairseq's argparse Namespace)
    from fairseq import checkpoint_utils

    if not os.path.isfile(path):
        raise Refused(f"teacher checkpoint {path} does not exist")
    try:
        state = checkpoint_utils.load_checkpoint_to_cpu(path)
    except Exception as e:  # truncated, not a torch file, or a pickle weights-only loading refuses
        raise Refused(f"cannot load {path}: {(str(e).splitlines() or [type(e).__name__])[0]}") from None
    weights = state.get("model")
    # A latent model has encoder and decoder layers too, but also prior.*, bottleneck.*, ...
    if (not isinstance(weights, dict) or not all(k.startswith(("encoder.", "decoder.")) for k in weights)
            or not any(k.startswith("encoder.layers.") for k in weights) or not any(map(LAYER.match, weights))):
        raise Refused(f"{path} is not a fairseq encoder-decoder transformer checkpoint")
    return state


def top_layers(weights: dict, n: int):
    """The weights with only the top n decoder layers, renumbered from 0; and the teacher's depth."""
    depth = 1 + max(int(m.group(1)) for m in map(LAYER.match, weights) if m)
    if not 1 <= n <= depth:
        raise Refused(f"--decoder-layers {n}: the teacher has {depth} decoder layers, give 1 to {depth}")
    first = depth - n
    kept = {}
    for name, value in weights.items():
        m = LAYER.match(name)
        if m is None:
            kept[name] = value
        elif int(m.group(1)) >= first:
            kept[f"decoder.layers.{int(m.group(1)) - first}.{m.group(2)}"] = value
    return kept, depth


def set_decoder_layers(model_cfg, n: int) -> None:
    """fairseq's own `transformer` keeps its options as an argparse Namespace, dataclass models as a dict."""
    if isinstance(model_cfg, argparse.Namespace):
        model_cfg.decoder_layers = n
    elif isinstance(model_cfg, dict):
        if "decoder_layers" in model_cfg:
            model_cfg["decoder_layers"] = n
        if isinstance(model_cfg.get("decoder"), dict) and "layers" in model_cfg["decoder"]:
            model_cfg["decoder"]["layers"] = n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("teacher")
    p.add_argument("out")
    p.add_argument("--decoder-layers", type=int, default=1, help="decoder layers the student keeps (default 1)")
    args = p.parse_args(argv)
    n = args.decoder_layers
    try:
        if n < 1:  # before the slow load
            raise Refused(f"--decoder-layers {n}: give at least 1")
        state = load(args.teacher)
        state["model"], depth = top_layers(state["model"], n)
    except Refused as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    import torch
    from omegaconf import OmegaConf

    if OmegaConf.is_config(state.get("cfg")):
        # Plain containers, as fairseq's trainer saves them: weights-only loading refuses omegaconf's classes.
        state["cfg"] = OmegaConf.to_container(state["cfg"], resolve=True, enum_to_str=True)
    # fairseq rebuilds cfg from args when a checkpoint has both, so both must say n.
    set_decoder_layers((state.get("cfg") or {}).get("model"), n)
    set_decoder_layers(state.get("args"), n)
    state["last_optimizer_state"] = None
    state["optimizer_history"] = [dict(state["optimizer_history"][-1], num_updates=0)]  # fairseq's loader needs one
    state["extra_state"] = {}

    tmp = args.out + ".tmp"  # a crash mid-write must not leave a truncated OUT_CKPT for fairseq-train to read
    torch.save(state, tmp)
    os.replace(tmp, args.out)
    print(f"{args.out}: the teacher's encoder, embeddings, decoder layer norm and output projection, and its "
          f"decoder layers {depth - n}..{depth - 1} (of {depth}) as 0..{n - 1}; optimizer and training state dropped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
