"""python -m fairseq_vqlatent.average_checkpoints: the mean, and its errors."""

import collections

import pytest
import torch

from conftest import run
from fairseq_vqlatent import VQLatentError
from fairseq_vqlatent.average_checkpoints import average_parameters, interval_checkpoints


def test_floating_point_parameters_are_averaged_and_counters_come_from_the_newest():
    a = collections.OrderedDict(w=torch.tensor([1.0, 2.0]), n=torch.tensor(3))
    b = collections.OrderedDict(w=torch.tensor([3.0, 6.0]), n=torch.tensor(7))
    mean = average_parameters([a, b])
    assert torch.equal(mean["w"], torch.tensor([2.0, 4.0])) and int(mean["n"]) == 7
    half = average_parameters([collections.OrderedDict(w=torch.tensor([1.0], dtype=torch.float16))] * 3)
    assert half["w"].dtype == torch.float16 and float(half["w"]) == 1.0


def test_a_k_means_pool_in_an_early_checkpoint_is_left_out():
    """The pipeline averaged checkpoint_1_10.pt, saved while k-means pooled, with checkpoint_2_20.pt."""
    early = collections.OrderedDict(w=torch.tensor([1.0]), **{"bottleneck.codebook.kmeans_pool": torch.zeros(946, 16)})
    mean = average_parameters([early, collections.OrderedDict(w=torch.tensor([3.0]))])
    assert list(mean) == ["w"] and float(mean["w"]) == 2.0


def test_checkpoints_of_different_models_are_refused_naming_the_parameter():
    with pytest.raises(VQLatentError, match=r"parameter w has shape \(3,\) in input 1 but \(2,\)"):
        average_parameters([{"w": torch.zeros(3)}, {"w": torch.zeros(2)}])
    with pytest.raises(VQLatentError, match="different parameters"):
        average_parameters([{"w": torch.zeros(2)}, {"v": torch.zeros(2)}])


def test_interval_checkpoints_are_ordered_by_update(tmp_path):
    for name in ("checkpoint_9_1000.pt", "checkpoint_10_1100.pt", "checkpoint_2_200.pt", "checkpoint_best.pt",
                 "checkpoint_last.pt", "checkpoint_avg.pt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.split("/")[-1] for p in interval_checkpoints(str(tmp_path))] == [
        "checkpoint_2_200.pt", "checkpoint_9_1000.pt", "checkpoint_10_1100.pt"]


@pytest.mark.parametrize("args, message", [
    (["{tmp}/nope"], "save directory {tmp}/nope does not exist"),
    (["{tmp}"], "holds no interval checkpoints"),
    (["--inputs", "{tmp}/missing.pt"], "checkpoint {tmp}/missing.pt does not exist"),
    (["--inputs", "{tmp}/empty.pt"], "checkpoint {tmp}/empty.pt is empty (0 bytes)"),
    (["--inputs", "{tmp}/garbage.pt"], "checkpoint {tmp}/garbage.pt is not a torch checkpoint"),
])
def test_bad_inputs_get_one_line_errors(tmp_path, args, message):
    (tmp_path / "garbage.pt").write_text("not a checkpoint")
    (tmp_path / "empty.pt").write_bytes(b"")
    out = tmp_path / "out.pt"
    proc = run(["python", "-m", "fairseq_vqlatent.average_checkpoints",
                *[a.format(tmp=tmp_path) for a in args], "--output", out], check=False)
    last_line = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode != 0 and last_line.startswith("error: "), proc.stderr[-2000:]
    assert message.format(tmp=tmp_path) in last_line
    assert "Traceback" not in proc.stderr and not out.exists()
