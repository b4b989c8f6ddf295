"""Start a latent model from its distillation teacher (--init-from-teacher CKPT).

A few thousand CPU updates are far from the hundreds of thousands the papers
train for; starting from the autoregressive teacher, as NAT models commonly do,
gives the source encoder, the shared embeddings and the Transformer layers of
both decoders a trained starting point:

    teacher encoder.*          -> encoder.*          (embeddings included)
    teacher decoder.*          -> decoder.*          (the one-shot output decoder)
    teacher decoder.layers.*   -> prior.layers.*     (and decoder.layer_norm -> prior.layer_norm)

A student stack with fewer layers than the teacher's decoder takes its top layers
(a 1-layer one-shot decoder starts from the teacher's last layer, which feeds the
output projection it shares), as shallow students of deep teachers commonly do.
The compressor, the bottleneck, the decompressor and the prior's code embeddings
have no counterpart and keep their fresh initialisation. Parameters are matched
by name; a name present in both with different shapes is an error.
"""

import re
from dataclasses import dataclass, field
from typing import Dict, List

import torch
from torch import Tensor, nn

from .errors import VQLatentError

# (student prefix, teacher prefix): the first rule whose student prefix matches is used.
RULES = (
    ("encoder.", "encoder."),
    ("decoder.", "decoder."),
    ("prior.layers.", "decoder.layers."),
    ("prior.layer_norm.", "decoder.layer_norm."),
)


@dataclass
class TeacherInit:
    path: str
    copied: List[str] = field(default_factory=list)  # student parameter names
    fresh: List[str] = field(default_factory=list)  # student parameters without a counterpart
    unused: List[str] = field(default_factory=list)  # teacher parameters nobody took

    def summary(self) -> str:
        def groups(names):
            heads = sorted({".".join(n.split(".")[:2]) for n in names})
            return ", ".join(heads) if heads else "none"

        return (
            f"initialised from teacher {self.path}: copied {len(self.copied)} tensors ({groups(self.copied)}); "
            f"fresh: {groups(self.fresh)}; teacher tensors not used: {groups(self.unused)}"
        )


LAYER = re.compile(r"^(decoder|prior)\.layers\.(\d+)\.")


def teacher_name(student_name: str, skipped: Dict[str, int] = {}) -> str:  # noqa: B006 (read only)
    """The teacher parameter that initialises ``student_name``; ``skipped`` the number of the
    teacher's bottom decoder layers that a student stack ("decoder", "prior") leaves out."""
    layer = LAYER.match(student_name)
    if layer is not None:
        stack, i = layer.group(1), int(layer.group(2)) + skipped.get(layer.group(1), 0)
        student_name = f"{stack}.layers.{i}.{student_name[layer.end():]}"
    for student_prefix, teacher_prefix in RULES:
        if student_name.startswith(student_prefix):
            return teacher_prefix + student_name[len(student_prefix):]
    return ""


def _skipped_layers(model: nn.Module, teacher: Dict[str, Tensor]) -> Dict[str, int]:
    layers = {int(m.group(1)) for k in teacher for m in [re.match(r"decoder\.layers\.(\d+)\.", k)] if m}
    depth = max(layers) + 1 if layers else 0
    return {stack: max(0, depth - len(getattr(model, stack).layers)) for stack in ("decoder", "prior")
            if hasattr(getattr(model, stack, None), "layers")}


def load_teacher_state(path: str) -> Dict[str, Tensor]:
    from .checkpoint_safety import read_checkpoint

    state = read_checkpoint(path, "--init-from-teacher: checkpoint")
    weights = state.get("model") if isinstance(state, dict) else None
    if not isinstance(weights, dict) or not any(k.startswith("decoder.layers.") for k in weights):
        raise VQLatentError(f"--init-from-teacher: {path} is not a fairseq encoder-decoder Transformer checkpoint")
    if any(k.startswith(("bottleneck.", "prior.")) for k in weights):
        raise VQLatentError(
            f"--init-from-teacher: {path} is a latent model, not an autoregressive teacher "
            "(resume a latent model from its save dir instead)"
        )
    return weights


@torch.no_grad()
def initialize_from_teacher(model: nn.Module, path: str) -> TeacherInit:
    """Copy the teacher's matching parameters into ``model`` in place."""
    teacher = load_teacher_state(path)
    report = TeacherInit(path)
    taken = set()  # teacher names
    skipped = _skipped_layers(model, teacher)
    for name, param in model.named_parameters():  # tied parameters appear once
        source = teacher_name(name, skipped)
        if source not in teacher:
            report.fresh.append(name)
            continue
        value = teacher[source]
        if value.shape != param.shape:
            raise VQLatentError(
                f"--init-from-teacher: parameter {name} has shape {tuple(param.shape)} but the teacher's "
                f"{source} has {tuple(value.shape)}; give the latent model the teacher's width, FFN size and "
                "dictionary"
            )
        param.copy_(value.to(param.dtype))
        report.copied.append(name)
        taken.add(source)
    if not report.copied:
        raise VQLatentError(f"--init-from-teacher: no parameter of {path} matches the latent model")
    # Tied teacher tensors (shared embeddings) load as one storage: taken once is taken.
    taken_storage = {teacher[k].untyped_storage().data_ptr() for k in taken}
    report.unused = sorted(
        k
        for k, v in teacher.items()
        if v.is_floating_point()
        and not k.endswith(("_float_tensor", "version"))  # fairseq's bookkeeping buffers
        and v.untyped_storage().data_ptr() not in taken_storage
    )
    return report
