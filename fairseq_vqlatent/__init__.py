"""fairseq-vqlatent: non-autoregressive translation through discrete latent codes.

Load with ``--user-dir``; importing the package registers the task
``translation_vqlatent``, the model ``vqlatent_transformer`` (architectures
``vqlatent_transformer_base`` and ``vqlatent_transformer_small``) and the
criterion ``vqlatent_loss``.
"""

import sys

from . import kill_safe_checkpoints
from .checkpoint_safety import allow_fairseq_checkpoints
from .errors import VQLatentError, install_excepthook, running_a_fairseq_cli

allow_fairseq_checkpoints()
kill_safe_checkpoints.install()
if running_a_fairseq_cli():  # a program that uses the model from Python keeps its own error handling
    install_excepthook()
    # Bytes that are not UTF-8 then reach input_lines, which names their line, instead of
    # failing inside fairseq-interactive's reader (or passing as <unk> in the C locale).
    if getattr(sys.stdin, "encoding", "").lower().replace("-", "") == "utf8":
        sys.stdin.reconfigure(errors="surrogateescape")

from . import criterions, models, tasks  # noqa: E402,F401  (registration; --user-dir imports only models/ and tasks/)

__version__ = "0.1.0"
__all__ = ["VQLatentError"]
