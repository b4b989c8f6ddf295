"""A kill at any moment loses at most the updates since the last checkpoint (issue 25).

A SIGKILL while fairseq-train copies a save onto checkpoint_last.pt, a checkpoint_last.pt
cut off by an earlier kill, and a disk that fills during a write: each run resumes (or
stops in one line) and ends bit-identical to a run that was never interrupted."""

import os
import re
import resource
import shutil
import signal
import textwrap

import pytest
import torch
from fairseq import checkpoint_utils

from conftest import TINY_TRAIN_ARGS, run
from test_resume import tensors

from fairseq_vqlatent import VQLatentError
from fairseq_vqlatent.kill_safe_checkpoints import is_complete, resume_from_newest_complete

ARGS = [*TINY_TRAIN_ARGS, "--no-epoch-checkpoints", "--save-interval-updates", "10"]

# Started as sitecustomize in every Python process of a command: the N-th copy of a
# checkpoint onto FILE (or onto FILE.tmp) writes half the bytes, then the process is killed.
KILL_DURING_COPY = textwrap.dedent("""
    import os, shutil, signal
    target, nth = os.environ["KILL_DURING_COPY_TO"], int(os.environ["KILL_AT_COPY"])
    copy, seen = shutil.copyfile, []
    def copyfile(src, dst, *a, **k):
        if os.path.basename(dst) in (target, target + ".tmp"):
            seen.append(dst)
            if len(seen) == nth:
                data = open(src, "rb").read()
                with open(dst, "wb") as f:
                    f.write(data[: len(data) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
        return copy(src, dst, *a, **k)
    shutil.copyfile = copyfile
""")


def fault_injection(tmp_path, target="checkpoint_last.pt", nth=2) -> dict:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(KILL_DURING_COPY)
    return {"PYTHONPATH": str(hooks), "KILL_DURING_COPY_TO": target, "KILL_AT_COPY": str(nth)}


def same_training_state(a_path, b_path):
    a, b = (checkpoint_utils.load_checkpoint_to_cpu(str(p)) for p in (a_path, b_path))
    for part in ("model", "last_optimizer_state"):
        ta, tb = tensors(a[part]), tensors(b[part])
        assert ta.keys() == tb.keys()
        differ = [k for k in ta if not torch.equal(ta[k], tb[k])]
        assert not differ, f"{part}: {len(differ)} of {len(ta)} tensors differ, e.g. {differ[:3]}"
    assert a["optimizer_history"][-1]["num_updates"] == b["optimizer_history"][-1]["num_updates"]


@pytest.fixture(scope="module")
def uninterrupted(slice_data, tmp_path_factory):
    save = tmp_path_factory.mktemp("uninterrupted")
    run(["fairseq-train", slice_data / "bin", *ARGS, "--max-update", "30", "--save-dir", save])
    return save


def test_a_kill_while_checkpoint_last_is_written_resumes_bit_identical(slice_data, uninterrupted, tmp_path):
    save = tmp_path / "save"
    cmd = ["fairseq-train", slice_data / "bin", *ARGS, "--max-update", "30", "--save-dir", save]
    killed = run(cmd, check=False, env=fault_injection(tmp_path))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert list(save.glob("checkpoint_*_20.pt")) and (save / "checkpoint_last.pt.tmp").exists()
    assert is_complete(save / "checkpoint_last.pt")  # the copy went to a temporary name: the old one is whole

    resumed = run(cmd)
    log = resumed.stdout + resumed.stderr
    assert re.search(r"warning: resuming from checkpoint_\d+_20\.pt \(update 20\), the newest complete checkpoint", log), \
        log[-2000:]
    assert "@ 20 updates" in log
    assert not list(save.glob("*.tmp"))
    same_training_state(uninterrupted / "checkpoint_last.pt", save / "checkpoint_last.pt")


def test_a_truncated_checkpoint_last_resumes_from_the_newest_complete_one(slice_data, uninterrupted, tmp_path):
    save = tmp_path / "save"
    save.mkdir()
    for update in (10, 20):
        [interval] = uninterrupted.glob(f"checkpoint_*_{update}.pt")
        (save / interval.name).write_bytes(interval.read_bytes())
    whole = interval.read_bytes()
    (save / "checkpoint_last.pt").write_bytes(whole[:917_504])  # what a kill during fairseq's own copy left

    resumed = run(["fairseq-train", slice_data / "bin", *ARGS, "--max-update", "30", "--save-dir", save])
    log = resumed.stdout + resumed.stderr
    assert f"resuming from {interval.name} (update 20)" in log and "checkpoint_last.pt is truncated" in log, log[-2000:]
    same_training_state(uninterrupted / "checkpoint_last.pt", save / "checkpoint_last.pt")


def test_rerunning_a_finished_training_changes_nothing(slice_data, uninterrupted, tmp_path):
    """fairseq resumed at --max-update took one more step before it checked (update 31 of 30)."""
    save = tmp_path / "save"
    shutil.copytree(uninterrupted, save)
    rerun = run(["fairseq-train", slice_data / "bin", *ARGS, "--max-update", "30", "--save-dir", save])
    assert "training had already reached --max-update 30: nothing to do" in rerun.stdout, rerun.stdout[-2000:]
    same_training_state(uninterrupted / "checkpoint_last.pt", save / "checkpoint_last.pt")


def fill_the_disk_at(limit_bytes):
    """A file-size limit: a write past it fails with EFBIG as a write to a full disk fails with ENOSPC."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return limit


def test_a_failed_write_leaves_no_temporary_file_and_says_so_in_one_line(slice_data, tmp_path):
    import subprocess

    from conftest import BIN, REPO

    save = tmp_path / "save"
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", OMP_NUM_THREADS="1")
    proc = subprocess.run([str(BIN / "fairseq-train"), str(slice_data / "bin"), *ARGS, "--max-update", "30",
                           "--save-dir", str(save)], cwd=REPO, env=env, capture_output=True, text=True,
                          preexec_fn=fill_the_disk_at(1_000_000), timeout=600)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.fullmatch(
        rf"error: could not write {save}/checkpoint_\d+_10\.pt \(File too large\), so the training stopped: free "
        r"space there \(or fix the cause\) and rerun the same command, which resumes from the last complete checkpoint",
        errors[0]), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not list(save.glob("*.tmp")) and not list(save.glob("*.pt"))


# ------------------------------------------------------------ the choice of checkpoint, on small files


def checkpoint_files(tmp_path, files):
    """(name, update count) pairs, written in this order."""
    for i, (name, updates) in enumerate(files):
        torch.save({"optimizer_history": [{"num_updates": updates}]}, tmp_path / name)
        os.utime(tmp_path / name, ns=(10**18 + i * 10**9,) * 2)
    return tmp_path


def test_a_newer_interval_checkpoint_than_checkpoint_last_is_taken(tmp_path):
    save = checkpoint_files(tmp_path, [("checkpoint_last.pt", 10), ("checkpoint_1_20.pt", 20), ("checkpoint_best.pt", 20)])
    assert resume_from_newest_complete(str(save)) == str(save / "checkpoint_1_20.pt")
    assert torch.load(save / "checkpoint_last.pt")["optimizer_history"][-1]["num_updates"] == 20


def test_checkpoint_last_stays_when_it_is_the_newest(tmp_path):
    save = checkpoint_files(tmp_path, [("checkpoint_1_20.pt", 20), ("checkpoint_best.pt", 20), ("checkpoint_last.pt", 20),
                                       ("checkpoint_avg.pt", 99)])  # an average is no training state
    (save / "checkpoint_last.pt.tmp").write_bytes(b"half")
    assert resume_from_newest_complete(str(save)) is None
    assert not (save / "checkpoint_last.pt.tmp").exists()


def test_a_checkpoint_copied_onto_checkpoint_last_by_hand_is_respected(tmp_path):
    save = checkpoint_files(tmp_path, [("checkpoint_1_10.pt", 10), ("checkpoint_1_20.pt", 20), ("checkpoint_last.pt", 10)])
    assert resume_from_newest_complete(str(save)) is None


def test_a_truncated_checkpoint_last_alone_is_a_one_line_error(tmp_path):
    save = checkpoint_files(tmp_path, [("checkpoint_last.pt", 10)])
    (save / "checkpoint_last.pt").write_bytes((save / "checkpoint_last.pt").read_bytes()[:100])
    with pytest.raises(VQLatentError, match="checkpoint_last.pt is truncated or corrupt, and no complete checkpoint"):
        resume_from_newest_complete(str(save))
