"""Shared fixtures: tiny models built in-process, and a 2,000-pair slice of
Multi30k prepared with the project's own data-prep script for CLI tests."""

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import fairseq_vqlatent  # noqa: F401  (registration)
from fairseq.data import Dictionary
from fairseq_vqlatent.criterions.vqlatent_loss import VQLatentLoss
from fairseq_vqlatent.models.vqlatent_transformer import VQLatentTransformerConfig, VQLatentTransformerModel

# Under pytest-xdist (make test: two workers on two cores) each worker keeps to one
# thread, as the CLIs the tests start do.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("MULTI30K", REPO.parent / "shared" / "corpora" / "multi30k"))
BIN = Path(sys.executable).parent

TINY_MODEL = dict(
    encoder_embed_dim=32,
    encoder_ffn_embed_dim=64,
    decoder_ffn_embed_dim=64,
    encoder_layers=1,
    decoder_layers=1,
    prior_layers=1,
    encoder_attention_heads=2,
    codebook_size=16,
    num_samples=5,
    dropout=0.0,
    attention_dropout=0.0,
    conv_dropout=0.0,
)

TINY_TRAIN_ARGS = [
    "--user-dir", str(REPO / "fairseq_vqlatent"),
    "--task", "translation_vqlatent",
    "--arch", "vqlatent_transformer_small",
    "--criterion", "vqlatent_loss",
    "--encoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128", "--decoder-ffn-embed-dim", "128",
    "--encoder-layers", "1", "--decoder-layers", "1", "--prior-layers", "1", "--encoder-attention-heads", "2",
    "--codebook-size", "32", "--num-samples", "4", "--ema-decay", "0.9", "--share-all-embeddings",
    "--optimizer", "adam", "--lr", "2e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "30",
    "--max-tokens", "2048", "--cpu", "--num-workers", "0", "--seed", "1",
    "--log-interval", "10", "--no-progress-bar", "--log-format", "simple",
]

# fairseq-train overrides that make scripts/pipeline.sh's stages tiny (--teacher-args,
# --latent-args): the same shapes in both, so that --init-from-teacher copies.
TINY_TEACHER_ARGS = ("--encoder-layers 1 --decoder-layers 1 --encoder-embed-dim 64 --decoder-embed-dim 64 "
                     "--encoder-ffn-embed-dim 128 --decoder-ffn-embed-dim 128 "
                     "--encoder-attention-heads 2 --decoder-attention-heads 2")
TINY_LATENT_ARGS = ("--encoder-layers 1 --decoder-layers 1 --prior-layers 1 --encoder-embed-dim 64 "
                    "--encoder-ffn-embed-dim 128 --decoder-ffn-embed-dim 128 --encoder-attention-heads 2 "
                    "--codebook-size 32")


def toy_task(vocab_size: int = 30) -> SimpleNamespace:
    d = Dictionary()
    for i in range(vocab_size):
        d.add_symbol(f"w{i}")
    return SimpleNamespace(source_dictionary=d, target_dictionary=d)


def build_tiny_model(task=None, **overrides) -> VQLatentTransformerModel:
    task = task or toy_task()
    cfg = VQLatentTransformerConfig(**{**TINY_MODEL, **overrides})
    return VQLatentTransformerModel.build_model(cfg, task)


def toy_batch(task, lengths, src_len: int = 7, seed: int = 0):
    """Right-padded targets of the given lengths (EOS included), left-padded sources."""
    g = torch.Generator().manual_seed(seed)
    d = task.target_dictionary
    B, T = len(lengths), max(lengths)
    target = torch.full((B, T), d.pad())
    for b, n in enumerate(lengths):
        target[b, : n - 1] = torch.randint(d.nspecial, len(d), (n - 1,), generator=g)
        target[b, n - 1] = d.eos()
    src = torch.randint(d.nspecial, len(d), (B, src_len), generator=g)
    src[:, -1] = d.eos()
    prev = torch.roll(target, 1, dims=1)
    prev[:, 0] = d.eos()
    prev = prev.masked_fill(target.eq(d.pad()), d.pad())
    return dict(src_tokens=src, src_lengths=torch.full((B,), src_len), prev_output_tokens=prev, target=target)


def trained_prior_model(task, updates=30):
    """A tiny model whose prior has learnt something: a few optimizer steps on toy data."""
    torch.manual_seed(0)
    model = build_tiny_model(task)
    crit = VQLatentLoss(SimpleNamespace(target_dictionary=task.target_dictionary), 0.0, 1.0, 0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = toy_batch(task, [9, 17, 25, 12], seed=3)
    net_input = {k: batch[k] for k in ("src_tokens", "src_lengths", "prev_output_tokens")}
    sample = {"net_input": net_input, "target": batch["target"], "ntokens": 63}
    for _ in range(updates):
        loss, size, _ = crit(model, sample)
        opt.zero_grad()
        (loss / size).backward()
        opt.step()
    return model.eval(), sample


def padded_sources(task):
    """Six sources of different lengths, left-padded as fairseq batches them."""
    batch = toy_batch(task, [5] * 6, src_len=9, seed=4)
    src, pad = batch["src_tokens"], task.source_dictionary.pad()
    for row, n in enumerate([0, 2, 4, 6, 1, 3]):
        src[row, :n] = pad
    return src, src.ne(pad).sum(1)


def sequence_generator_codes(model, encoder_out, src_tokens, src_lengths, budget, beam=1, nbest=1):
    """fairseq's SequenceGenerator over the prior: the codes our own search must give, as
    prior tokens, nbest per sentence, each without the end-of-latents."""
    from fairseq.models import FairseqEncoder, FairseqEncoderDecoderModel
    from fairseq.sequence_generator import SequenceGenerator

    class Precomputed(FairseqEncoder):
        def __init__(self):
            super().__init__(model.encoder.dictionary)

        def forward(self, src_tokens, src_lengths=None, **unused):
            return encoder_out

        def reorder_encoder_out(self, out, new_order):
            return model.encoder.reorder_encoder_out(out, new_order)

        def max_positions(self):
            return model.encoder.max_positions()

    search = SequenceGenerator([FairseqEncoderDecoderModel(Precomputed(), model.prior)], model.code_dict,
                               beam_size=max(beam, nbest), max_len_a=0, max_len_b=budget, min_len=1)
    sample = {"net_input": {"src_tokens": src_tokens, "src_lengths": src_lengths}}
    return [[h["tokens"][:-1] for h in hyps[:nbest]] for hyps in search._generate(sample)]


def run(cmd, check=True, input=None, timeout=600, env=None):
    """Run a CLI with this interpreter's scripts first on PATH (and `env` added); returns the CompletedProcess."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", OMP_NUM_THREADS="1", **(env or {}))
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=REPO, env=env, input=input, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd[0]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def train_losses(log: str):
    return [float(x) for x in re.findall(r"\| train_inner \|.*? loss=(\d+\.\d+)", log)]


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    if not (CORPUS / "train.en").exists():
        pytest.fail(f"Multi30k corpus not found at {CORPUS} (set MULTI30K=dir)")
    return CORPUS


@pytest.fixture(scope="session")
def slice_data(tmp_path_factory, corpus_dir) -> Path:
    """Multi30k: 2,000 training pairs, full valid and test, sentencepiece 1,000, binarised."""
    out = tmp_path_factory.mktemp("m30k-slice")
    run(["bash", REPO / "data-prep" / "prepare-multi30k.sh", "--from", corpus_dir, out,
         "--max-lines", "2000", "--spm", "--vocab-size", "1000"])
    return out


@pytest.fixture(scope="session")
def trained(tmp_path_factory, slice_data) -> SimpleNamespace:
    """A tiny model trained for 200 updates through fairseq-train."""
    save = tmp_path_factory.mktemp("ckpt")
    proc = run(["fairseq-train", slice_data / "bin", *TINY_TRAIN_ARGS, "--max-update", "200", "--save-dir", save])
    return SimpleNamespace(data=slice_data, save=save, log=proc.stdout + proc.stderr)


# ------------------------------------------------------------ bottlenecks alone


def bottleneck_config(**overrides):
    """The options every bottleneck reads, small: one home for the tests' bottleneck config."""
    cfg = dict(codebook_size=8, num_samples=5, ema_decay=0.9, ema_epsilon=1e-5, commitment_beta=0.25,
               codebook_init="random", dead_code_threshold=0.0, temperature_start=2.0, temperature_end=0.1,
               anneal_updates=100, semhash_noise=1.0, gmvq_gamma=0.7, gmvq_beta=0.3, gmvq_sigma=1.5,
               fsq_levels="2,2,2", cosine_codes=False, code_dim=0, code_norm="layer", code_diversity=0.0,
               code_sharpness=0.0, dead_code_by="assignment")
    cfg.update(overrides)
    return SimpleNamespace(**cfg)


def make_bottleneck(name, D=4, seed=0, **overrides):
    from fairseq_vqlatent.modules.bottlenecks import build_bottleneck

    torch.manual_seed(seed)
    return build_bottleneck(name, D, bottleneck_config(**overrides))


def bottleneck(name, K=8, D=4, decay=0.0, eps=1e-9, samples=10, init="random", dead=0.0, dead_by="assignment"):
    """A codebook bottleneck whose EM math is exact: no decay, no smoothing to speak of."""
    return make_bottleneck(name, D, codebook_size=K, ema_decay=decay, ema_epsilon=eps, num_samples=samples,
                           codebook_init=init, dead_code_threshold=dead, dead_code_by=dead_by)


def padded_latents(seed=0, D=4):
    """z [3, 5, D] and a padding mask: one full row, one of 3 latents, one of 1."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(3, 5, D, generator=g)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[1, 3:] = True
    mask[2, 1:] = True
    return z, mask


@pytest.fixture(scope="session")
def tiny_teacher(slice_data, tmp_path_factory):
    """An autoregressive transformer on the same data (3 updates): a teacher for the CLIs."""
    save = tmp_path_factory.mktemp("teacher")
    run(["fairseq-train", slice_data / "bin", "--user-dir", str(REPO / "fairseq_vqlatent"), "--arch", "transformer",
         "--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
         "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64", "--optimizer", "adam", "--lr", "1e-3",
         "--max-tokens", "2048", "--max-update", "3", "--cpu", "--save-dir", save, "--no-epoch-checkpoints"])
    return save / "checkpoint_last.pt"
