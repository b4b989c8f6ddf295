"""The latent Transformer with a VQ bottleneck (Kaiser et al. 2018; Roy et al. 2018).

    source x --TransformerEncoder--> h
    target y --Compressor--> z_e --Bottleneck--> z_q, codes --Decompressor--> d
    d, h --OneShotDecoder--> all output tokens at once
    codes, h --LatentPrior--> next code (autoregressive, ends with end-of-latents)
"""

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.models import FairseqEncoderDecoderModel, register_model, register_model_architecture
from fairseq.models.transformer import TransformerConfig, TransformerEncoderBase
from fairseq.models.transformer.transformer_config import DecoderConfig, EncDecBaseConfig
from fairseq.utils import safe_getattr, safe_hasattr
from torch import Tensor, nn

from ..errors import VQLatentError
from ..modules.conv_blocks import zero_padding
from ..modules import ctc
from ..modules.glancing import glance, glance_mask
from ..modules.one_shot_decoder import output_targets
from ..modules import (
    BOTTLENECK_REGISTRY,
    BottleneckOutput,
    Compressor,
    Decompressor,
    LatentPrior,
    OneShotDecoder,
    build_bottleneck,
    code_dictionary,
    latent_length,
)


@dataclass
class VQLatentTransformerConfig(FairseqDataclass):
    # -- Transformer stacks
    encoder_embed_dim: int = field(default=512, metadata={"help": "model width (all stacks share it)"})
    encoder_ffn_embed_dim: int = field(default=2048, metadata={"help": "source encoder FFN width"})
    encoder_layers: int = field(default=6, metadata={"help": "source encoder layers"})
    encoder_attention_heads: int = field(default=8, metadata={"help": "attention heads in every stack"})
    decoder_ffn_embed_dim: int = field(default=2048, metadata={"help": "output decoder and prior FFN width"})
    decoder_layers: int = field(default=6, metadata={"help": "output decoder layers"})
    prior_layers: int = field(default=6, metadata={"help": "latent predictor (prior) layers"})
    normalize_before: bool = field(default=True, metadata={"help": "pre-norm Transformer layers"})
    activation_fn: ChoiceEnum(["relu", "gelu"]) = field(default="relu", metadata={"help": "FFN activation"})
    dropout: float = field(default=0.1, metadata={"help": "dropout"})
    attention_dropout: float = field(default=0.1, metadata={"help": "dropout on attention weights"})
    activation_dropout: float = field(default=0.0, metadata={"help": "dropout after the FFN activation"})
    conv_dropout: float = field(default=0.2, metadata={"help": "dropout in residual conv blocks"})
    share_all_embeddings: bool = field(
        default=False, metadata={"help": "share source and target embeddings (needs a joined dictionary)"}
    )
    max_source_positions: int = field(default=1024, metadata={"help": "longest source, in tokens"})
    max_target_positions: int = field(default=1024, metadata={"help": "longest target, in tokens"})
    # -- latent path
    compress_steps: int = field(default=3, metadata={"help": "n_c: latents are 2^n_c times shorter (1..4)"})
    compress_attend_source: bool = field(
        default=False, metadata={"help": "let the compressing encoder attend to the source (off in the paper)"}
    )
    bottleneck: ChoiceEnum(sorted(BOTTLENECK_REGISTRY)) = field(
        default="soft_em", metadata={"help": "discretization bottleneck"}
    )
    code_norm: ChoiceEnum(["layer", "batch"]) = field(
        default="batch",
        metadata={
            "help": "normalisation of the code space: per latent (layer) or per dimension over the batch's "
            "latents (batch), which keeps the code space from shrinking to one point (modules/bottlenecks/code_space.py)"
        },
    )
    code_dim: int = field(
        default=0,
        metadata={
            "help": "dimension of the code space: z_e is projected to it before the bottleneck and back after "
            "(0 = the model width). Low dimensions keep codes alive: in high dimensions the mean of a big "
            "cluster is nearer every point than the other codes are"
        },
    )
    codebook_size: int = field(default=4096, metadata={"help": "K, the number of codes"})
    codebook_init: ChoiceEnum(["kmeans", "random"]) = field(
        default="kmeans",
        metadata={"help": "kmeans: k-means on the first batches' encoder outputs; random: Gaussian codes (the reference)"},
    )
    dead_code_threshold: float = field(
        default=0.0,
        metadata={"help": "re-seed codes whose EMA count (assignments per update) falls below this (0 = off)"},
    )
    dead_code_by: ChoiceEnum(["assignment", "mode"]) = field(
        default="assignment",
        metadata={"help": "soft_em, vq: what --dead-code-threshold counts: the E-step's assignments (fractional "
                          "under soft EM) or how often a code is the nearest one, the code decoding uses"},
    )
    num_samples: int = field(default=10, metadata={"help": "soft_em: samples per position in the Monte-Carlo E-step"})
    ema_decay: float = field(default=0.999, metadata={"help": "EMA decay of codebook statistics"})
    ema_epsilon: float = field(default=1e-5, metadata={"help": "Laplace smoothing of EMA counts"})
    commitment_beta: float = field(default=0.25, metadata={"help": "weight of the commitment loss"})
    code_diversity: float = field(
        default=0.0,
        metadata={"help": "soft_em, vq: weight of KL(batch-averaged code posterior || uniform), per latent; "
                          "spreads usage over the codebook (0 = off)"},
    )
    code_sharpness: float = field(
        default=0.0,
        metadata={"help": "soft_em, vq: weight of the entropy of each latent's code posterior; with "
                          "--code-diversity at the same weight, maximises the mutual information of z and codes (0 = off)"},
    )
    temperature_start: float = field(default=2.0, metadata={"help": "gumbel, gmvq: Gumbel-softmax temperature at update 0"})
    temperature_end: float = field(default=0.1, metadata={"help": "gumbel, gmvq: temperature from --anneal-updates on"})
    anneal_updates: int = field(
        default=20000,
        metadata={"help": "gumbel, gmvq: updates over which the temperature falls (geometrically); "
                  "semhash: over which the share of soft bits falls from 0.5 to 0 (linearly)"},
    )
    semhash_noise: float = field(default=1.0, metadata={"help": "semhash: std of the noise added before the bits"})
    gmvq_gamma: float = field(default=1.0, metadata={"help": "gmvq: weight of the latent regularisation ||z - mu_c||^2"})
    gmvq_beta: float = field(default=1.0, metadata={"help": "gmvq: weight of KL(aggregated posterior || uniform)"})
    gmvq_sigma: float = field(default=1.0, metadata={"help": "gmvq: the generative model's scale sigma (adaptive noise)"})
    fsq_levels: str = field(
        default="8,5,5,5", metadata={"help": "fsq: levels per dimension; the number of codes is their product"}
    )
    cosine_codes: bool = field(
        default=False,
        metadata={
            "help": "vq, soft_em: put z_e and the codes on the sphere of radius sqrt(code dim), so that distances "
            "are cosines and no code can be a 'hub' nearer to everything (docs/design.md)"
        },
    )
    decoder_self_attention: ChoiceEnum(["causal", "full"]) = field(
        default="causal", metadata={"help": "self-attention of the one-shot output decoder"}
    )
    init_from_teacher: str = field(
        default="",
        metadata={
            "help": "start from this autoregressive teacher checkpoint: its encoder, embeddings and decoder "
            "layers initialise the encoder, the output decoder and the prior's layers (training from scratch only)"
        },
    )
    source_attention_warmup: int = field(
        default=0,
        metadata={
            "help": "hide the source from the output decoder for a share of the sentences falling linearly "
            "from all to none over this many updates (0 = off): a decoder that can translate from the source "
            "alone never learns to read the codes, and the codes collapse (docs/design.md)"
        },
    )
    target_mix_updates: int = field(
        default=0,
        metadata={
            "help": "mix the previous target token's embedding into the decoder input with a probability "
            "decaying linearly from 1 to 0 over this many updates (0 = off; needs causal self-attention)"
        },
    )
    glance_ratio: float = field(
        default=0.0,
        metadata={
            "help": "glancing training (GLAT): show the output decoder the target words at this share of the "
            "positions its own one-shot prediction got wrong, and score only the others (0 = off, below 1)"
        },
    )
    ctc_upsample: int = field(
        default=0,
        metadata={
            "help": "train the output decoder with CTC: it reads each decompressed position this many times, "
            "emits a word or a blank (<unk>) at each, and decoding merges repeats and drops blanks "
            "(modules/ctc.py; 0 = off: cross-entropy at fixed positions)"
        },
    )


def _transformer_config(cfg, layers: int, max_positions: int) -> TransformerConfig:
    """fairseq's TransformerConfig for one of our stacks (all share the width)."""
    stack = dict(
        embed_dim=cfg.encoder_embed_dim,
        attention_heads=cfg.encoder_attention_heads,
        normalize_before=cfg.normalize_before,
        layers=layers,
    )
    return TransformerConfig(
        dropout=cfg.dropout,
        attention_dropout=cfg.attention_dropout,
        activation_dropout=cfg.activation_dropout,
        activation_fn=cfg.activation_fn,
        encoder=EncDecBaseConfig(ffn_embed_dim=cfg.encoder_ffn_embed_dim, **stack),
        decoder=DecoderConfig(ffn_embed_dim=cfg.decoder_ffn_embed_dim, **stack),
        share_decoder_input_output_embed=True,
        max_source_positions=max_positions,
        max_target_positions=max_positions,
    )


def _embedding(dictionary, dim: int) -> nn.Embedding:
    emb = nn.Embedding(len(dictionary), dim, padding_idx=dictionary.pad())
    nn.init.normal_(emb.weight, mean=0, std=dim**-0.5)
    nn.init.constant_(emb.weight[dictionary.pad()], 0)
    return emb


@dataclass
class VQLatentOutput:
    logits: Tensor  # [B, L * 2^n_c (* ctc_upsample), V] output decoder
    output_padding_mask: Tensor  # [B, L * 2^n_c (* ctc_upsample)]
    prior_logits: Tensor  # [B, L + 1, K + nspecial] next-code logits, the last predicting end-of-latents
    latent_padding_mask: Tensor  # [B, L]
    bottleneck: BottleneckOutput
    glanced: Optional[Tensor] = None  # [B, L * 2^n_c] True where the decoder was shown the target word


def is_vqlatent_model(model) -> bool:
    """True for a latent Transformer, also inside fairseq's DDP wrappers, which nest
    (ModuleProxyWrapper around LegacyDistributedDataParallel around the model)."""
    for _ in range(4):
        if isinstance(model, VQLatentTransformerModel):
            return True
        model = getattr(model, "module", None)
    return False


@register_model("vqlatent_transformer", dataclass=VQLatentTransformerConfig)
class VQLatentTransformerModel(FairseqEncoderDecoderModel):
    def __init__(self, cfg, encoder, compressor, bottleneck, decompressor, decoder, prior, code_dict):
        super().__init__(encoder, decoder)
        self.cfg = cfg
        self.compressor = compressor
        self.bottleneck = bottleneck
        self.decompressor = decompressor
        self.prior = prior
        self.code_dict = code_dict
        self.num_updates = 0
        self.glance_ratio = safe_getattr(cfg, "glance_ratio", 0.0)
        self.ctc_upsample = safe_getattr(cfg, "ctc_upsample", 0)  # checkpoints from before it lack it

    @classmethod
    def from_pretrained(cls, model_name_or_path, checkpoint_file="model.pt", data_name_or_path=".", **kwargs):
        """fairseq's hub interface, refusing other models and input that is not text (hub_interface.py)."""
        from ..hub_interface import load_hub_interface

        return load_hub_interface(model_name_or_path, checkpoint_file, data_name_or_path, cls.hub_models(), **kwargs)

    @classmethod
    def build_model(cls, cfg, task):
        if cfg.codebook_size < 2:
            raise VQLatentError(f"--codebook-size must be 2 or more, got {cfg.codebook_size}")
        if cfg.num_samples < 1:
            raise VQLatentError(f"--num-samples must be 1 or more, got {cfg.num_samples}")
        if not 1 <= cfg.compress_steps <= 4:
            raise VQLatentError(f"--compress-steps must be 1..4, got {cfg.compress_steps}")
        if cfg.target_mix_updates > 0 and cfg.decoder_self_attention == "full":
            raise VQLatentError(
                "--target-mix-updates feeds previous target tokens to the decoder; with "
                "--decoder-self-attention full every position would see its own answer: use causal"
            )
        glance_ratio = safe_getattr(cfg, "glance_ratio", 0.0)  # checkpoints from before it lack it
        if not 0.0 <= glance_ratio < 1.0:
            raise VQLatentError(f"--glance-ratio must be in [0, 1), got {glance_ratio}")
        if glance_ratio > 0 and cfg.target_mix_updates > 0:
            raise VQLatentError("--glance-ratio and --target-mix-updates both feed target words to the decoder: pick one")
        ctc_upsample = safe_getattr(cfg, "ctc_upsample", 0)
        if ctc_upsample < 0:
            raise VQLatentError(f"--ctc-upsample must be 0 (off) or a positive factor, got {ctc_upsample}")
        if ctc_upsample > 0 and cfg.target_mix_updates > 0:
            raise VQLatentError(
                "--ctc-upsample does not fix which word each position emits, as --target-mix-updates needs: "
                "use --glance-ratio instead"
            )
        src_dict, tgt_dict = task.source_dictionary, task.target_dictionary
        dim = cfg.encoder_embed_dim
        src_embed = _embedding(src_dict, dim)
        if cfg.share_all_embeddings:
            if src_dict != tgt_dict:
                raise VQLatentError("--share-all-embeddings needs a joined dictionary (fairseq-preprocess --joined-dictionary)")
            tgt_embed = src_embed
        else:
            tgt_embed = _embedding(tgt_dict, dim)

        max_latents = latent_length(cfg.max_target_positions, cfg.compress_steps)
        bottleneck = build_bottleneck(cfg.bottleneck, dim, cfg)
        code_dict = code_dictionary(bottleneck.num_codes)
        encoder = TransformerEncoderBase(
            _transformer_config(cfg, cfg.encoder_layers, cfg.max_source_positions), src_dict, src_embed
        )
        decoder = OneShotDecoder(
            _transformer_config(cfg, cfg.decoder_layers, cfg.max_target_positions),
            tgt_dict,
            tgt_embed,
            causal=cfg.decoder_self_attention == "causal",
        )
        prior = LatentPrior(
            _transformer_config(cfg, cfg.prior_layers, max_latents + 1), code_dict, _embedding(code_dict, dim)
        )
        return cls(
            cfg,
            encoder,
            Compressor(cfg, tgt_embed, dim, cfg.max_target_positions),
            bottleneck,
            Decompressor(cfg, dim),
            decoder,
            prior,
            code_dict,
        )

    # -- lengths
    @property
    def compression(self) -> int:
        return 2**self.cfg.compress_steps

    @property
    def ctc_blank(self) -> Optional[int]:
        """The token the CTC output decoder emits for nothing, or None where it has no CTC output."""
        return self.decoder.dictionary.unk() if self.ctc_upsample > 0 else None

    @property
    def max_latents(self) -> int:
        """The longest code sequence the prior can hold (end-of-latents aside)."""
        return self.prior.max_positions() - 1

    def check_latent_length(self, num_latents: int) -> None:
        if num_latents > self.max_latents:
            raise VQLatentError(
                f"a latent sequence of {num_latents} codes ({num_latents * self.compression} target tokens) is longer "
                f"than this model's latent predictor holds ({self.max_latents} codes, from --max-target-positions "
                f"{self.cfg.max_target_positions}); split the sentence or lower --max-len-a/--max-len-b"
            )

    # -- the parts, each usable alone (training, inference, inspection)
    def encode_latents(self, target: Tensor, encoder_out: dict):
        """target [B, T] -> BottleneckOutput, latent padding mask [B, L]."""
        self.check_latent_length(latent_length(target.size(1), self.cfg.compress_steps))
        z_e, latent_mask = self.compressor(target, encoder_out)
        return self.bottleneck(z_e, latent_mask), latent_mask

    def embed_codes(self, codes: Tensor) -> Tensor:
        """codes [B, L] -> what the decompressor reads for them [B, L, D]."""
        return self.bottleneck.embed_codes(codes)

    def decode_latents(
        self,
        z_q: Tensor,
        latent_mask: Tensor,
        encoder_out: dict,
        prev_output_tokens: Optional[Tensor] = None,
        vocab: Optional[Tensor] = None,
    ):
        """z_q [B, L, D] -> output logits [B, L * 2^n_c (* ctc_upsample), V], their padding mask;
        with ``vocab`` (sorted type ids [V'], a shortlist) the logits of those types only."""
        logits, mask, _ = self._decode(z_q, latent_mask, encoder_out, prev_output_tokens, vocab=vocab)
        return logits, mask

    def _decode(
        self,
        z_q: Tensor,
        latent_mask: Tensor,
        encoder_out: dict,
        prev_output_tokens: Optional[Tensor] = None,
        glance_target: Optional[Tensor] = None,
        vocab: Optional[Tensor] = None,
    ):
        """decode_latents, and in glancing training (glance_target [B, T]) the mask of the
        positions shown their target word."""
        # Padding latents must read as zeros: the decompressor's first convolution sees
        # the neighbour of the last real latent, and a sentence must decode alike
        # alone and in a batch (project_out has a bias; code 0 fills padding).
        x, mask = self.decompressor(zero_padding(z_q, latent_mask), latent_mask)
        if self.ctc_upsample > 0:
            x, mask = ctc.upsample(x, mask, self.ctc_upsample)
        if prev_output_tokens is not None:
            x = self._mix_targets(x, prev_output_tokens)
        if self.training and self._hide_source_probability() > 0:
            encoder_out = self._hide_source(encoder_out)
        shown = None
        if glance_target is not None:
            x, shown = self._glance(x, mask, encoder_out, glance_target)
        return self.decoder(x, mask, encoder_out, vocab=vocab), mask, shown

    def prior_logits(self, codes: Tensor, latent_mask: Tensor, encoder_out: dict) -> Tensor:
        """Teacher-forced prior: codes [B, L] -> logits [B, L + 1, K + nspecial]."""
        prev = self.prior_input(codes, latent_mask)
        logits, _ = self.prior(prev, encoder_out=encoder_out)
        return logits

    def prior_input(self, codes: Tensor, latent_mask: Tensor) -> Tensor:
        """[eos, c_1 .. c_L] in code-dictionary indices, padded, as fairseq decoders expect."""
        d = self.code_dict
        tokens = self.prior.codes_to_tokens(codes).masked_fill(latent_mask, d.pad())
        return torch.cat([tokens.new_full((tokens.size(0), 1), self.prior.end_token), tokens], dim=1)

    def forward(self, src_tokens, src_lengths, prev_output_tokens, target, **unused) -> VQLatentOutput:
        encoder_out = self.encoder(src_tokens, src_lengths=src_lengths)
        bn, latent_mask = self.encode_latents(target, encoder_out)
        glancing = self.training and self.glance_ratio > 0
        logits, out_mask, glanced = self._decode(
            bn.z_q,
            latent_mask,
            encoder_out,
            prev_output_tokens if self._mixing() else None,
            target if glancing else None,
        )
        # The prior sees codes as token ids, so its loss never reaches the codebook.
        prior_logits = self.prior_logits(bn.codes, latent_mask, encoder_out)
        return VQLatentOutput(logits, out_mask, prior_logits, latent_mask, bn, glanced)

    # -- glancing training (optional; modules/glancing.py)
    def _glance(self, x: Tensor, mask: Tensor, encoder_out: dict, target: Tensor):
        """decoder input x [B, T, D] -> (x with some target words shown, their mask [B, T])."""
        pad, eos = self.decoder.padding_idx, self.decoder.dictionary.eos()
        with torch.no_grad():
            logits = self.decoder(x, mask, encoder_out)
            if self.ctc_blank is not None:  # a word's place is where the best path reads it
                aligned = ctc.best_alignment(logits.float().log_softmax(-1), mask, target, self.ctc_blank, pad, eos)
            else:
                aligned = output_targets(target, mask, pad, eos)
        shown = glance_mask(logits.argmax(-1), aligned, ~mask, self.glance_ratio)
        return glance(x, self._embed_targets(aligned), shown), shown

    def _embed_targets(self, tokens: Tensor) -> Tensor:
        """Target words [B, T] as decoder inputs [B, T, D], scaled as a Transformer's embeddings are."""
        return self.decoder.embed_tokens(tokens) * math.sqrt(self.decoder.embed_tokens.embedding_dim)

    # -- source-attention warmup (optional): word dropout for the source (Bowman et al. 2016)
    def _hide_source_probability(self) -> float:
        if self.cfg.source_attention_warmup <= 0:
            return 0.0
        return max(0.0, 1.0 - self.num_updates / self.cfg.source_attention_warmup)

    def _hide_source(self, encoder_out: dict) -> dict:
        """Zero the source states of a random share of sentences. Zeros, not a skipped
        attention: every parameter stays in the graph (DDP) and each sentence decides alone."""
        enc = encoder_out["encoder_out"][0]  # [S, B, D]
        hide = torch.rand(enc.size(1), device=enc.device) < self._hide_source_probability()
        return {**encoder_out, "encoder_out": [enc.masked_fill(hide.view(1, -1, 1), 0.0)]}

    # -- target mixing (optional, original reference)
    def _mix_probability(self) -> float:
        if self.cfg.target_mix_updates <= 0:
            return 0.0
        return max(0.0, 1.0 - self.num_updates / self.cfg.target_mix_updates)

    def _mixing(self) -> bool:
        return self.training and self._mix_probability() > 0

    def _mix_targets(self, x: Tensor, prev_output_tokens: Tensor) -> Tensor:
        T = x.size(1)
        prev = prev_output_tokens[:, :T]
        prev = torch.nn.functional.pad(prev, (0, T - prev.size(1)), value=self.decoder.padding_idx)
        emb = self._embed_targets(prev)
        take = torch.rand(x.shape[:2], device=x.device) < self._mix_probability()
        take &= prev.ne(self.decoder.padding_idx)
        return torch.where(take.unsqueeze(-1), emb.to(x.dtype), x)

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        # A data directory binarised with another dictionary gives embeddings of another
        # size: say so, instead of torch's size-mismatch listing from deep inside.
        for key, what in (("encoder.embed_tokens.weight", "source"), ("decoder.embed_tokens.weight", "target")):
            theirs, ours = state_dict.get(key), self.state_dict().get(key)
            if theirs is not None and ours is not None and theirs.size(0) != ours.size(0):
                raise VQLatentError(
                    f"the checkpoint's {what} dictionary has {theirs.size(0)} entries, this data directory's "
                    f"{ours.size(0)}: use the data directory (dict.*.txt) the model was trained on"
                )
        return super().load_state_dict(state_dict, strict, model_cfg, args)

    def upgrade_state_dict_named(self, state_dict, name):
        # The projections into and out of the code space were the model's
        # (to_code_space, at first an nn.Sequential(Linear, LayerNorm), and
        # from_code_space) before the bottlenecks owned them.
        prefix = f"{name}." if name else ""
        renames = ((f"{prefix}to_code_space.0.", f"{prefix}bottleneck.project_in.linear."),
                   (f"{prefix}to_code_space.", f"{prefix}bottleneck.project_in."),
                   (f"{prefix}from_code_space.", f"{prefix}bottleneck.project_out."))
        for old, new in renames:
            for key in [k for k in state_dict if k.startswith(old)]:
                state_dict[new + key[len(old):]] = state_dict.pop(key)
        super().upgrade_state_dict_named(state_dict, name)

    def set_num_updates(self, num_updates):
        super().set_num_updates(num_updates)
        self.num_updates = num_updates

    def max_positions(self):
        return (self.encoder.max_positions(), self.decoder.max_positions())


def _set_defaults(args, **defaults):
    for name, value in defaults.items():
        if not safe_hasattr(args, name) or safe_getattr(args, name) is None:
            setattr(args, name, value)


@register_model_architecture("vqlatent_transformer", "vqlatent_transformer_base")
def vqlatent_transformer_base(args):
    """The paper's size: 512 wide, FFN 2048, 8 heads, 6 + 6 layers, a 6-layer prior."""
    _set_defaults(
        args,
        encoder_embed_dim=512,
        encoder_ffn_embed_dim=2048,
        encoder_layers=6,
        encoder_attention_heads=8,
        decoder_ffn_embed_dim=2048,
        decoder_layers=6,
        prior_layers=6,
        codebook_size=4096,
    )


@register_model_architecture("vqlatent_transformer", "vqlatent_transformer_small")
def vqlatent_transformer_small(args):
    """For Multi30k-sized data on a CPU: 256 wide, 3 layers everywhere, 512 codes
    (30k sentences give too few latents to keep 4096 codes alive) looked up in a
    16-dimensional code space (see docs/design.md, "Keeping codes alive")."""
    _set_defaults(
        args,
        encoder_embed_dim=256,
        encoder_ffn_embed_dim=1024,
        encoder_layers=3,
        encoder_attention_heads=4,
        decoder_ffn_embed_dim=1024,
        decoder_layers=3,
        prior_layers=3,
        codebook_size=512,
        code_dim=16,
    )
