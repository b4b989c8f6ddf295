"""Rescoring one-shot candidates with the autoregressive teacher (--rescore-teacher CKPT).

Noisy parallel decoding (Gu et al. 2018, "Non-autoregressive neural machine
translation", section 3.3) decodes several latent sequences at once and keeps
the candidate the teacher likes best. Scoring a finished candidate is one
teacher forward pass with the candidate as its shifted input: no search, and
all candidates of a batch share it.
"""

import os
from typing import List, Optional

import torch
from fairseq import checkpoint_utils
from torch import Tensor, nn

from .errors import VQLatentError, checkpoint_error


class TeacherScorer:
    def __init__(self, model: nn.Module, tgt_dict):
        self.model = model.eval()
        self.pad, self.eos = tgt_dict.pad(), tgt_dict.eos()
        self.session = None  # an ONNX Runtime session, after use_onnx()

    @classmethod
    def load(cls, path: str, data: str, tgt_dict) -> "TeacherScorer":
        """The teacher checkpoint at ``path``, refused with one line if it cannot rescore this data."""
        if not os.path.isfile(path):
            raise VQLatentError(f"--rescore-teacher: checkpoint {path} does not exist")
        from .models.vqlatent_transformer import is_vqlatent_model

        try:
            models, _ = checkpoint_utils.load_model_ensemble([path], arg_overrides={"data": data})
        except Exception as e:  # truncated, not a checkpoint at all, or a pickle weights-only loading refuses
            raise checkpoint_error(e, path, "--rescore-teacher: checkpoint") from None
        model = models[0]
        if is_vqlatent_model(model):
            raise VQLatentError(f"--rescore-teacher: {path} is a latent model; rescoring needs the autoregressive teacher")
        teacher_vocab = len(model.decoder.dictionary)
        if teacher_vocab != len(tgt_dict):
            raise VQLatentError(
                f"--rescore-teacher: {path} has a target dictionary of {teacher_vocab} types, this data "
                f"{len(tgt_dict)}: rescore with the teacher whose data the latent model was trained on"
            )
        return cls(model, tgt_dict)

    def to(self, like: Tensor) -> "TeacherScorer":
        """Follow the latent model's device and float type."""
        self.model.to(device=like.device, dtype=like.dtype)
        return self

    @torch.no_grad()
    def score(self, src_tokens: Tensor, src_lengths: Tensor, hypotheses: List[Tensor],
              sentence: Optional[Tensor] = None) -> Tensor:
        """src [B, S], hypotheses: M token tensors ending in EOS, the m-th a translation of source
        ``sentence[m]`` (default: B * N hypotheses, each sentence's N in a row) -> [M] mean
        log-prob per token. Each source is encoded once, whatever its number of candidates."""
        B, M = src_tokens.size(0), len(hypotheses)
        if sentence is None:
            sentence = torch.arange(B, device=src_tokens.device).repeat_interleave(M // B)
        T = max(len(h) for h in hypotheses)
        target = src_tokens.new_full((M, T), self.pad)
        for i, h in enumerate(hypotheses):
            target[i, : len(h)] = h
        prev = torch.cat([target.new_full((M, 1), self.eos), target[:, :-1]], 1)
        prev = prev.masked_fill(target.eq(self.pad), self.pad)
        if self.session is not None:
            feed = {"src_tokens": src_tokens, "sentence": sentence, "prev": prev, "target": target}
            return torch.from_numpy(self.session.run(None, {k: v.cpu().numpy() for k, v in feed.items()})[0])
        encoder = self.model.encoder
        encoder_out = encoder.reorder_encoder_out(encoder(src_tokens, src_lengths=src_lengths), sentence)
        logits, _ = self.model.decoder(prev, encoder_out=encoder_out)  # [M, T, V]
        return mean_log_probability(logits, target, self.pad)

    def use_onnx(self) -> None:
        """Score through ONNX Runtime from now on (onnx_decoding.py): --latent-onnx."""
        from .onnx_decoding import teacher_session

        self.session = teacher_session(self.model, self.pad)


def mean_log_probability(logits: Tensor, target: Tensor, pad: int) -> Tensor:
    """logits [M, T, V], target [M, T] -> [M] the mean log-probability of each row's tokens. log p is
    the target's logit minus log Z: no normalised [M, T, V] copy."""
    lprobs = logits.gather(-1, target.unsqueeze(-1)).squeeze(-1).float() - torch.logsumexp(logits.float(), -1)
    real = target.ne(pad)
    return (lprobs * real).sum(1) / real.sum(1)
