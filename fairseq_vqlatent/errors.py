"""Errors about the user's input, shown as one clear line instead of a traceback."""

import sys


class VQLatentError(ValueError):
    """A problem with the user's data, options or checkpoint, said in plain words."""


def _excepthook(previous):
    def hook(exc_type, exc, tb):
        if issubclass(exc_type, VQLatentError):
            print(f"error: {exc}", file=sys.stderr)
            return
        previous(exc_type, exc, tb)

    return hook


def install_excepthook() -> None:
    """fairseq's CLIs call into the plugin; our errors reach the user as one line."""
    if not getattr(sys.excepthook, "_vqlatent", False):
        sys.excepthook = _excepthook(sys.excepthook)
        sys.excepthook._vqlatent = True
