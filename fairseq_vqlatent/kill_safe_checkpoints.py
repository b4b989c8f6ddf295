"""Checkpoint files that a kill or a full disk cannot spoil.

fairseq writes a save's first file (``checkpoint_1_20.pt``, say) through a temporary
name and a rename, but then copies it onto ``checkpoint_best.pt`` and
``checkpoint_last.pt`` in place: a kill during that copy left ``checkpoint_last.pt``
cut off at 917,504 of 164,641,493 bytes, and every later run failed to resume. A
failed write (a full disk) left the temporary file behind, after a traceback.

Here every checkpoint write and copy goes through a temporary name, ``fsync`` and a
rename, a failed one is removed and reported in one line, and a training that resumes
from ``checkpoint_last.pt`` starts from the newest complete checkpoint in its save
directory, whatever a kill left there: at most the updates since that checkpoint are lost.
"""

import os
import re
import shutil
import sys
import zipfile
from typing import List, Optional

import torch
from fairseq import checkpoint_utils
from fairseq.file_io import PathManager

from .errors import VQLatentError, first_line

# fairseq's own names (last, best, epoch, interval, best-by-metric); not e.g. an averaged checkpoint_avg.pt.
TRAINING_CHECKPOINT = re.compile(r"checkpoint(_last|_best|\d+|_\d+_\d+|\.best_.+)\.pt")


def is_complete(path: str) -> bool:
    """torch.save writes a zip archive whose directory comes last, so a cut-off file has none."""
    try:
        with zipfile.ZipFile(path) as archive:
            return bool(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def training_checkpoints(save_dir: str) -> List[str]:
    """fairseq's checkpoints in ``save_dir``."""
    return [os.path.join(save_dir, n) for n in sorted(os.listdir(save_dir)) if TRAINING_CHECKPOINT.fullmatch(n)]


def updates_in(path: str) -> int:
    """The update count a complete checkpoint was saved at (memory-mapped: its tensors are not read)."""
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return int(state["optimizer_history"][-1]["num_updates"])


def resume_from_newest_complete(save_dir: str) -> Optional[str]:
    """Make ``checkpoint_last.pt`` the most advanced complete checkpoint; returns the file it came from, if another.

    A complete ``checkpoint_last.pt`` is kept unless a checkpoint written after it holds more
    updates (a kill between a save's first file and its copy onto checkpoint_last.pt), so that
    a checkpoint copied there by hand to restart from is respected.
    """
    for stale in (n for n in os.listdir(save_dir) if n.endswith(".pt.tmp")):
        os.remove(os.path.join(save_dir, stale))  # a write that a kill cut short: never complete
    last = os.path.join(save_dir, "checkpoint_last.pt")
    others = [p for p in training_checkpoints(save_dir) if p != last]
    if os.path.exists(last) and is_complete(last):
        mtime, last_updates = os.stat(last).st_mtime_ns, updates_in(last)
        others = [p for p in others if os.stat(p).st_mtime_ns > mtime]  # written after it
        last_state = f"is older (update {last_updates})"
    else:
        last_updates, last_state = -1, "is truncated" if os.path.exists(last) else "is missing"
    complete = [(n, p) for n, p in ((updates_in(p), p) for p in others if is_complete(p)) if n > last_updates]
    if not complete:
        if last_state == "is truncated":
            raise VQLatentError(f"{last} is truncated or corrupt, and no complete checkpoint lies beside it: "
                                f"delete it to train from the start")
        return None
    # the most updates; among copies of one save, the save's own file (checkpoint_1_20.pt) before best's
    updates, newest = max(complete, key=lambda c: (c[0], "best" not in os.path.basename(c[1])))
    atomic_copy(newest, last)
    print(f"warning: resuming from {os.path.basename(newest)} (update {updates}), the newest complete checkpoint "
          f"in {save_dir}; checkpoint_last.pt {last_state} (a stop while checkpoints were written)",
          file=sys.stderr, flush=True)
    return newest


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def write_failed(path: str, error: BaseException) -> VQLatentError:
    reason = first_line(error) or type(error).__name__
    cause = error
    while cause is not None:  # torch's zip writer reports the file's OSError as a RuntimeError about positions
        if isinstance(cause, OSError) and cause.strerror:
            reason = cause.strerror
            break
        cause = cause.__cause__ or cause.__context__
    return VQLatentError(f"could not write {path} ({reason}), so the training stopped: free space there "
                         "(or fix the cause) and rerun the same command, which resumes from the last complete checkpoint")


def atomic_save(obj, filename: str) -> None:
    tmp = filename + ".tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filename)
    except (OSError, RuntimeError) as e:  # torch's zip writer reports a failed write as RuntimeError
        _remove(tmp)
        raise write_failed(filename, e) from None


def atomic_copy(src: str, dst: str) -> bool:
    tmp = dst + ".tmp"
    try:
        shutil.copyfile(src, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    except OSError as e:
        _remove(tmp)
        raise write_failed(dst, e) from None
    return True


def verify_save_dir(save_dir: str) -> None:
    if os.path.exists(save_dir) and not os.path.isdir(save_dir):
        raise VQLatentError(f"--save-dir {save_dir} is a file, not a directory: choose another --save-dir")
    probe = os.path.join(save_dir, "dummy")
    try:
        os.makedirs(save_dir, exist_ok=True)
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise VQLatentError(f"--save-dir {save_dir} cannot be written ({e.strerror}): choose another --save-dir") from None


def install() -> None:
    """Route fairseq's checkpoint writes, copies, save-dir check and resume through the functions above."""
    if getattr(checkpoint_utils, "_vqlatent_kill_safe", False):
        return
    fairseq_save, fairseq_copy = checkpoint_utils.torch_persistent_save, PathManager.copy
    fairseq_load = checkpoint_utils.load_checkpoint

    def torch_persistent_save(obj, filename, async_write: bool = False):
        if async_write or PathManager.path_requires_pathmanager(filename):
            return fairseq_save(obj, filename, async_write)  # remote storage: fairseq's own way
        atomic_save(obj, filename)

    def copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
        if PathManager.path_requires_pathmanager(dst_path):
            return fairseq_copy(src_path, dst_path, overwrite)
        return atomic_copy(src_path, dst_path)

    def load_checkpoint(cfg, trainer, **passthrough_args):
        if (cfg.restore_file == "checkpoint_last.pt" and not cfg.no_last_checkpoints
                and not getattr(trainer, "checkpoint_suffix", "") and os.path.isdir(cfg.save_dir)):
            if getattr(trainer, "data_parallel_rank", 0) == 0:  # one worker mends the save directory
                resume_from_newest_complete(cfg.save_dir)
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.barrier()  # and the others look only after it has
        loaded = fairseq_load(cfg, trainer, **passthrough_args)
        max_update = trainer.cfg.optimization.max_update
        if max_update > 0 and trainer.get_num_updates() >= max_update:
            # fairseq would take one more step before it checks (update 21 of 20): a rerun after a
            # kill between the last save and the end must leave the finished model as it is
            print(f"training had already reached --max-update {max_update}: nothing to do", flush=True)
            raise SystemExit(0)
        return loaded

    checkpoint_utils.torch_persistent_save = torch_persistent_save
    checkpoint_utils.verify_checkpoint_directory = verify_save_dir
    checkpoint_utils.load_checkpoint = load_checkpoint
    PathManager.copy = staticmethod(copy)
    checkpoint_utils._vqlatent_kill_safe = True
