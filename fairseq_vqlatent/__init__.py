"""fairseq-vqlatent: non-autoregressive translation through discrete latent codes.

Load with ``--user-dir``; importing the package registers the task
``translation_vqlatent``, the model ``vqlatent_transformer`` (architectures
``vqlatent_transformer_base`` and ``vqlatent_transformer_small``) and the
criterion ``vqlatent_loss``.
"""

from .checkpoint_safety import allow_fairseq_checkpoints
from .errors import VQLatentError, install_excepthook

allow_fairseq_checkpoints()
install_excepthook()

from . import criterions, models, tasks  # noqa: E402,F401  (registration; --user-dir imports only models/ and tasks/)

__version__ = "0.1.0"
__all__ = ["VQLatentError"]
