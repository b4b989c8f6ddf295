"""An exported latent translator in ONNX Runtime: raw sentences in, translations out.

    encoder.onnx     -> source states, the prior's source keys and values, its first code
    prior_step.onnx  one call per further code (a sentence has ceil(|y| / 2^n_c) of them),
                     its self-attention cache carried from call to call
    decoder.onnx     codes -> the CTC best path's token ids, in one call

The search is fairseq_vqlatent's greedy one (latent_generator.py): the likeliest code
at each step, until end-of-latents is more likely than not (P(end) > 0.5, never at
the first step) or the sentence's budget ceil((a |x| + b) / 2^n_c) codes is spent.
"""

import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np

from .text import TextCodec, read_dictionary

FORMAT = "vqlatent-translator"
FORMAT_VERSION = 1  # fairseq_vqlatent.export writes exactly this
# Up to this many sentences take one padded decoder pass; larger batches decode each code
# count apart, as LatentGenerator does: padding would otherwise be a third of the positions.
ONE_PASS_ROWS = 16


class TranslatorError(ValueError):
    """A problem with the translator directory or the input, said in one line."""


@dataclass
class Timings:
    """Seconds spent, summed over calls: in the graphs and their loop, and in the text codec."""

    decode: float = 0.0
    text: float = 0.0
    sentences: int = 0
    codes: List[int] = field(default_factory=list)


def _session(path: str, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    # Spinning worker threads keep every core busy between calls, and the Python between them slows down.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def read_config(directory: str) -> dict:
    path = os.path.join(directory, "config.json")
    if not os.path.isdir(directory):
        raise TranslatorError(f"{directory} does not exist: export a translator there with vqlatent-export")
    if not os.path.isfile(path):
        raise TranslatorError(f"{directory} is not an exported translator (no config.json): export one with vqlatent-export")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise TranslatorError(f"{path} is unreadable ({e}): export the translator again") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise TranslatorError(f"{path} is not the config of an exported vqlatent translator")
    if config.get("format_version") != FORMAT_VERSION:
        raise TranslatorError(
            f"{directory} was exported in format {config.get('format_version')}, and this vqlatent-translate reads "
            f"format {FORMAT_VERSION}: export it again with this version's vqlatent-export")
    return config


class Translator:
    def __init__(self, directory: str, threads: int = 0):
        self.config = c = read_config(directory)
        files = {name: os.path.join(directory, f"{name}.onnx") for name in ("encoder", "prior_step", "decoder")}
        d = c["dictionary"]
        files.update(source=os.path.join(directory, d["source"]), target=os.path.join(directory, d["target"]),
                     subword=os.path.join(directory, c["subword"]["model"]))
        for path in files.values():
            if not os.path.isfile(path):
                raise TranslatorError(f"{directory} is incomplete: {os.path.basename(path)} is missing; export it again")
        source, target = read_dictionary(files["source"], d["nspecial"]), read_dictionary(files["target"], d["nspecial"])
        if (len(source), len(target)) != (d["source_size"], d["target_size"]):
            raise TranslatorError(f"{directory}: the dictionaries do not match config.json; export it again")
        self.text = TextCodec(c, source, target, files["subword"])
        threads = threads or os.cpu_count() or 1
        self.encoder, self.decoder = _session(files["encoder"], threads), _session(files["decoder"], threads)
        # A step at batch 1 is a few matrix-vector products: one thread was faster than two.
        self.prior_one, self.prior_all = _session(files["prior_step"], 1), _session(files["prior_step"], threads)
        self.pad, self.nspecial = d["pad"], c["prior"]["nspecial"]
        self.timings = Timings()

    # ------------------------------------------------------------ text

    def problem(self, ids: Sequence[int]) -> Optional[str]:
        """What makes a line of these subword ids too long for the model, or None."""
        c = self.config
        if len(ids) > c["max_source_positions"]:
            return (f"is too long: {len(ids)} subwords, and this model reads at most {c['max_source_positions']}; "
                    "split the sentence")
        if self.budget(len(ids)) > c["prior"]["max_latents"]:
            return (f"is too long: its {self.budget(len(ids))} codes exceed the {c['prior']['max_latents']} this "
                    "model's prior holds; split the sentence")
        return None

    def budget(self, length: int) -> int:
        c = self.config
        return max(1, math.ceil((c["max_len_a"] * length + c["max_len_b"]) / c["compression"]))

    def translate(self, lines: Sequence[str], batch_size: int = 64, progress=None,
                  numbers: Optional[Sequence[int]] = None, on_bad_line=None) -> List[Optional[str]]:
        """Raw sentences -> detokenised translations, in input order. Sentences are sorted
        by length into batches: less padding, and similar code counts in a batch. A line
        too long for the model raises, or with ``on_bad_line(number, problem)`` is
        reported there and gets None."""
        numbers = numbers if numbers is not None else range(1, len(lines) + 1)
        started = time.perf_counter()
        ids, kept = [], []
        for i, (line, number) in enumerate(zip(lines, numbers)):
            x = self.text.encode(line)
            problem = self.problem(x)
            if problem and on_bad_line is None:
                raise TranslatorError(f"input line {number} {problem}")
            if problem:
                on_bad_line(number, problem)
                continue
            ids.append(x)
            kept.append(i)
        self.timings.text += time.perf_counter() - started
        out = self.translate_ids(ids, batch_size, progress)
        started = time.perf_counter()
        text: List[Optional[str]] = [None] * len(lines)
        for i, y in zip(kept, out):
            text[i] = self.text.decode(y)
        self.timings.text += time.perf_counter() - started
        return text

    def translate_ids(self, ids: Sequence[Sequence[int]], batch_size: int = 64, progress=None) -> List[List[int]]:
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
        out: List[List[int]] = [[] for _ in ids]
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            t0 = time.perf_counter()
            for i, y in zip(rows, self.decode_batch([ids[i] for i in rows])):
                out[i] = y
            self.timings.decode += time.perf_counter() - t0
            self.timings.sentences += len(rows)
            if progress is not None:
                progress(start + len(rows), len(ids))
        return out

    # ------------------------------------------------------------ graphs

    def decode_batch(self, ids: Sequence[Sequence[int]]) -> List[List[int]]:
        """Source ids (EOS last) -> target ids of each sentence."""
        S = max(len(x) for x in ids)
        src = np.full((len(ids), S), self.pad, dtype=np.int64)
        for row, x in enumerate(ids):  # left-padded, as fairseq batches sources
            src[row, S - len(x):] = x
        states, mask, source_keys, source_values, code, p_end, keys, values = self.encoder.run(None, {"src_tokens": src})
        codes, latent_mask = self.greedy_codes(src, mask, source_keys, source_values, code, keys, values,
                                               [self.budget(len(x)) for x in ids])
        lengths = (~latent_mask).sum(1)
        groups = [np.arange(len(ids))] if len(ids) <= ONE_PASS_ROWS else [np.flatnonzero(lengths == n) for n in np.unique(lengths)]
        out: List[List[int]] = [[] for _ in ids]
        for rows in groups:
            n = int(lengths[rows].max())
            feed = {"codes": codes[rows, :n], "latent_mask": latent_mask[rows, :n], "states": states[rows],
                    "mask": mask[rows]}
            if self.config["shortlist"]:
                feed["src_tokens"] = src[rows]
            tokens = self.decoder.run(None, feed)[0]
            for row, t in zip(rows, tokens):
                out[row] = t[t != self.pad].tolist()
        return out

    def greedy_codes(self, src, mask, source_keys, source_values, code, keys, values, budgets):
        """-> codes [B, L] (0 at padding), latent padding mask [B, L]."""
        B = len(budgets)
        budgets = np.asarray(budgets)
        lengths = budgets.copy()
        running = np.ones(B, dtype=bool)
        prior = self.prior_one if B == 1 else self.prior_all
        tokens = [code]
        for step in range(1, int(budgets.max())):
            feed = {"tokens": tokens[-1], "position": np.array([step], dtype=np.int64), "keys": keys, "values": values,
                    "source_keys": source_keys, "source_values": source_values, "mask": mask}
            code, p_end, keys, values = prior.run(None, feed)
            ends = running & ((p_end > 0.5) | (step >= budgets))
            lengths[ends] = step
            running &= ~ends
            if not running.any():
                break
            tokens.append(code)
        L = int(lengths.max())
        codes = np.stack(tokens[:L], 1) - self.nspecial
        latent_mask = np.arange(L)[None, :] >= lengths[:, None]
        self.timings.codes.extend(lengths.tolist())
        return np.where(latent_mask, 0, codes), latent_mask
