"""fairseq's own command lines, end to end on a 2,000-pair slice of Multi30k."""

import math
import re
import shutil

import pytest
import torch

from conftest import REPO, TINY_TRAIN_ARGS, run, train_losses

USER_DIR = ["--user-dir", str(REPO / "fairseq_vqlatent")]
INTERACTIVE = [*USER_DIR, "--task", "translation_vqlatent", "--cpu"]
GEN = [*INTERACTIVE, "--batch-size", "64"]


def hypotheses(stdout: str):
    return [line for line in stdout.splitlines() if line.startswith("H-")]


def test_training_loss_falls(trained):
    losses = train_losses(trained.log)
    assert len(losses) >= 10, trained.log[-2000:]
    assert losses[-1] < losses[0] - 1.0
    assert (trained.save / "checkpoint_last.pt").exists()


def test_generate_gives_one_hypothesis_per_test_sentence(trained):
    proc = run(["fairseq-generate", trained.data / "bin", *GEN, "--path", trained.save / "checkpoint_last.pt",
                "--gen-subset", "test", "--remove-bpe", "sentencepiece"])
    hyps = hypotheses(proc.stdout)
    assert len(hyps) == 1000
    assert len({int(h.split("\t")[0][2:]) for h in hyps}) == 1000
    assert "BLEU4" in proc.stdout


def test_latent_beam_decodes_too(trained):
    proc = run(["fairseq-generate", trained.data / "bin", *GEN, "--path", trained.save / "checkpoint_last.pt",
                "--gen-subset", "valid", "--latent-beam", "3", "--max-sentences", "16"])
    assert len(hypotheses(proc.stdout)) == 1014


def test_resume_continues_the_update_count_and_eval_bleu_decodes(trained, tmp_path):
    save = tmp_path / "resume"
    shutil.copytree(trained.save, save)
    proc = run(["fairseq-train", trained.data / "bin", *TINY_TRAIN_ARGS, "--max-update", "220", "--save-dir", save,
                "--eval-bleu", "--eval-bleu-remove-bpe", "sentencepiece", "--eval-bleu-args", '{"max_len_b": 64}'])
    log = proc.stdout + proc.stderr
    assert re.search(r"Loaded checkpoint .*checkpoint_last\.pt \(epoch \d+ @ 200 updates\)", log), log[-3000:]
    assert "num_updates 220" in log
    assert re.search(r"valid on 'valid' subset .*\| bleu \d", log), log[-3000:]


def test_interactive_translates_stdin(trained):
    lines = (trained.data / "sub" / "test.en").read_text().splitlines()[:3]
    proc = run(["fairseq-interactive", trained.data / "bin", *INTERACTIVE, "--path", trained.save / "checkpoint_last.pt",
                "--buffer-size", "3", "--batch-size", "3"], input="\n".join(lines) + "\n")
    assert len(hypotheses(proc.stdout)) == 3


def test_empty_input_line_is_a_clear_error(trained):
    proc = run(["fairseq-interactive", trained.data / "bin", *INTERACTIVE, "--path", trained.save / "checkpoint_last.pt"],
               input="▁A ▁dog\n\n", check=False)
    assert proc.returncode != 0
    assert "error: line 2 is empty: give one sentence per line" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_words_are_named_and_still_translated(trained):
    proc = run(["fairseq-interactive", trained.data / "bin", *INTERACTIVE, "--path", trained.save / "checkpoint_last.pt",
                "--buffer-size", "2", "--batch-size", "2"], input="▁A ▁dog\n▁A ▁qqqzzz ▁xxyyq\n")
    assert len(hypotheses(proc.stdout)) == 2
    assert "2 input token(s) in 1 of 2 sentence(s) are not in the source dictionary" in proc.stderr, proc.stderr[-2000:]


def test_latent_length_beyond_the_prior_is_a_clear_error(trained):
    proc = run(["fairseq-generate", trained.data / "bin", *GEN, "--path", trained.save / "checkpoint_last.pt",
                "--gen-subset", "valid", "--max-len-b", "100000"], check=False)
    assert proc.returncode != 0
    assert "longer than this model's latent predictor holds" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_autoregressive_checkpoint_is_refused_clearly(slice_data, tiny_teacher):
    proc = run(["fairseq-generate", slice_data / "bin", *GEN, "--path", tiny_teacher, "--gen-subset", "valid"],
               check=False)
    assert proc.returncode != 0
    assert "holds a 'transformer' model, not a vqlatent_transformer" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_noisy_parallel_decoding_with_teacher_rescoring(trained, tiny_teacher):
    proc = run(["fairseq-generate", trained.data / "bin", *GEN, "--path", trained.save / "checkpoint_last.pt",
                "--gen-subset", "valid", "--latent-candidates", "3", "--rescore-teacher", tiny_teacher])
    assert len(hypotheses(proc.stdout)) == 1014


@pytest.mark.parametrize("extra, message", [
    (["--rescore-teacher", "TEACHER"], "give --latent-candidates 2 or more"),
    (["--latent-candidates", "2", "--rescore-teacher", "LATENT"], "is a latent model; rescoring needs"),
    (["--latent-candidates", "2", "--rescore-teacher", "/nope.pt"], "checkpoint /nope.pt does not exist"),
])
def test_bad_rescoring_options_are_one_line_errors(trained, tiny_teacher, extra, message):
    paths = {"TEACHER": str(tiny_teacher), "LATENT": str(trained.save / "checkpoint_last.pt")}
    proc = run(["fairseq-generate", trained.data / "bin", *GEN, "--path", trained.save / "checkpoint_last.pt",
                "--gen-subset", "valid", *[paths.get(a, a) for a in extra]], check=False)
    assert proc.returncode != 0 and message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_data_directory_with_another_dictionary_is_refused_clearly(trained, tmp_path):
    other = tmp_path / "bin"
    shutil.copytree(trained.data / "bin", other)
    for side in ("en", "de"):
        with open(other / f"dict.{side}.txt", "a") as f:
            f.write("zzz-unseen-word 1\n")
    proc = run(["fairseq-generate", other, *GEN, "--path", trained.save / "checkpoint_last.pt",
                "--gen-subset", "valid"], check=False)
    assert proc.returncode != 0
    sizes = re.search(r"source dictionary has (\d+) entries, this data directory's (\d+)", proc.stderr)
    assert sizes and int(sizes.group(2)) == int(sizes.group(1)) + 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_inspect_codes_reports_codebook_health(trained):
    proc = run(["python", "-m", "fairseq_vqlatent.inspect_codes", trained.save / "checkpoint_last.pt",
                trained.data / "bin", "--split", "valid", "--bleu"])
    out = proc.stdout
    used = int(re.search(r"distinct codes\s+(\d+) of 32", out).group(1))
    assert 1 <= used <= 32
    assert float(re.search(r"code perplexity\s+([\d.]+)", out).group(1)) >= 1.0
    assert "most frequent codes" in out and "latent length" in out
    assert int(re.search(r"latent positions\s+(\d+)", out).group(1)) > 1014
    assert 0.0 <= float(re.search(r"code spread\s+([\d.]+)", out).group(1))
    assert 0.0 <= float(re.search(r"tokens changed\s+([\d.]+)%", out).group(1)) <= 100.0
    each, whole, info = map(float, re.search(
        r"code posterior\s+([\d.]+) nats per latent .*batch-averaged ([\d.]+); I\(z; c\) = (-?[\d.]+) nats", out).groups())
    assert 0.0 <= each <= whole + 0.01 <= math.log(32) + 0.02 and info == pytest.approx(whole - each, abs=0.011)
    for codes in ("prior codes", "own codes"):
        bleu, ratio = re.search(codes + r"\s+([\d.]+)\s+length ratio ([\d.]+)", out).groups()
        assert 0.0 <= float(bleu) <= 100.0 and float(ratio) > 0.0


def test_inspect_codes_names_a_missing_checkpoint(tmp_path):
    proc = run(["python", "-m", "fairseq_vqlatent.inspect_codes", tmp_path / "nope.pt", tmp_path], check=False)
    assert proc.returncode != 0 and "checkpoint" in proc.stderr and "does not exist" in proc.stderr


@pytest.mark.parametrize("extra, message", [
    (["--bottleneck", "semhash", "--codebook-size", "500"], "error: --bottleneck semhash needs a power of two"),
    (["--init-from-teacher", "/nonexistent/teacher.pt"], "error: --init-from-teacher: checkpoint /nonexistent/teacher.pt does not exist"),
])
def test_bad_training_options_are_one_line_errors(slice_data, tmp_path, extra, message):
    proc = run(["fairseq-train", slice_data / "bin", *TINY_TRAIN_ARGS, "--max-update", "1", "--save-dir", tmp_path,
                *extra], check=False)
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def input_file(tmp_path, content: bytes):
    path = tmp_path / "input.txt"
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("content, message", [
    ("▁A ▁dog ".encode() * 2000 + b"\n", r"line 1 has 4001 tokens, more than the model's \d+ positions"),
    ("▁A ▁dog ".encode() + b"\xff\xfe\n", r"the input is not UTF-8 text \(byte b'\\xff'"),
])
def test_bad_input_lines_are_one_line_errors(trained, tmp_path, content, message):
    proc = run(["fairseq-interactive", trained.data / "bin", *INTERACTIVE, "--path", trained.save / "checkpoint_last.pt",
                "--input", input_file(tmp_path, content)], check=False)
    assert proc.returncode != 0 and re.search(message, proc.stderr), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def truncated(src, dst):
    dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2])


def with_a_foreign_object(src, dst):
    import datetime

    import torch

    state = torch.load(src, weights_only=False)
    state["extra"] = datetime.datetime(2026, 1, 1)  # harmless, but not a global weights-only loading allows
    torch.save(state, dst)


@pytest.mark.parametrize("spoil, message", [
    (truncated, "is truncated or corrupt (not a complete torch checkpoint)"),
    (with_a_foreign_object, "refused: it pickles datetime.datetime, which is neither weights nor fairseq's options"),
])
def test_a_spoilt_checkpoint_is_a_one_line_error(trained, tmp_path, spoil, message):
    bad = tmp_path / "checkpoint.pt"
    spoil(trained.save / "checkpoint_last.pt", bad)
    proc = run(["fairseq-generate", trained.data / "bin", *GEN, "--path", bad, "--gen-subset", "valid"], check=False)
    assert proc.returncode != 0 and f"error: {bad} {message}" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_averaging_a_checkpoint_with_itself_gives_it_back_and_it_loads(trained, tmp_path):
    from fairseq import checkpoint_utils

    last, out = trained.save / "checkpoint_last.pt", tmp_path / "avg.pt"
    proc = run(["python", "-m", "fairseq_vqlatent.average_checkpoints", "--inputs", last, last, "--output", out])
    assert f"averaged 2 checkpoints (checkpoint_last.pt, checkpoint_last.pt) -> {out}" in proc.stdout
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(out)], arg_overrides={"data": str(trained.data / "bin")})
    original = checkpoint_utils.load_checkpoint_to_cpu(str(last))["model"]
    for key, value in models[0].state_dict().items():
        assert torch.equal(value, original[key]), key
    assert checkpoint_utils.load_checkpoint_to_cpu(str(out))["last_optimizer_state"] is None
