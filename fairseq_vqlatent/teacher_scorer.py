"""Rescoring one-shot candidates with the autoregressive teacher (--rescore-teacher CKPT).

Noisy parallel decoding (Gu et al. 2018, "Non-autoregressive neural machine
translation", section 3.3) decodes several latent sequences at once and keeps
the candidate the teacher likes best. Scoring a finished candidate is one
teacher forward pass with the candidate as its shifted input: no search, and
all candidates of a batch share it.
"""

import os
from typing import List

import torch
from fairseq import checkpoint_utils
from torch import Tensor

from .errors import VQLatentError


class TeacherScorer:
    def __init__(self, path: str, data: str, tgt_dict):
        if not os.path.isfile(path):
            raise VQLatentError(f"--rescore-teacher: checkpoint {path} does not exist")
        from .models.vqlatent_transformer import is_vqlatent_model

        try:
            models, _ = checkpoint_utils.load_model_ensemble([path], arg_overrides={"data": data})
        except (RuntimeError, EOFError, OSError) as e:  # truncated or not a checkpoint at all
            raise VQLatentError(f"--rescore-teacher: cannot load {path}: {str(e).splitlines()[0]}") from None
        self.model = models[0].eval()
        if is_vqlatent_model(self.model):
            raise VQLatentError(f"--rescore-teacher: {path} is a latent model; rescoring needs the autoregressive teacher")
        teacher_vocab = len(self.model.decoder.dictionary)
        if teacher_vocab != len(tgt_dict):
            raise VQLatentError(
                f"--rescore-teacher: {path} has a target dictionary of {teacher_vocab} types, this data "
                f"{len(tgt_dict)}: rescore with the teacher whose data the latent model was trained on"
            )
        self.pad, self.eos = tgt_dict.pad(), tgt_dict.eos()

    def to(self, like: Tensor) -> "TeacherScorer":
        """Follow the latent model's device and float type."""
        self.model.to(device=like.device, dtype=like.dtype)
        return self

    @torch.no_grad()
    def score(self, src_tokens: Tensor, src_lengths: Tensor, hypotheses: List[Tensor]) -> Tensor:
        """src [N, S], hypotheses: N token tensors ending in EOS -> [N] mean log-prob per token."""
        T = max(len(h) for h in hypotheses)
        target = src_tokens.new_full((len(hypotheses), T), self.pad)
        for i, h in enumerate(hypotheses):
            target[i, : len(h)] = h
        prev = torch.cat([target.new_full((len(hypotheses), 1), self.eos), target[:, :-1]], 1)
        prev = prev.masked_fill(target.eq(self.pad), self.pad)
        logits, _ = self.model(src_tokens, src_lengths, prev)
        lprobs = torch.log_softmax(logits.float(), -1).gather(-1, target.unsqueeze(-1)).squeeze(-1)  # [N, T]
        real = target.ne(self.pad)
        return (lprobs * real).sum(1) / real.sum(1)
