"""Issue 25's catalogue of bad input, each case one line naming the problem, no traceback,
no partial output and nothing executed: on a tiny model trained by fairseq-train on a
real Multi30k slice (sentencepiece)."""

import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import REPO, TINY_TRAIN_ARGS, run

USER_DIR = ["--user-dir", str(REPO / "fairseq_vqlatent")]
LATENT = [*USER_DIR, "--task", "translation_vqlatent", "--cpu"]


def one_line_error(proc, message):
    """The command failed with exactly one error line, containing ``message`` (a regex), and no traceback."""
    assert proc.returncode != 0, proc.stdout[-1000:]
    errors = [line for line in proc.stderr.splitlines() if re.match(r"(vqlatent-\w+: )?error:", line)]
    assert len(errors) == 1 and re.search(message, errors[0]), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


def interactive(trained, text, *extra, input_bytes=None):
    cmd = ["fairseq-interactive", trained.data / "bin", *LATENT, "--path", trained.save / "checkpoint_last.pt",
           "--buffer-size", "3", "--batch-size", "3", *extra]
    env = dict(os.environ, PATH=f"{sys.executable.rsplit('/', 1)[0]}:{os.environ['PATH']}", OMP_NUM_THREADS="1")
    proc = subprocess.run([str(c) for c in cmd], input=input_bytes if input_bytes is not None else text.encode(),
                          capture_output=True, env=env, cwd=REPO, timeout=600)
    proc.stdout, proc.stderr = proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")
    return proc


def pieces(trained, n=5):
    return (trained.data / "sub" / "test.en").read_text(encoding="utf-8").splitlines()[:n]


# ------------------------------------------------------------ raw input to fairseq-interactive

def test_raw_text_without_bpe_is_refused_naming_the_option(trained):
    proc = interactive(trained, "A man in a blue shirt is standing on a ladder.\n")
    one_line_error(proc, r"line 1 looks like raw text, but the model reads sentencepiece subwords and no --bpe was "
                         r"given: add --bpe sentencepiece --sentencepiece-model MODEL")
    assert "H-" not in proc.stdout


def test_raw_text_with_the_subword_model_translates(trained):
    proc = interactive(trained, "A man in a blue shirt is standing on a ladder.\n", "--bpe", "sentencepiece",
                       "--sentencepiece-model", trained.data / "spm.model")
    assert proc.returncode == 0 and len(re.findall(r"^H-0\t", proc.stdout, re.M)) == 1, proc.stderr[-2000:]


def test_the_moses_tokeniser_without_languages_is_one_line(trained):
    proc = interactive(trained, "A man.\n", "--tokenizer", "moses")
    one_line_error(proc, r"--tokenizer moses needs the languages: give --source-lang and --target-lang")


@pytest.mark.parametrize("subwords", [[], ["--bpe", "sentencepiece", "--sentencepiece-model", "SPM"]])
def test_bytes_that_are_not_utf8_on_stdin_are_named_by_line(trained, subwords):
    good = "\n".join(pieces(trained, 3)) + "\n"
    extra = [str(trained.data / "spm.model") if a == "SPM" else a for a in subwords]
    proc = interactive(trained, None, *extra, input_bytes=good.encode() + b"caf\xe9 au lait\n")
    one_line_error(proc, r"line 4 is not UTF-8 text \(byte b'\\xe9' at column 4\)")


@pytest.mark.parametrize("bad_line, message", [
    ("", r"line 4 is empty: give one sentence per line"),
    ("\u2581A " * 2000, r"line 4 has 2001 tokens, more than the model's \d+ positions: split it, or skip such lines with --skip-bad-lines"),
])
def test_errors_count_lines_from_1_over_the_whole_input(trained, bad_line, message):
    lines = pieces(trained, 3) + [bad_line] + pieces(trained, 2)
    proc = interactive(trained, "\n".join(lines) + "\n")  # buffers of 3: line 4 opens the second one
    one_line_error(proc, message)


# ------------------------------------------------------------ the model and its data must match

def test_a_direction_the_checkpoint_was_not_trained_on_is_refused(trained):
    proc = run(["fairseq-generate", trained.data / "bin", *LATENT, "--path", trained.save / "checkpoint_last.pt",
                "--gen-subset", "valid", "--source-lang", "de", "--target-lang", "en"], check=False)
    one_line_error(proc, r"the checkpoint translates en->de, not de->en: give --source-lang en --target-lang de")


def test_a_dictionary_of_the_same_size_in_another_order_is_refused(trained, tmp_path):
    other = tmp_path / "bin"
    shutil.copytree(trained.data / "bin", other)
    for side in ("en", "de"):
        entries = (other / f"dict.{side}.txt").read_text(encoding="utf-8").splitlines()
        entries[0], entries[1] = entries[1], entries[0]
        (other / f"dict.{side}.txt").write_text("\n".join(entries) + "\n", encoding="utf-8")
    proc = run(["fairseq-generate", other, *LATENT, "--path", trained.save / "checkpoint_last.pt",
                "--gen-subset", "valid"], check=False)
    one_line_error(proc, r"the checkpoint's source dictionary has the same \d+ entries as this data directory's "
                         r"dict.en.txt, but in another order")


def test_a_language_the_data_directory_lacks_is_one_line(trained):
    proc = run(["fairseq-generate", trained.data / "bin", *LATENT, "--path", trained.save / "checkpoint_last.pt",
                "--gen-subset", "valid", "--source-lang", "fr", "--target-lang", "de"], check=False)
    one_line_error(proc, r"has no dict.fr.txt: --source-lang and --target-lang must be languages of the data directory")


def test_one_language_alone_is_refused_rather_than_ignored(trained):
    proc = run(["fairseq-generate", trained.data / "bin", *LATENT, "--path", trained.save / "checkpoint_last.pt",
                "--gen-subset", "valid", "--source-lang", "fr"], check=False)  # fairseq would infer en-de, silently
    one_line_error(proc, r"--source-lang fr without --target-lang: give both, or neither")


def test_a_missing_checkpoint_is_one_line(trained, tmp_path):
    proc = run(["fairseq-generate", trained.data / "bin", *LATENT, "--path", tmp_path / "nope.pt",
                "--gen-subset", "valid"], check=False)
    one_line_error(proc, rf"checkpoint {tmp_path}/nope.pt does not exist")


@pytest.mark.parametrize("option", [["--latent-beam", "0"], ["--latent-candidates", "0"]])
def test_search_sizes_below_one_are_refused(trained, option):
    proc = run(["fairseq-generate", trained.data / "bin", *LATENT, "--path", trained.save / "checkpoint_last.pt",
                "--gen-subset", "valid", *option], check=False)
    one_line_error(proc, rf"{option[0]} must be 1 or more, got 0")


# ------------------------------------------------------------ training options

@pytest.mark.parametrize("extra, message", [
    (["--codebook-size", "0"], r"--codebook-size must be 2 or more, got 0"),
    (["--codebook-size", "-5"], r"--codebook-size must be 2 or more, got -5"),
    (["--num-samples", "0"], r"--num-samples must be 1 or more, got 0"),
    (["--save-dir", "FILE"], r"--save-dir .*/a-file is a file, not a directory"),
    (["--save-dir", "/sys/vqlatent-save"], r"--save-dir /sys/vqlatent-save cannot be written"),
])
def test_bad_training_options_are_one_line_errors_and_write_nothing(slice_data, tmp_path, extra, message):
    (tmp_path / "a-file").write_text("")
    extra = [str(tmp_path / "a-file") if a == "FILE" else a for a in extra]
    save = [] if "--save-dir" in extra else ["--save-dir", str(tmp_path / "save")]
    proc = run(["fairseq-train", slice_data / "bin", *TINY_TRAIN_ARGS, "--max-update", "2", *save, *extra], check=False)
    one_line_error(proc, message)
    assert not list(tmp_path.rglob("*.pt"))  # no crash.pt either


@pytest.mark.parametrize("script", ["train-teacher.sh", "train-vqlatent.sh"])
def test_a_budget_is_never_run_as_code(slice_data, tmp_path, script):
    canary = tmp_path / "canary"
    proc = run(["bash", REPO / "scripts" / script, slice_data / "bin", tmp_path / "save",
                "--minutes", f"__import__('os').system('touch {canary}') or 1"], check=False)
    one_line_error(proc, r"--minutes must be a number of minutes \(0 = no limit\), got")
    assert not canary.exists()
    proc = run(["bash", REPO / "scripts" / script, slice_data / "bin", tmp_path / "save", "--minutes", "abc"], check=False)
    one_line_error(proc, r"--minutes must be a number of minutes \(0 = no limit\), got 'abc'")
    assert len(proc.stderr.splitlines()) == 1  # not fairseq's usage


def test_a_budget_from_the_environment_is_never_run_as_code(tmp_path):
    canary = tmp_path / "canary"
    proc = run(["bash", REPO / "scripts" / "pipeline.sh", "multi30k", "--work", tmp_path / "work"], check=False,
               env={"TEACHER_MINUTES": f"__import__('os').system('touch {canary}') or 1"})
    one_line_error(proc, r"--teacher-minutes \(TEACHER_MINUTES\) must be a number of minutes")
    assert not canary.exists()


# ------------------------------------------------------------ a pickle that runs code, on every loading path

class RunsCode:
    def __init__(self, canary):
        self.canary = str(canary)

    def __reduce__(self):
        return (os.system, (f"touch {self.canary}",))


@pytest.fixture(scope="module")
def booby_trapped(trained, tmp_path_factory):
    """A real checkpoint, and a shortlist, that each also pickle a call to os.system."""
    d = tmp_path_factory.mktemp("trap")
    state = torch.load(trained.save / "checkpoint_last.pt", weights_only=False)
    state["extra"] = RunsCode(d / "canary")
    torch.save(state, d / "checkpoint.pt")
    torch.save({"candidates": RunsCode(d / "canary")}, d / "shortlist.pt")
    return d


REFUSED = r"refused: it pickles posix.system, which is neither weights nor fairseq's options"


@pytest.mark.parametrize("path", ["generate", "interactive", "init-from-teacher", "rescore-teacher", "average",
                                  "shortlist", "inspect", "export"])
def test_a_pickle_that_runs_code_is_refused_in_one_line_on_every_path(trained, booby_trapped, slice_data, tmp_path, path):
    trap, data, good = booby_trapped / "checkpoint.pt", trained.data / "bin", trained.save / "checkpoint_last.pt"
    commands = {
        "generate": ["fairseq-generate", data, *LATENT, "--path", trap, "--gen-subset", "valid"],
        "interactive": ["fairseq-interactive", data, *LATENT, "--path", trap],
        "init-from-teacher": ["fairseq-train", data, *TINY_TRAIN_ARGS, "--max-update", "1", "--save-dir",
                              tmp_path / "save", "--init-from-teacher", trap],
        "rescore-teacher": ["fairseq-generate", data, *LATENT, "--path", good, "--gen-subset", "valid",
                            "--latent-candidates", "2", "--rescore-teacher", trap],
        "average": ["vqlatent-average", "--inputs", good, trap, "--output", tmp_path / "avg.pt"],
        "shortlist": ["fairseq-generate", data, *LATENT, "--path", good, "--gen-subset", "valid",
                      "--latent-shortlist", booby_trapped / "shortlist.pt"],
        "inspect": ["vqlatent-inspect", trap, data],
        "export": ["vqlatent-export", trap, tmp_path / "export", "--data", data, "--bpe", "sentencepiece",
                   "--sentencepiece-model", trained.data / "spm.model"],
    }
    proc = run(commands[path], check=False, input="\u2581A \u2581dog\n")
    one_line_error(proc, REFUSED)
    assert not (booby_trapped / "canary").exists()
    assert not (tmp_path / "avg.pt").exists() and not (tmp_path / "export").exists()


# ------------------------------------------------------------ the Python API

def hub(save, data, checkpoint="checkpoint_last.pt"):
    from fairseq_vqlatent.models.vqlatent_transformer import VQLatentTransformerModel

    return VQLatentTransformerModel.from_pretrained(str(save), checkpoint_file=checkpoint, data_name_or_path=str(data),
                                                    bpe="sentencepiece", sentencepiece_model=str(data.parent / "spm.model"))


def test_the_hub_refuses_an_autoregressive_checkpoint(slice_data, tiny_teacher):
    from fairseq_vqlatent import VQLatentError

    with pytest.raises(VQLatentError, match=r"holds a 'transformer' model, not a vqlatent_transformer"):
        hub(tiny_teacher.parent, slice_data / "bin")


def test_the_hub_takes_utf8_bytes_and_names_other_bytes(trained):
    from fairseq_vqlatent import VQLatentError

    translator = hub(trained.save, trained.data / "bin").eval()
    assert translator.translate("A dog runs.".encode()) == translator.translate("A dog runs.")
    with pytest.raises(VQLatentError, match=r"sentence 2 is not UTF-8 text \(byte b'\\xe9' at byte 4\)"):
        translator.translate(["A dog.", b"caf\xe9"])


def test_the_hub_refuses_a_pickle_that_runs_code_in_one_line(trained, booby_trapped):
    from fairseq_vqlatent import VQLatentError

    with pytest.raises(VQLatentError, match=REFUSED):
        hub(booby_trapped, trained.data / "bin", checkpoint="checkpoint.pt")
    assert not (booby_trapped / "canary").exists()


def test_importing_the_package_leaves_sys_excepthook_alone():
    code = "import sys; import fairseq_vqlatent; print(sys.excepthook is sys.__excepthook__)"
    assert run([sys.executable, "-c", code]).stdout.strip() == "True"
