"""vqlatent-export: a latent model as a self-contained translator for ONNX Runtime.

    vqlatent-export CKPT OUT_DIR --data DATA_BIN --bpe subword_nmt --bpe-codes CODES --tokenizer moses
    vqlatent-export CKPT OUT_DIR --data DATA_BIN --bpe sentencepiece --sentencepiece-model SPM
        [--shortlist FILE] [--int8] [--max-len-a 1.2] [--max-len-b 10] [--ctc-blank-penalty 2]

OUT_DIR then holds everything ``vqlatent-translate`` (vqlatent_runtime/) needs, and
nothing that needs torch or fairseq:

    encoder.onnx     src_tokens [B, S] -> states, mask, the prior's source keys and
                     values, and the prior's first step (code, P(end), its cache)
    prior_step.onnx  one greedy step of the prior, its self-attention cache in and out
    decoder.onnx     codes -> decompressor -> one-shot decoder -> output layer -> CTC's
                     best path (blank penalty, bans, repeats merged, blanks dropped):
                     only token ids leave it, padding where a position emits nothing;
                     with --shortlist, the source's lexical shortlist is chosen inside it
    dict.SRC.txt, dict.TGT.txt, bpe.codes or spm.model, config.json

The prior's step carries its cache as graph inputs and outputs, unlike --latent-onnx's
graph, which reruns the prefix: the cost of a step no longer grows with the step.
The decision rules are the generator's (latent_generator.py): the greedy code,
stop when end-of-latents outweighs all codes together, and the CTC best path.
The code budget is each sentence's own, ceil((a |x| + b) / 2^n_c), which is also
what LatentGenerator does, so the output equals fairseq-generate's
(tests/test_export.py). --int8 quantises the graphs' matrix products dynamically
(ONNX Runtime's quantize_dynamic); keep it where it measures faster
(benchmarks/frontier.py).
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .errors import VQLatentError, loading_checkpoint
from .modules import lean_transformer
from .onnx_decoding import EncoderGraph, _check, _encoder_out, _export, _onnxruntime

FORMAT = "vqlatent-translator"
FORMAT_VERSION = 1  # vqlatent_runtime.translator reads exactly this


def _prior_positions(prior: nn.Module, steps: int) -> Optional[Tensor]:
    """The prior's position embeddings of steps 0 .. steps - 1: [1, steps, D], as IncrementalDecoder makes them."""
    if prior.embed_positions is None:
        return None
    tokens = torch.full((1, steps), prior.padding_idx + 1, dtype=torch.long)
    return prior.embed_positions(tokens).detach()


def prior_step(prior: nn.Module, positions: Optional[Tensor], tokens: Tensor, position: Tensor,
               cache: Optional[Tuple[Tensor, Tensor]], sources: Tuple[Tensor, Tensor], mask: Tensor):
    """One step of the prior for every row: tokens [B] at ``position`` [1]; ``cache`` the
    self-attention keys and values of the earlier steps [layers, B, H, t, C / H] (None at
    step 0); ``sources`` the source keys and values [layers, B, H, S, C / H].
    -> the greedy code as a prior token [B], P(end-of-latents) [B], the cache with this step."""
    x = lean_transformer.embed(prior, tokens.unsqueeze(1), None if positions is None else positions.index_select(1, position))
    keys, values = [], []
    for i, layer in enumerate(prior.layers):
        def attention(h: Tensor, i=i, layer=layer) -> Tensor:
            key, value = lean_transformer.keys_values(layer.self_attn, h)  # [B, H, 1, C / H]
            if cache is not None:
                key, value = torch.cat([cache[0][i], key], 2), torch.cat([cache[1][i], value], 2)
            keys.append(key)
            values.append(value)
            return lean_transformer.attend(layer.self_attn, h, key, value)
        x = lean_transformer.decoder_layer(layer, x, attention, (sources[0][i], sources[1][i]), ~mask[:, None, None, :])
    logits = lean_transformer.output(prior, x[:, 0])  # [B, codes + specials], banned types at -inf
    code = prior.codes_to_tokens(prior.code_logits(logits).argmax(-1))
    p_end = torch.softmax(logits, -1)[:, prior.end_token]
    return code, p_end, torch.stack(keys), torch.stack(values)


class EncodeGraph(nn.Module):
    """The source encoder, the prior's source keys and values, and the prior's first step
    (from end-of-latents, position 0): one call before the step loop instead of three."""

    def __init__(self, model: nn.Module, positions: Optional[Tensor]):
        super().__init__()
        self.encoder, self.prior, self.positions = EncoderGraph(model.encoder), model.prior, positions

    def forward(self, src_tokens: Tensor):
        states, mask = self.encoder(src_tokens)
        sources = [lean_transformer.keys_values(layer.encoder_attn, states) for layer in self.prior.layers]
        sources = (torch.stack([k for k, _ in sources]), torch.stack([v for _, v in sources]))
        first = torch.full_like(src_tokens[:, 0], self.prior.end_token)
        code, p_end, keys, values = prior_step(self.prior, self.positions, first, torch.zeros(1, dtype=torch.long),
                                               None, sources, mask)
        return states, mask, sources[0], sources[1], code, p_end, keys, values


class PriorStepGraph(nn.Module):
    def __init__(self, prior: nn.Module, positions: Optional[Tensor]):
        super().__init__()
        self.prior, self.positions = prior, positions

    def forward(self, tokens, position, keys, values, source_keys, source_values, mask):
        return prior_step(self.prior, self.positions, tokens, position, (keys, values), (source_keys, source_values), mask)


class DecodeGraph(nn.Module):
    """Codes -> token ids of the CTC best path, as LatentGenerator._ctc_hypotheses finds it.
    With a shortlist the graph reads the sources too and scores only the types they list."""

    def __init__(self, model: nn.Module, blank_penalty: float, shortlist=None):
        super().__init__()
        self.model, self.pad = model, model.decoder.dictionary.pad()
        d, blank = model.decoder.dictionary, model.ctc_blank
        never = [d.pad(), d.bos(), d.eos()]  # the generator's bans; CTC never says EOS
        bias = torch.zeros(len(d))
        bias[never] = float("-inf")
        bias[blank] = -blank_penalty  # --ctc-blank-penalty
        self.register_buffer("bias", bias)
        self.shortlist = shortlist is not None
        if self.shortlist:
            candidates = shortlist.candidates.clone()
            candidates[candidates < 0] = blank  # the blank is always allowed: "no candidate" adds nothing
            always = torch.zeros(len(d))
            always[shortlist.frequent] = 1.0
            always[blank] = 1.0
            allowed = torch.ones(len(d))
            allowed[never] = 0.0
            self.register_buffer("candidates", candidates)
            self.register_buffer("always", always)
            self.register_buffer("allowed", allowed)

    def vocabulary(self, src_tokens: Tensor) -> Tensor:
        """src_tokens [B, S] -> the sorted types [V'] Shortlist.for_sources gives them."""
        found = self.candidates[src_tokens].flatten()
        listed = torch.zeros_like(self.always).scatter(0, found, torch.ones_like(found, dtype=self.always.dtype))
        return torch.nonzero((listed + self.always) * self.allowed).squeeze(1)

    def forward(self, codes: Tensor, latent_mask: Tensor, states: Tensor, mask: Tensor,
                src_tokens: Optional[Tensor] = None) -> Tensor:
        vocab = self.vocabulary(src_tokens) if self.shortlist else None
        z_q = self.model.embed_codes(codes)
        logits, out_mask = self.model.decode_latents(z_q, latent_mask, _encoder_out(states, mask), vocab=vocab)
        bias = self.bias if vocab is None else self.bias.index_select(0, vocab)
        tokens = (logits + bias).argmax(-1)  # [B, T]
        if vocab is not None:
            tokens = vocab[tokens]
        first = torch.cat([torch.ones_like(tokens[:, :1], dtype=torch.bool), tokens[:, 1:] != tokens[:, :-1]], 1)
        keep = first & tokens.ne(self.model.ctc_blank) & ~out_mask
        return torch.where(keep, tokens, torch.full_like(tokens, self.pad))


def export_graphs(model: nn.Module, blank_penalty: float, shortlist=None) -> dict:
    """The translator's three graphs of ``model`` (eval mode, float32, CPU) as ONNX bytes."""
    _onnxruntime()
    _check(model)
    model.eval()
    d, prior = model.encoder.dictionary, model.prior
    pad, eos, word = model.encoder.padding_idx, d.eos(), d.nspecial
    positions = _prior_positions(prior, model.max_latents + 1)
    src = torch.tensor([[word, word + 1, word + 2, word + 3, eos], [pad, pad, word + 4, word + 5, eos]])
    encode = EncodeGraph(model, positions)
    with torch.no_grad():
        states, mask, source_keys, source_values, code, _, keys, values = encode(src)
    B, S, L = "batch", "source_length", "latents"
    cache_axes = {0: "layers", 1: B, 3: "steps"}
    graphs = {"encoder": _export(
        encode, (src,), ["src_tokens"],
        ["states", "mask", "source_keys", "source_values", "code", "p_end", "keys", "values"],
        {"src_tokens": {0: B, 1: S}, "states": {0: B, 1: S}, "mask": {0: B, 1: S},
         "source_keys": {1: B, 3: S}, "source_values": {1: B, 3: S}, "code": {0: B}, "p_end": {0: B},
         "keys": {1: B}, "values": {1: B}})}
    graphs["prior_step"] = _export(
        PriorStepGraph(prior, positions), (code, torch.tensor([1]), keys, values, source_keys, source_values, mask),
        ["tokens", "position", "keys", "values", "source_keys", "source_values", "mask"],
        ["code", "p_end", "next_keys", "next_values"],
        {"tokens": {0: B}, "keys": cache_axes, "values": cache_axes, "source_keys": {1: B, 3: S},
         "source_values": {1: B, 3: S}, "mask": {0: B, 1: S}, "code": {0: B}, "p_end": {0: B},
         "next_keys": {1: B, 3: "steps_after"}, "next_values": {1: B, 3: "steps_after"}})
    codes, latent_mask = torch.tensor([[1, 2], [3, 0]]), torch.tensor([[False, False], [False, True]])
    args, inputs = (codes, latent_mask, states, mask), ["codes", "latent_mask", "states", "mask"]
    axes = {"codes": {0: B, 1: L}, "latent_mask": {0: B, 1: L}, "states": {0: B, 1: S}, "mask": {0: B, 1: S},
            "tokens": {0: B, 1: "positions"}}
    if shortlist is not None:
        args, inputs, axes = args + (src,), inputs + ["src_tokens"], {**axes, "src_tokens": {0: B, 1: S}}
    graphs["decoder"] = _export(DecodeGraph(model, blank_penalty, shortlist), args, inputs, ["tokens"], axes)
    return graphs


def quantize_int8(path: str) -> None:
    """Replace the graph at ``path`` by its int8 dynamic quantisation (weights int8, activations
    quantised per call). Matrix products and convolutions only: quantize_dynamic would also
    quantise the tables that Gather reads, the decoder's bias among them, whose -inf bans then
    turned every score into NaN and every output empty (tests/test_export.py)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = path + ".int8"
    quantize_dynamic(path, quantized, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm", "Conv"])
    os.replace(quantized, path)


def load_model(ckpt: str, data: str, source_lang: Optional[str], target_lang: Optional[str]):
    """-> (model, task) of a latent checkpoint, with the dictionaries of ``data``."""
    from fairseq import checkpoint_utils

    if not os.path.isfile(ckpt):
        raise VQLatentError(f"checkpoint {ckpt} does not exist")
    overrides = {"data": data}
    if source_lang:
        overrides["source_lang"] = source_lang
    if target_lang:
        overrides["target_lang"] = target_lang
    try:
        with loading_checkpoint(ckpt):
            models, _, task = checkpoint_utils.load_model_ensemble_and_task([ckpt], arg_overrides=overrides)
    except FileNotFoundError as e:
        raise VQLatentError(f"{data} lacks a dictionary of this model ({e.filename}): give --data the fairseq-preprocess "
                            "output the model was trained on") from None
    from .models.vqlatent_transformer import is_vqlatent_model

    model = models[0]
    if not is_vqlatent_model(model):
        raise VQLatentError(f"{ckpt} is not a vqlatent_transformer checkpoint: vqlatent-export exports latent models")
    if model.ctc_blank is None:
        raise VQLatentError(f"{ckpt} has a cross-entropy output decoder: vqlatent-export exports CTC models "
                            "(trained with --ctc-upsample, as scripts/train-vqlatent.sh does)")
    return model.float().cpu().eval(), task


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vqlatent-export", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a latent model trained with --ctc-upsample (checkpoint_best.pt)")
    p.add_argument("out_dir", help="the translator's directory (must not exist, unless --force)")
    p.add_argument("--data", required=True, help="the fairseq-preprocess output the model was trained on (dictionaries)")
    p.add_argument("--source-lang", "-s", help="default: the checkpoint's")
    p.add_argument("--target-lang", "-t", help="default: the checkpoint's")
    p.add_argument("--bpe", choices=["subword_nmt", "sentencepiece"], required=True)
    p.add_argument("--bpe-codes", help="subword-nmt codes (--bpe subword_nmt)")
    p.add_argument("--sentencepiece-model", help="sentencepiece model (--bpe sentencepiece)")
    p.add_argument("--tokenizer", choices=["moses", "none"], default=None,
                   help="word tokeniser before the subwords (default: moses for subword_nmt, none for sentencepiece)")
    p.add_argument("--no-normalize-punctuation", action="store_true",
                   help="skip Moses punctuation normalisation, which data-prep applies before either subword scheme")
    p.add_argument("--shortlist", help="a lexical shortlist (python -m fairseq_vqlatent.shortlist) to put in the decoder graph")
    p.add_argument("--int8", action="store_true", help="int8 dynamic quantisation of the graphs (ONNX Runtime)")
    p.add_argument("--max-len-a", type=float, default=1.2, help="code budget ceil((a |x| + b) / 2^n_c), as fairseq-generate's")
    p.add_argument("--max-len-b", type=int, default=10)
    p.add_argument("--ctc-blank-penalty", type=float, default=2.0, help="as translation_vqlatent's option")
    p.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")
    return p


def export(a: argparse.Namespace) -> dict:
    """Writes the translator into a temporary directory beside OUT_DIR, then renames it:
    an interrupted export leaves no half-written OUT_DIR."""
    subword = {"subword_nmt": a.bpe_codes, "sentencepiece": a.sentencepiece_model}[a.bpe]
    if not subword:
        flag = "--bpe-codes" if a.bpe == "subword_nmt" else "--sentencepiece-model"
        raise VQLatentError(f"--bpe {a.bpe} needs {flag}")
    if not os.path.isfile(subword):
        raise VQLatentError(f"subword model {subword} does not exist")
    if os.path.exists(a.out_dir) and not a.force:
        raise VQLatentError(f"{a.out_dir} exists: remove it, choose another OUT_DIR, or pass --force")
    tokenizer = a.tokenizer or ("moses" if a.bpe == "subword_nmt" else "none")
    model, task = load_model(a.checkpoint, a.data, a.source_lang, a.target_lang)
    src_lang, tgt_lang = task.cfg.source_lang, task.cfg.target_lang
    shortlist = None
    if a.shortlist:
        from .shortlist import Shortlist

        shortlist = Shortlist.load(a.shortlist, len(task.source_dictionary), len(task.target_dictionary))
    graphs = export_graphs(model, a.ctc_blank_penalty, shortlist)

    parent = os.path.dirname(os.path.abspath(a.out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".vqlatent-export-", dir=parent)
    try:
        for name, graph in graphs.items():
            path = os.path.join(tmp, f"{name}.onnx")
            with open(path, "wb") as f:
                f.write(graph)
            if a.int8:
                quantize_int8(path)
        for lang, d in ((src_lang, task.source_dictionary), (tgt_lang, task.target_dictionary)):
            d.save(os.path.join(tmp, f"dict.{lang}.txt"))
        subword_file = "bpe.codes" if a.bpe == "subword_nmt" else "spm.model"
        shutil.copyfile(subword, os.path.join(tmp, subword_file))
        d, prior = task.target_dictionary, model.prior
        config = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "source_lang": src_lang, "target_lang": tgt_lang,
            "dictionary": {"source": f"dict.{src_lang}.txt", "target": f"dict.{tgt_lang}.txt",
                           "source_size": len(task.source_dictionary), "target_size": len(d),
                           "bos": d.bos(), "pad": d.pad(), "eos": d.eos(), "unk": d.unk(), "nspecial": d.nspecial},
            "subword": {"scheme": a.bpe, "model": subword_file},
            "tokenizer": {"moses": tokenizer == "moses", "normalize_punctuation": not a.no_normalize_punctuation,
                          "aggressive_dash_splits": True, "xml_escape": True},
            "prior": {"end_token": prior.end_token, "nspecial": prior.dictionary.nspecial,
                      "max_latents": model.max_latents},
            "compression": model.compression, "max_len_a": a.max_len_a, "max_len_b": a.max_len_b,
            "max_source_positions": int(model.encoder.max_positions()),
            "ctc_blank_penalty": a.ctc_blank_penalty, "shortlist": shortlist is not None, "int8": a.int8,
            "exported_from": os.path.abspath(a.checkpoint),
        }
        with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=1)
        if os.path.exists(a.out_dir):
            shutil.rmtree(a.out_dir)
        os.rename(tmp, a.out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return config


def main(argv=None) -> int:
    from .errors import install_excepthook

    install_excepthook()
    a = _parser().parse_args(argv)
    try:
        config = export(a)
    except VQLatentError as e:
        print(f"vqlatent-export: error: {e}", file=sys.stderr)
        return 1
    extras = [x for x, on in (("shortlist", config["shortlist"]), ("int8", config["int8"])) if on]
    print(f"{a.out_dir}: {config['source_lang']}->{config['target_lang']} translator "
          f"({', '.join(['encoder', 'prior step', 'decoder'] + extras)}); "
          f"translate with: vqlatent-translate {a.out_dir} < input.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
