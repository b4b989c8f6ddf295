"""Errors about the user's input, shown as one clear line instead of a traceback.

Our own checks raise :class:`VQLatentError`. Some bad input is found first by
fairseq or torch, whose exceptions are generic (fairseq raises a bare Exception
for an over-long sentence): ``plain_words`` recognises those few by type and
message and says what is wrong with the input. Everything else keeps its
traceback, since it is a bug to report, not a mistake to correct.
"""

import contextlib
import os
import pickle
import re
import sys
from typing import Optional


class VQLatentError(ValueError):
    """A problem with the user's data, options or checkpoint, said in plain words."""


OVER_LONG = re.compile(
    r"Size of sample #(\d+) is invalid \(=\((?:np\.int64\()?(\d+)\)?.*?since max_positions=\((\d+)", re.S
)
GLOBAL = re.compile(r"GLOBAL (\S+) (?:was not an allowed global|whose module)")  # torch < / >= 2.10


def _checkpoint_named_on_command_line() -> str:
    argv = sys.argv
    for i, arg in enumerate(argv[:-1]):
        if arg == "--path":
            return argv[i + 1]
        if arg.startswith("--path="):
            return arg.split("=", 1)[1]
    return "the checkpoint"


def first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0]


def checkpoint_problem(exc: BaseException) -> Optional[str]:
    """What is wrong with a checkpoint file that failed to load, or None if ``exc`` is not about the file."""
    text = str(exc)
    foreign = GLOBAL.search(text) if isinstance(exc, pickle.UnpicklingError) else None
    if foreign:
        return (f"refused: it pickles {foreign.group(1)}, which is neither weights "
                "nor fairseq's options; such a pickle can run code when loaded, so weights-only loading "
                "stays on. Re-save the checkpoint without that object")
    if isinstance(exc, pickle.UnpicklingError):
        return f"is not a torch checkpoint ({first_line(exc) or 'unreadable'})"
    if (isinstance(exc, RuntimeError) and "PytorchStreamReader failed" in text) or isinstance(exc, EOFError):
        return "is truncated or corrupt (not a complete torch checkpoint): copy it again, or use another"
    return None


def checkpoint_error(exc: BaseException, path: str, what: str = "checkpoint") -> VQLatentError:
    """``exc``, raised while loading ``path``, as one line (the first line of its message if not recognised)."""
    problem = checkpoint_problem(exc) or f"cannot be loaded ({type(exc).__name__}: {first_line(exc)})"
    return VQLatentError(f"{what} {path} {problem}")


@contextlib.contextmanager
def loading_checkpoint(path: str, what: str = "checkpoint"):
    """Around fairseq's loaders: a checkpoint that is truncated or pickles code becomes one line
    naming ``path``; any other exception passes unchanged."""
    try:
        yield
    except VQLatentError:
        raise
    except Exception as e:
        if checkpoint_problem(e) is None:
            raise
        raise checkpoint_error(e, path, what) from None


def plain_words(exc: BaseException) -> Optional[str]:
    """One line that says what is wrong with the input, or None if ``exc`` is not about input."""
    if isinstance(exc, VQLatentError):
        return str(exc)
    text = str(exc)
    if isinstance(exc, UnicodeDecodeError):
        bad = exc.object[exc.start : exc.start + 1]
        return (f"the input is not UTF-8 text (byte {bad!r} at offset {exc.start} of a line): "
                "convert it first, e.g. iconv -f latin1 -t utf-8")
    found = OVER_LONG.search(text)
    if found:
        index, tokens, limit = found.groups()
        return (f"sentence id {index} has {tokens} tokens, more than the model's {limit} positions: "
                "split it, or skip such sentences with --skip-invalid-size-inputs-valid-test")
    moses = re.search(r"Error merging override tokenizer\.(source|target)_lang=null", text)
    if moses:  # fairseq's Moses tokeniser reads the languages from the task, which infers them too late
        return "--tokenizer moses needs the languages: give --source-lang and --target-lang"
    if isinstance(exc, OSError) and text.startswith("Model file not found: "):  # fairseq's words for --path
        return f"checkpoint {text.split(': ', 1)[1]} does not exist"
    missing = getattr(exc, "filename", None) or ""
    if isinstance(exc, FileNotFoundError) and re.fullmatch(r"dict\.[^.]+\.txt", os.path.basename(missing)):
        return (f"{os.path.dirname(missing) or '.'} has no {os.path.basename(missing)}: --source-lang and "
                "--target-lang must be languages of the data directory (its dict.LANG.txt files)")
    problem = checkpoint_problem(exc)
    if problem:
        return f"{_checkpoint_named_on_command_line()} {problem}"
    return None


def _excepthook(previous):
    def hook(exc_type, exc, tb):
        message = plain_words(exc)
        if message is not None:
            print(f"error: {message}", file=sys.stderr)
            return
        previous(exc_type, exc, tb)

    return hook


def running_a_fairseq_cli() -> bool:
    """fairseq-train, fairseq-generate, ... (console scripts or ``python -m fairseq_cli.X``)."""
    program = sys.argv[0] if sys.argv else ""
    return os.path.basename(program).startswith("fairseq-") or \
        os.path.basename(os.path.dirname(program)) == "fairseq_cli"


def install_excepthook() -> None:
    """fairseq's CLIs and ours call into the plugin; our errors reach the user as one line.

    Only command-line programs install it (importing the package does not), so that a
    program using the model from Python keeps its own ``sys.excepthook``."""
    if not getattr(sys.excepthook, "_vqlatent", False):
        sys.excepthook = _excepthook(sys.excepthook)
        sys.excepthook._vqlatent = True
