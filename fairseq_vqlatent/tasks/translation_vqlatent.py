"""fairseq's translation task, decoding in one shot through latent codes."""

import hashlib
import logging
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
from fairseq import metrics, utils
from fairseq.dataclass import ChoiceEnum
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from ..errors import VQLatentError
from ..input_lines import encode_line
from ..teacher_init import initialize_from_teacher
from ..latent_generator import LatentGenerator
from ..models.vqlatent_transformer import is_vqlatent_model
from ..modules import Bottleneck
from ..state_digest import write_state_digest
from ..teacher_scorer import TeacherScorer


logger = logging.getLogger(__name__)


@dataclass
class TranslationVQLatentConfig(TranslationConfig):
    latent_beam: int = field(default=1, metadata={"help": "beam size of the code search (1 = greedy)"})
    latent_stop: ChoiceEnum(["mass", "median", "argmax"]) = field(
        default="mass",
        metadata={
            "help": "greedy code search: stop when end-of-latents is more probable than all codes together "
            "(mass), when the path has more likely ended than not (median: the prior's stop probabilities "
            "accumulated over the steps), or when end-of-latents is the likeliest token (argmax)"
        },
    )
    latent_allow_repeats: bool = field(
        default=False,
        metadata={
            "help": "take the one-shot decoder's plain argmax at every position; by default a position "
            "takes the best token other than the one just before it"
        },
    )
    ctc_blank_penalty: float = field(
        default=2.0,
        metadata={
            "help": "CTC models: subtract this from the blank's log-probability before taking the best path; "
            "the best path under-generates, and a penalty lengthens it (valid BLEU 32.57 at 0, 33.22 at 2, "
            "33.01 at 4 on make benchmark-cpu's corpus)"
        },
    )
    latent_shortlist: str = field(
        default="",
        metadata={
            "help": "CTC models: score only the target types this lexical shortlist lists for a batch's source "
            "words (build one with python -m fairseq_vqlatent.shortlist); faster, approximate"
        },
    )
    latent_fairseq_layers: bool = field(
        default=False,
        metadata={
            "help": "run the prior and the one-shot decoder through fairseq's own layer modules; by default "
            "inference takes a lean path over the same weights (same output, less Python per step)"
        },
    )
    latent_bf16: bool = field(
        default=False,
        metadata={
            "help": "decode with the encoder and the one-shot decoder in bfloat16 and the prior in float32: "
            "faster on CPUs with AMX or AVX-512 BF16, at large batch above all; outputs may differ slightly"
        },
    )
    latent_onnx: bool = field(
        default=False,
        metadata={
            "help": "decode through ONNX Runtime: the encoder, the prior and the one-shot decoder (and the "
            "--rescore-teacher teacher) are exported as graphs when the generator is built (seconds); float32 on "
            "the CPU, the same output"
        },
    )
    latent_candidates: int = field(
        default=1,
        metadata={
            "help": "noisy parallel decoding: decode this many code sequences per sentence in one decoder pass "
            "and keep the best (1 = off)"
        },
    )
    latent_candidates_from: ChoiceEnum(["sample", "beam"]) = field(
        default="sample",
        metadata={"help": "the candidates: the greedy path plus samples from the prior, or the latent beam's best"},
    )
    rescore_teacher: str = field(
        default="",
        metadata={
            "help": "choose among --latent-candidates by this autoregressive teacher's score (one batched forward "
            "pass) instead of the one-shot decoder's own"
        },
    )
    skip_bad_lines: bool = field(
        default=False,
        metadata={
            "help": "fairseq-interactive: report each bad input line (empty, not UTF-8, raw text without --bpe, "
            "too long) once on stderr and translate the others, instead of stopping at the first"
        },
    )
    state_digest_dir: str = field(
        default="",
        metadata={
            "help": "at every validation, each worker appends the model's update count and a SHA-256 of its "
            "parameters and buffers to DIR/rank-R.txt: data-parallel workers must write the same lines"
        },
    )


def dictionary_sha(dictionary) -> str:
    return hashlib.sha256("\n".join(dictionary.symbols).encode("utf-8")).hexdigest()


@register_task("translation_vqlatent", dataclass=TranslationVQLatentConfig)
class TranslationVQLatentTask(TranslationTask):
    cfg: TranslationVQLatentConfig

    @classmethod
    def setup_task(cls, cfg, **kwargs):
        # fairseq infers both languages from the data directory when either is missing, so a
        # lone --source-lang was silently ignored.
        if (cfg.source_lang is None) != (cfg.target_lang is None):
            given, missing = ("--source-lang", "--target-lang") if cfg.target_lang is None else ("--target-lang", "--source-lang")
            value = cfg.source_lang if cfg.target_lang is None else cfg.target_lang
            raise VQLatentError(f"{given} {value} without {missing}: give both, or neither (then the data directory's "
                                "dict.*.txt decide)")
        return super().setup_task(cfg, **kwargs)

    def __init__(self, cfg, src_dict, tgt_dict):
        super().__init__(cfg, src_dict, tgt_dict)
        self.input_lines_read = 0  # fairseq-interactive's lines so far, for errors that name a line
        self.first_line_of_chunk = 1
        self.subwords_given = False
        self.bad_lines_in_chunk = set()  # with --skip-bad-lines: indices into the current chunk of lines

    # -------------------------------------------------- what the model was trained on

    def trained_on(self) -> dict:
        return {"source_lang": self.cfg.source_lang, "target_lang": self.cfg.target_lang,
                "source_dictionary": (len(self.src_dict), dictionary_sha(self.src_dict)),
                "target_dictionary": (len(self.tgt_dict), dictionary_sha(self.tgt_dict))}

    def state_dict(self):
        # Saved in every checkpoint (fairseq's task_state), so that decoding can refuse
        # another direction, or a dictionary of the same size in another order.
        return {**super().state_dict(), "trained_on": self.trained_on()}

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        trained, here = state_dict.pop("trained_on", None), self.trained_on()
        if trained:  # checkpoints from before it lack it
            if (trained["source_lang"], trained["target_lang"]) != (here["source_lang"], here["target_lang"]):
                raise VQLatentError(
                    f"the checkpoint translates {trained['source_lang']}->{trained['target_lang']}, not "
                    f"{here['source_lang']}->{here['target_lang']}: give --source-lang {trained['source_lang']} "
                    f"--target-lang {trained['target_lang']}, or a checkpoint trained for this direction")
            for side, lang in (("source", here["source_lang"]), ("target", here["target_lang"])):
                (n_then, sha_then), (n_here, sha_here) = trained[f"{side}_dictionary"], here[f"{side}_dictionary"]
                if n_then != n_here:
                    raise VQLatentError(
                        f"the checkpoint's {side} dictionary has {n_then} entries, this data directory's {n_here} "
                        f"(dict.{lang}.txt): use the data directory the model was trained on")
                if sha_then != sha_here:
                    raise VQLatentError(
                        f"the checkpoint's {side} dictionary has the same {n_here} entries as this data directory's "
                        f"dict.{lang}.txt, but in another order or with other words: use the data directory the "
                        "model was trained on")
        super().load_state_dict(state_dict)

    # -------------------------------------------------- raw input (fairseq-interactive)

    def build_bpe(self, args):
        self.subwords_given = getattr(args, "_name", None) is not None
        return super().build_bpe(args)

    def get_interactive_tokens_and_lengths(self, lines, encode_fn):
        self.first_line_of_chunk = self.input_lines_read + 1
        self.bad_lines_in_chunk = set()
        tokens = []
        for i, line in enumerate(lines):
            self.input_lines_read += 1
            try:
                tokens.append(encode_line(line, self.input_lines_read, encode_fn, self.source_dictionary,
                                          self.subwords_given))
            except VQLatentError as e:
                self._bad_line(i, str(e))
                tokens.append(torch.tensor([self.source_dictionary.eos()]))  # a stand-in, never batched
        return tokens, [t.numel() for t in tokens]

    def _bad_line(self, index: int, problem: str) -> None:
        if not self.cfg.skip_bad_lines:
            raise VQLatentError(problem)
        self.bad_lines_in_chunk.add(index)
        print(f"warning: {problem}; skipped (--skip-bad-lines)", file=sys.stderr, flush=True)

    def filter_indices_by_size(self, indices, dataset, max_positions=None, ignore_invalid_inputs=False):
        if getattr(dataset, "interactive", False) and self.bad_lines_in_chunk:
            # dropped here, as fairseq drops over-long inputs: the others keep their line's id
            indices = indices[~np.isin(indices, sorted(self.bad_lines_in_chunk))]
        return super().filter_indices_by_size(indices, dataset, max_positions, ignore_invalid_inputs)

    def build_generator(self, models, args, seq_gen_cls=None, extra_gen_cls_kwargs=None, **unused):
        for model in models:
            if not is_vqlatent_model(model):
                name = getattr(getattr(model, "cfg", None), "_name", None) or type(model).__name__
                path = getattr(args, "path", None)
                raise VQLatentError(
                    f"checkpoint {path or ''} holds a {name!r} model, not a vqlatent_transformer: "
                    "decode autoregressive models with --task translation, without --user-dir"
                )
        if getattr(args, "score_reference", False):
            raise VQLatentError("--score-reference is not supported: the output is decoded in one shot from codes")
        # --eval-bleu passes a plain Namespace: read every option with a default.
        def option(name):
            value = getattr(args, name, None)
            return value if value is not None else getattr(self.cfg, name)

        for name, flag in (("latent_beam", "--latent-beam"), ("latent_candidates", "--latent-candidates")):
            if option(name) < 1:
                raise VQLatentError(f"{flag} must be 1 or more, got {option(name)}")
        teacher = option("rescore_teacher")
        if teacher and option("latent_candidates") < 2:
            raise VQLatentError("--rescore-teacher chooses among candidates: give --latent-candidates 2 or more")
        scorer = TeacherScorer.load(teacher, utils.split_paths(self.cfg.data)[0], self.target_dictionary) if teacher else None
        shortlist = option("latent_shortlist")
        if shortlist:
            from ..shortlist import Shortlist  # not at import: `python -m fairseq_vqlatent.shortlist` runs it as __main__

            shortlist = Shortlist.load(shortlist, len(self.source_dictionary), len(self.target_dictionary))
        return LatentGenerator(
            models,
            self.target_dictionary,
            latent_beam=option("latent_beam"),
            max_len_a=getattr(args, "max_len_a", 0),
            max_len_b=getattr(args, "max_len_b", 200),
            stop=option("latent_stop"),
            candidates=option("latent_candidates"),
            candidates_from=option("latent_candidates_from"),
            scorer=scorer,
            allow_repeats=bool(option("latent_allow_repeats")),
            blank_penalty=float(option("ctc_blank_penalty")),
            shortlist=shortlist or None,
            fairseq_layers=bool(option("latent_fairseq_layers")),
            bf16=bool(option("latent_bf16")),
            onnx=bool(option("latent_onnx")),
        )

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        # fairseq logs no BLEU when no hypothesis has a word, and choosing checkpoint_best by
        # BLEU then fails with KeyError 'bleu'. A young CTC decoder emits only blanks.
        unigrams = [log["_bleu_totals_0"] for log in logging_outputs if "_bleu_totals_0" in log]
        if unigrams and not sum(unigrams) > 0:  # validating, and every hypothesis empty
            metrics.log_scalar("bleu", 0.0)

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        teacher = getattr(cfg, "init_from_teacher", "")
        if teacher and not from_checkpoint:  # a resumed run then loads its own checkpoint over it
            logger.info(initialize_from_teacher(model, teacher).summary())
        if getattr(self, "sequence_generator", None) is not None:  # --eval-bleu
            self.sequence_generator.allow_empty_sources = True
            self.sequence_generator.onnx = False  # graphs exported once would keep the weights of that moment
        return model

    def begin_valid_epoch(self, epoch, model):
        super().begin_valid_epoch(epoch, model)
        if self.cfg.state_digest_dir:
            write_state_digest(model, self.cfg.state_digest_dir, getattr(model, "num_updates", 0))

    def get_batch_iterator(self, dataset, *args, **kwargs):
        # fairseq drops a final batch whose size is not a multiple of
        # --required-batch-size-multiple (8 by default). Batches are sorted by
        # length, so outside training that silently loses the longest sentences.
        if dataset is not self.datasets.get(self.cfg.train_subset):
            kwargs["required_batch_size_multiple"] = 1
        if getattr(dataset, "interactive", False) and not kwargs.get("ignore_invalid_inputs"):
            self._refuse_over_long(dataset, kwargs.get("max_positions"))
        return super().get_batch_iterator(dataset, *args, **kwargs)

    def _refuse_over_long(self, dataset, max_positions):
        limit = max_positions[0] if isinstance(max_positions, (tuple, list)) else max_positions
        if limit is None:
            return
        for i, n in enumerate(dataset.src_sizes):
            if n > limit and i not in self.bad_lines_in_chunk:
                self._bad_line(i, f"line {self.first_line_of_chunk + i} has {n} tokens, more than the model's {limit} "
                                  "positions: split it, or skip such lines with --skip-bad-lines")

    def build_dataset_for_inference(self, src_tokens, src_lengths, constraints=None):
        # fairseq-interactive and the hub interface map words outside the dictionary
        # to <unk>, as fairseq does; say so rather than translate them silently.
        unknown = [int(t.eq(self.source_dictionary.unk()).sum()) for t in src_tokens]
        if any(unknown):
            logger.warning(
                f"{sum(unknown)} input token(s) in {sum(n > 0 for n in unknown)} of {len(src_tokens)} sentence(s) "
                "are not in the source dictionary and are translated as <unk>"
            )
        dataset = super().build_dataset_for_inference(src_tokens, src_lengths, constraints)
        dataset.interactive = True  # lines of raw input, numbered by get_interactive_tokens_and_lengths
        return dataset

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        # A dummy batch (ignore_grad) still joins the codebook all-reduce, adding nothing.
        bottlenecks = [m for m in model.modules() if isinstance(m, Bottleneck)]
        for bn in bottlenecks:
            bn.learn_from_batch = not ignore_grad
        try:
            return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)
        finally:
            for bn in bottlenecks:
                bn.learn_from_batch = True
