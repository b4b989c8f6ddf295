"""The one-shot decode through ONNX Runtime (--latent-onnx): the compiled inference path.

At batch 1 on a CPU, eager PyTorch spends most of a decode dispatching small
operators, not computing (benchmarks/results/profile-multi30k.md), and
torch.compile did not remove that cost (0.96x). This file exports the model's
four inference graphs once, when the generator is built for a model in eval mode
(or first decodes), and runs them in ONNX Runtime sessions:

    encoder   src_tokens [B, S]                     -> states [B, S, C], padding [B, S]
    sources   states                                -> the prior's source keys, values [layers, B, H, S, C / H]
    prior     prefix [B, t], keys, values, padding  -> logits of the next code [B, V_codes]
    decoder   codes [B, L], latent padding [B, L],
              states, padding (, shortlist [V'])    -> logits [B, T, V or V'], padding [B, T]

The prior's source keys and values are projected once per batch; its self-attention
has no cache: each step runs its prefix again. A prefix is 1 to 5 codes long, and
one graph call costs less than keeping a cache across calls.
``OnnxPriorSteps`` gives the graph the ``PriorSteps`` interface, so greedy search,
sampling and beam search run on it unchanged, as does everything after the
decoder's logits: the generator's code paths are the eager ones. With
--rescore-teacher the teacher's scoring pass is a fifth graph (``TeacherScoreGraph``).

The graphs are traced (the TorchScript exporter) on inputs with padding, so
every padding branch is recorded as taken; a batch without padding gives the
same result through an all-False mask. Outputs equal the eager path's
(tests/test_onnx_decoding.py). Float32 on the CPU only.
"""

import io
import logging
import time
import warnings
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from .errors import VQLatentError
from .modules import lean_transformer

logger = logging.getLogger(__name__)


def _states(encoder_out: dict) -> Tuple[Tensor, Tensor]:
    """A fairseq encoder_out -> states [B, S, C], padding mask [B, S]."""
    states = encoder_out["encoder_out"][0].transpose(0, 1)
    masks = encoder_out["encoder_padding_mask"]
    mask = masks[0] if len(masks) > 0 else states.new_zeros(states.shape[:2], dtype=torch.bool)
    return states, mask


def _encoder_out(states: Tensor, mask: Tensor) -> dict:
    """states [B, S, C], padding mask [B, S] -> a fairseq encoder_out, which its reorder_encoder_out can reorder."""
    return {"encoder_out": [states.transpose(0, 1)], "encoder_padding_mask": [mask], "encoder_embedding": [],
            "encoder_states": [], "src_tokens": [], "src_lengths": []}


class EncoderGraph(nn.Module):
    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, src_tokens: Tensor) -> Tuple[Tensor, Tensor]:
        lengths = src_tokens.ne(self.encoder.padding_idx).sum(1)
        return _states(self.encoder(src_tokens, src_lengths=lengths))


class SourcesGraph(nn.Module):
    def __init__(self, prior: nn.Module):
        super().__init__()
        self.prior = prior

    def forward(self, states: Tensor) -> Tuple[Tensor, Tensor]:
        keys, values = zip(*(lean_transformer.keys_values(layer.encoder_attn, states) for layer in self.prior.layers))
        return torch.stack(keys), torch.stack(values)


class PriorGraph(nn.Module):
    def __init__(self, prior: nn.Module):
        super().__init__()
        self.prior = prior

    def forward(self, prefix: Tensor, keys: Tensor, values: Tensor, mask: Tensor) -> Tensor:
        sources = list(zip(keys.unbind(0), values.unbind(0)))
        x = lean_transformer.causal_features(self.prior, prefix, sources, ~mask[:, None, None, :])
        return lean_transformer.output(self.prior, x[:, -1])


class DecoderGraph(nn.Module):
    """The code embeddings, the decompressor and the one-shot decoder, over all types or a shortlist's."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, codes: Tensor, latent_mask: Tensor, states: Tensor, mask: Tensor,
                vocab: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        z_q = self.model.embed_codes(codes)
        return self.model.decode_latents(z_q, latent_mask, _encoder_out(states, mask), vocab=vocab)


class TeacherScoreGraph(nn.Module):
    """The autoregressive teacher's mean log-probability of each candidate, as TeacherScorer.score."""

    def __init__(self, teacher: nn.Module, pad: int):
        super().__init__()
        self.encoder, self.decoder, self.pad = EncoderGraph(teacher.encoder), teacher.decoder, pad

    def forward(self, src_tokens: Tensor, sentence: Tensor, prev: Tensor, target: Tensor) -> Tensor:
        """src_tokens [B, S]; candidate m translates source sentence[m]; prev, target [M, T] -> [M]."""
        from .teacher_scorer import mean_log_probability

        states, mask = self.encoder(src_tokens)
        states, mask = states.index_select(0, sentence), mask.index_select(0, sentence)
        sources = [lean_transformer.keys_values(layer.encoder_attn, states) for layer in self.decoder.layers]
        # right-padded candidates: a causal pass never lets a word see the padding after it
        x = lean_transformer.causal_features(self.decoder, prev, sources, ~mask[:, None, None, :])
        return mean_log_probability(lean_transformer.output(self.decoder, x), target, self.pad)


def teacher_session(teacher: nn.Module, pad: int):
    """TeacherScoreGraph of ``teacher`` in an ONNX Runtime session (the scorer's --latent-onnx)."""
    _onnxruntime()
    _check(teacher)
    if not lean_transformer.supports(teacher.decoder):
        raise VQLatentError("--latent-onnx cannot export this teacher's decoder layers: rescore without --latent-onnx")
    d = teacher.encoder.dictionary
    word, eos = d.nspecial, d.eos()
    src = torch.tensor([[word, word + 1, word + 2, eos], [pad, pad, word + 3, eos]])
    sentence = torch.tensor([0, 1, 1])
    target = torch.tensor([[word, eos, pad], [word + 1, word + 2, eos], [eos, pad, pad]])
    prev = torch.cat([torch.full((3, 1), eos), target[:, :-1]], 1).masked_fill(target.eq(pad), pad)
    B, M, T = "batch", "candidates", "length"
    graph = _export(TeacherScoreGraph(teacher, pad), (src, sentence, prev, target),
                    ["src_tokens", "sentence", "prev", "target"], ["scores"],
                    {"src_tokens": {0: B, 1: "source_length"}, "sentence": {0: M}, "prev": {0: M, 1: T},
                     "target": {0: M, 1: T}, "scores": {0: M}})
    return _session(graph, torch.get_num_threads())


def _export(graph: nn.Module, args: tuple, inputs: List[str], outputs: List[str], axes: dict) -> bytes:
    # The exporter puts the graph in eval mode and afterwards back in the mode the graph
    # had, submodules included: a fresh wrapper's training mode would leave the model
    # itself training (dropout on) for every later eager decode.
    graph.eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on recorded branches: recorded on purpose
        torch.onnx.export(graph, args, buffer, dynamo=False, input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, opset_version=17)
    return buffer.getvalue()


def export_graphs(model: nn.Module, shortlist: bool = False) -> Tuple[bytes, bytes, bytes, bytes]:
    """The encoder, sources, prior and decoder graphs of ``model`` (eval mode, float32, CPU) as ONNX bytes."""
    pad, eos, word = model.encoder.padding_idx, model.encoder.dictionary.eos(), model.encoder.dictionary.nspecial
    src = torch.tensor([[word, word + 1, word + 2, word + 3, eos], [pad, pad, word + 4, word + 5, eos]])  # left-padded, as fairseq batches
    with torch.no_grad():
        states, mask = EncoderGraph(model.encoder)(src)
        keys, values = SourcesGraph(model.prior)(states)
    prefix = torch.full((2, 3), model.prior.end_token)
    codes = torch.tensor([[1, 2], [3, 0]])
    latent_mask = torch.tensor([[False, False], [False, True]])
    B, S, T, L = "batch", "source_length", "output_length", "latents"
    encoder = _export(EncoderGraph(model.encoder), (src,), ["src_tokens"], ["states", "mask"],
                      {"src_tokens": {0: B, 1: S}, "states": {0: B, 1: S}, "mask": {0: B, 1: S}})
    sources = _export(SourcesGraph(model.prior), (states,), ["states"], ["keys", "values"],
                      {"states": {0: B, 1: S}, "keys": {1: B, 3: S}, "values": {1: B, 3: S}})
    prior = _export(PriorGraph(model.prior), (prefix, keys, values, mask), ["prefix", "keys", "values", "mask"],
                    ["logits"], {"prefix": {0: B, 1: "steps"}, "keys": {1: B, 3: S}, "values": {1: B, 3: S},
                                 "mask": {0: B, 1: S}, "logits": {0: B}})
    args, inputs = (codes, latent_mask, states, mask), ["codes", "latent_mask", "states", "mask"]
    axes = {"codes": {0: B, 1: L}, "latent_mask": {0: B, 1: L}, "states": {0: B, 1: S}, "mask": {0: B, 1: S},
            "logits": {0: B, 1: T}, "output_mask": {0: B, 1: T}}
    if shortlist:
        args, inputs = args + (torch.tensor([word, word + 1, word + 2]),), inputs + ["vocab"]
        axes = {**axes, "vocab": {0: "types"}, "logits": {0: B, 1: T, 2: "types"}}
    decoder = _export(DecoderGraph(model), args, inputs, ["logits", "output_mask"], axes)
    return encoder, sources, prior, decoder


def _numpy(x: Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


class OnnxPriorSteps:
    """``PriorSteps`` on the prior graph: the state is each row's prefix and source."""

    def __init__(self, sources, prior, encoder_out: dict):
        self.prior = prior
        states, mask = _states(encoder_out)
        self.keys, self.values = sources.run(None, {"states": _numpy(states)})  # [layers, B, H, S, C / H]
        self.mask = _numpy(mask)
        self.prefix = np.zeros((self.mask.shape[0], 0), dtype=np.int64)  # [B, t]

    def step(self, tokens: Tensor) -> Tensor:
        self.prefix = np.concatenate([self.prefix, _numpy(tokens).astype(np.int64)[:, None]], 1)
        feed = {"prefix": self.prefix, "keys": self.keys, "values": self.values, "mask": self.mask}
        return torch.from_numpy(self.prior.run(None, feed)[0])

    def reorder(self, rows: Tensor) -> None:
        rows = _numpy(rows)
        self.prefix, self.mask = self.prefix[rows], self.mask[rows]
        self.keys, self.values = self.keys[:, rows], self.values[:, rows]


def _check(model: nn.Module) -> None:
    parameter = next(model.parameters())
    if parameter.device.type != "cpu" or parameter.dtype != torch.float32:
        raise VQLatentError("--latent-onnx decodes in float32 on the CPU: drop --latent-bf16, --fp16 and CUDA "
                            f"(the model is {parameter.dtype} on {parameter.device.type})")


def _onnxruntime():
    try:
        import onnx  # noqa: F401  (torch's exporter writes through it)
        import onnxruntime
    except ImportError:
        raise VQLatentError("--latent-onnx needs onnx and ONNX Runtime: pip install onnx onnxruntime") from None
    return onnxruntime


def _session(graph: bytes, threads: int):
    onnxruntime = _onnxruntime()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    # Spinning worker threads, ORT's default, kept both cores busy between calls and slowed
    # the Python between them, and any PyTorch beside it, by half (benchmarks/compiled_decoding.py).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


class OnnxDecoding:
    """A model's graphs in ONNX Runtime sessions: encoder and decoder on torch's number of threads,
    the prior's on one."""

    def __init__(self, model: nn.Module, shortlist: bool = False):
        _onnxruntime()
        _check(model)
        started = time.perf_counter()
        encoder, sources, prior, decoder = export_graphs(model, shortlist)
        threads = torch.get_num_threads()
        # The prior's steps are a few small products each: splitting them over threads cost
        # more than it saved (3.7 against 4.6 ms a sentence on one thread, 2-core CPU).
        self.encoder, self.decoder = _session(encoder, threads), _session(decoder, threads)
        self.sources, self.prior = _session(sources, 1), _session(prior, 1)
        logger.info(f"--latent-onnx: encoder, prior and decoder exported in {time.perf_counter() - started:.1f} s; "
                    f"decoding with ONNX Runtime on {threads} thread(s)")

    def encode(self, src_tokens: Tensor) -> dict:
        states, mask = self.encoder.run(None, {"src_tokens": _numpy(src_tokens)})
        return _encoder_out(torch.from_numpy(states), torch.from_numpy(mask))

    def prior_steps(self, encoder_out: dict) -> OnnxPriorSteps:
        return OnnxPriorSteps(self.sources, self.prior, encoder_out)

    def decode(self, codes: Tensor, latent_mask: Tensor, encoder_out: dict,
               vocab: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """-> logits [B, T, V or V'], output padding mask [B, T], as model.decode_latents."""
        states, mask = _states(encoder_out)
        feed = {"codes": _numpy(codes), "latent_mask": _numpy(latent_mask), "states": _numpy(states),
                "mask": _numpy(mask)}
        if vocab is not None:
            feed["vocab"] = _numpy(vocab)
        logits, output_mask = self.decoder.run(None, feed)
        return torch.from_numpy(logits), torch.from_numpy(output_mask)
