"""Average the parameters of a training run's last checkpoints (Vaswani et al. 2017).

    python -m fairseq_vqlatent.average_checkpoints SAVE_DIR --last N --output OUT.pt
    python -m fairseq_vqlatent.average_checkpoints --inputs A.pt B.pt ... --output OUT.pt

With SAVE_DIR, the inputs are its last N interval checkpoints
(checkpoint_EPOCH_UPDATE.pt, written by --save-interval-updates and kept by
--keep-interval-updates), by update. fairseq ships the same as
scripts/average_checkpoints.py, which its pip package leaves out.

The one-shot model's valid BLEU swings by a point or two between checkpoints a
hundred updates apart. The average of the last five beat every checkpoint it was
made of in one window of the benchmark's run and trailed the best of them in
another (benchmarks/results/one-shot-gap-multi30k.md), so the pipeline only
offers it (--average-last N), and valid BLEU decides. Floating-point tensors
are averaged, buffers of other types (counters) come from the newest input, as
do the configuration and everything else in it; the optimizer state is left
out, so the result is for decoding, not for resuming.
"""

import argparse
import collections
import os
import re
import sys
from typing import Dict, List

import torch

from .errors import VQLatentError
from .modules.bottlenecks.codebook import POOL_KEY

INTERVAL_CHECKPOINT = re.compile(r"^checkpoint_(\d+)_(\d+)\.pt$")


def interval_checkpoints(save_dir: str) -> List[str]:
    """SAVE_DIR's checkpoint_EPOCH_UPDATE.pt files, oldest update first."""
    found = []
    for name in os.listdir(save_dir):
        m = INTERVAL_CHECKPOINT.match(name)
        if m:
            found.append((int(m.group(2)), os.path.join(save_dir, name)))
    return [path for _, path in sorted(found)]


def average_parameters(models: List[Dict[str, torch.Tensor]]) -> "collections.OrderedDict[str, torch.Tensor]":
    """state dicts -> their mean, key by key (floating point), or the last one's value."""
    # A checkpoint saved while k-means still pooled encoder outputs holds that pool: no parameter.
    models = [collections.OrderedDict((k, v) for k, v in m.items() if not k.endswith(POOL_KEY)) for m in models]
    newest = models[-1]
    for i, model in enumerate(models[:-1]):
        if model.keys() != newest.keys():
            diff = sorted(set(model) ^ set(newest))
            raise VQLatentError(f"input {i + 1} and the newest input hold different parameters ({diff[0]} ...): "
                                "average checkpoints of one model only")
    averaged = collections.OrderedDict()
    for key, value in newest.items():
        for i, model in enumerate(models):
            if model[key].shape != value.shape:
                raise VQLatentError(f"parameter {key} has shape {tuple(model[key].shape)} in input {i + 1} "
                                    f"but {tuple(value.shape)} in the newest: average checkpoints of one model only")
        if torch.is_floating_point(value):
            total = sum(model[key].double() for model in models)
            averaged[key] = (total / len(models)).to(value.dtype)
        else:
            averaged[key] = value.clone()
    return averaged


def average_checkpoints(paths: List[str]) -> dict:
    """Checkpoint files -> one checkpoint dict: the newest's, with averaged parameters."""
    from .checkpoint_safety import read_checkpoint
    from omegaconf import OmegaConf

    states = []
    for path in paths:
        state = read_checkpoint(path)
        if "model" not in state:
            raise VQLatentError(f"{path} is not a fairseq checkpoint (it has no model parameters)")
        states.append(state)
    averaged = dict(states[-1])
    averaged["model"] = average_parameters([s["model"] for s in states])
    if OmegaConf.is_config(averaged.get("cfg")):  # saved as plain containers, as fairseq's trainer does
        averaged["cfg"] = OmegaConf.to_container(averaged["cfg"], resolve=True, enum_to_str=True)
    averaged["last_optimizer_state"] = None
    averaged["averaged_from"] = [os.path.basename(p) for p in paths]
    return averaged


def main(argv=None) -> None:
    from .errors import install_excepthook

    install_excepthook()
    parser = argparse.ArgumentParser(prog="python -m fairseq_vqlatent.average_checkpoints",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("save_dir", nargs="?", help="a training's --save-dir: average its last --last interval checkpoints")
    parser.add_argument("--last", type=int, default=5, help="how many of SAVE_DIR's interval checkpoints (default 5)")
    parser.add_argument("--inputs", nargs="+", help="checkpoint files to average instead of SAVE_DIR's")
    parser.add_argument("--output", required=True, help="where to write the averaged checkpoint")
    args = parser.parse_args(argv)

    from .checkpoint_safety import allow_fairseq_checkpoints

    allow_fairseq_checkpoints()
    try:
        if args.inputs:
            paths = args.inputs
        elif args.save_dir:
            if not os.path.isdir(args.save_dir):
                raise VQLatentError(f"save directory {args.save_dir} does not exist")
            if args.last < 1:
                raise VQLatentError(f"--last must be at least 1, got {args.last}")
            paths = interval_checkpoints(args.save_dir)[-args.last:]
            if not paths:
                raise VQLatentError(f"{args.save_dir} holds no interval checkpoints (checkpoint_EPOCH_UPDATE.pt): "
                                    "train with --save-interval-updates and --keep-interval-updates")
        else:
            raise VQLatentError("give a SAVE_DIR or --inputs")
        state = average_checkpoints(paths)
    except VQLatentError as e:
        sys.exit(f"error: {e}")
    tmp = args.output + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, args.output)  # never a half-written checkpoint under the final name
    print(f"averaged {len(paths)} checkpoints ({', '.join(os.path.basename(p) for p in paths)}) -> {args.output}")


if __name__ == "__main__":
    main()
