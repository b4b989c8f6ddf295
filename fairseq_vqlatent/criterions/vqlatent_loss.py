"""L = CE_ls(decoder(z_q), y) + lambda_p * CE_ls(prior, soft code targets) + bottleneck loss.

Each term is a mean over its own units, as in the reference implementation:
the reconstruction over output positions, the prior over its steps (codes and
end-of-latents), the bottleneck loss over latents. So beta and lambda_p mean
what the paper's do whatever the compression. fairseq divides the returned sum
by the sample size (the output positions), so the prior and bottleneck sums are
rescaled by output positions per latent before they are added.

The decoder covers L_b * 2^n_c positions for a sentence of L_b latents. The
positions after its EOS are trained to predict EOS too, so that every position
the decoder emits at inference has been trained, and the generator's rule
("the sentence ends at the first EOS of the last block") is what training taught.
With --ctc-upsample the reconstruction is CTC's instead (modules/ctc.py), a sum
over sentences divided by the target's words.

Every term is logged on its own, with the codebook's health: code perplexity,
codes used, dead codes and prior accuracy. All logging outputs are sums, so they
aggregate across workers.
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from fairseq import metrics, utils
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss
from fairseq.dataclass import FairseqDataclass
from torch import Tensor

from ..errors import VQLatentError
from ..models.vqlatent_transformer import is_vqlatent_model
from ..modules.ctc import ctc_loss
from ..modules.one_shot_decoder import output_targets


@dataclass
class VQLatentLossConfig(FairseqDataclass):
    label_smoothing: float = field(default=0.1, metadata={"help": "label smoothing of both cross-entropies"})
    prior_weight: float = field(default=1.0, metadata={"help": "lambda_p, weight of the prior loss"})
    prior_start_updates: int = field(
        default=0, metadata={"help": "train the prior only from this update on (the reference used 50k)"}
    )


def prior_targets(code_targets: Tensor, latent_mask: Tensor) -> Tensor:
    """Soft targets over [codes..., end-of-latents] for the L + 1 prior steps.

    code_targets [B, L, K] -> [B, L + 1, K + 1]; row L_b of sentence b is the
    end-of-latents one-hot, rows after it are zero (padding).
    """
    B, L, K = code_targets.shape
    lengths = (~latent_mask).sum(1)  # [B]
    targets = code_targets.new_zeros(B, L + 1, K + 1)
    targets[:, :L, :K] = code_targets.masked_fill(latent_mask.unsqueeze(-1), 0.0)
    targets[torch.arange(B, device=lengths.device), lengths, K] = 1.0
    return targets


def soft_cross_entropy(lprobs: Tensor, targets: Tensor, epsilon: float) -> Tensor:
    """Sum over non-zero target rows of -sum_k t_k log p_k, t smoothed towards uniform."""
    rows = targets.sum(-1) > 0
    t = (1.0 - epsilon) * targets[rows] + epsilon / targets.size(-1)
    return -(t * lprobs[rows]).sum()


def code_perplexity(counts: Tensor) -> float:
    p = counts / counts.sum().clamp_min(1e-9)
    entropy = -(p * p.clamp_min(1e-12).log()).sum()
    return float(entropy.exp())


@register_criterion("vqlatent_loss", dataclass=VQLatentLossConfig)
class VQLatentLoss(FairseqCriterion):
    def __init__(self, task, label_smoothing, prior_weight, prior_start_updates):
        super().__init__(task)
        self.eps = label_smoothing
        self.prior_weight = prior_weight
        self.prior_start_updates = prior_start_updates

    def forward(self, model, sample, reduce=True):
        if not is_vqlatent_model(model):
            raise VQLatentError("--criterion vqlatent_loss trains --arch vqlatent_transformer* models only")
        out = model(**sample["net_input"], target=sample["target"])
        pad = self.padding_idx

        eos = self.task.target_dictionary.eos()
        lprobs = F.log_softmax(out.logits.float(), dim=-1)
        if model.ctc_blank is not None:  # over every position, glanced or not (Gu and Kong 2021)
            recon_loss, nll_loss, sample_size = ctc_loss(
                lprobs, out.output_padding_mask, sample["target"], model.ctc_blank, pad, eos, self.eps
            )
        else:
            target = output_targets(sample["target"], out.output_padding_mask, pad, eos)
            if out.glanced is not None:  # GLAT scores only the words the decoder was not shown
                target = target.masked_fill(out.glanced, pad)
            recon_loss, nll_loss = label_smoothed_nll_loss(
                lprobs.view(-1, lprobs.size(-1)), target.view(-1), self.eps, ignore_index=pad, reduce=True
            )
            sample_size = int(target.ne(pad).sum())  # scored output positions, EOS fill included

        # Prior: soft code targets, then end-of-latents; scored over codes + eos only.
        K = out.bottleneck.code_targets.size(-1)
        prior_lprobs = model.prior.code_log_probs(out.prior_logits)  # [B, L + 1, K + 1]
        targets = prior_targets(out.bottleneck.code_targets.float(), out.latent_padding_mask)
        prior_loss = soft_cross_entropy(prior_lprobs, targets, self.eps)
        rows = targets.sum(-1) > 0
        prior_correct = (prior_lprobs.argmax(-1) == targets.argmax(-1))[rows].sum()

        latent_mask = out.latent_padding_mask
        nlatents = int((~latent_mask).sum())
        prior_steps = int(rows.sum())  # codes + end-of-latents
        prior_on = not model.training or model.num_updates >= self.prior_start_updates
        prior_weight = self.prior_weight if prior_on else 0.0
        aux_loss = out.bottleneck.loss
        loss = (
            recon_loss
            + prior_weight * prior_loss * (sample_size / max(prior_steps, 1))
            + aux_loss * (sample_size / max(nlatents, 1))
        )

        code_counts = torch.bincount(out.bottleneck.codes[~latent_mask], minlength=K).float()
        logging_output = {
            "loss": loss.data,
            "recon_loss": recon_loss.data,
            "nll_loss": nll_loss.data,
            "prior_loss": prior_loss.data,
            "aux_loss": aux_loss.data,
            "prior_correct": prior_correct.data,
            "nlatents": nlatents,
            "prior_steps": prior_steps,
            "ntokens": sample["ntokens"],
            "nsentences": sample["target"].size(0),
            "sample_size": sample_size,
            "code_counts": code_counts,
            "dead_codes": out.bottleneck.dead_codes,
            "reseeded_codes": out.bottleneck.reseeded_codes,
            "nforwards": 1,
        }
        return loss, sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        def total(key):
            return float(sum(log.get(key, 0) for log in logging_outputs))

        size, steps, nlatents = total("sample_size"), total("prior_steps"), total("nlatents")
        ln2 = math.log(2)
        metrics.log_scalar("loss", total("loss") / size / ln2, size, round=3)
        metrics.log_scalar("recon_loss", total("recon_loss") / size / ln2, size, round=3)
        metrics.log_scalar("nll_loss", total("nll_loss") / size / ln2, size, round=3)
        metrics.log_derived("ppl", lambda meters: utils.get_perplexity(meters["nll_loss"].avg))
        metrics.log_scalar("prior_loss", total("prior_loss") / max(steps, 1) / ln2, steps, round=3)
        metrics.log_scalar("aux_loss", total("aux_loss") / max(nlatents, 1), nlatents, round=4)
        metrics.log_scalar("prior_acc", 100.0 * total("prior_correct") / max(steps, 1), steps, round=2)
        counts = sum(log["code_counts"] for log in logging_outputs if "code_counts" in log)
        if torch.is_tensor(counts):
            metrics.log_scalar("code_ppl", code_perplexity(counts), 1, round=1)
            metrics.log_scalar("codes_used", float((counts > 0).sum()), 1, round=1)
        metrics.log_scalar("dead_codes", total("dead_codes") / max(total("nforwards"), 1), 1, round=1)
        if total("reseeded_codes") > 0:  # every worker reports the same codebook: average, don't sum
            metrics.log_scalar("reseeded", total("reseeded_codes") / max(total("nforwards"), 1), 1, round=1)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
