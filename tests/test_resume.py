"""Interrupted training continues the same run: 20 updates, a stop, and 20 more
from checkpoint_last.pt end bit-identical to 40 updates in one go (issue 10)."""

import torch
from fairseq import checkpoint_utils

from conftest import TINY_TRAIN_ARGS, run

# soft EM with k-means initialisation and dead-code re-seeding: the codebook's
# buffers and the RNG-driven E-step must survive the stop too.
ARGS = [*TINY_TRAIN_ARGS, "--bottleneck", "soft_em", "--dead-code-threshold", "0.5", "--no-epoch-checkpoints"]


def tensors(tree, prefix=""):
    """Every tensor in a nested dict/list, by path."""
    if torch.is_tensor(tree):
        return {prefix: tree}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else ()
    out = {}
    for k, v in items:
        out.update(tensors(v, f"{prefix}/{k}"))
    return out


def test_a_stop_and_resume_is_bit_identical_to_one_run(slice_data, tmp_path):
    once, twice = tmp_path / "once", tmp_path / "twice"
    run(["fairseq-train", slice_data / "bin", *ARGS, "--max-update", "40", "--save-dir", once])
    run(["fairseq-train", slice_data / "bin", *ARGS, "--max-update", "20", "--save-dir", twice])
    resumed = run(["fairseq-train", slice_data / "bin", *ARGS, "--max-update", "40", "--save-dir", twice])
    assert "@ 20 updates" in resumed.stdout + resumed.stderr  # it did resume, mid-epoch

    a = checkpoint_utils.load_checkpoint_to_cpu(str(once / "checkpoint_last.pt"))
    b = checkpoint_utils.load_checkpoint_to_cpu(str(twice / "checkpoint_last.pt"))
    model_a, model_b = tensors(a["model"]), tensors(b["model"])
    assert model_a.keys() == model_b.keys()
    assert any("codebook" in k for k in model_a)  # the codebook buffers are part of it
    differ = [k for k in model_a if not torch.equal(model_a[k], model_b[k])]
    assert not differ, f"{len(differ)} of {len(model_a)} model tensors differ, e.g. {differ[:3]}"

    opt_a, opt_b = tensors(a["last_optimizer_state"]), tensors(b["last_optimizer_state"])
    assert opt_a and opt_a.keys() == opt_b.keys()
    differ = [k for k in opt_a if not torch.equal(opt_a[k], opt_b[k])]
    assert not differ, f"{len(differ)} of {len(opt_a)} optimizer tensors differ, e.g. {differ[:3]}"
    assert a["optimizer_history"][-1]["num_updates"] == b["optimizer_history"][-1]["num_updates"] == 40
