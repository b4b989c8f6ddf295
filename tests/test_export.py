"""vqlatent-export and vqlatent-translate: a tiny CTC model trained by fairseq-train on a
BPE slice of Multi30k, exported, translates raw test lines to the text fairseq-generate
and the Moses detokeniser give, at batch 1 and 64, with and without a shortlist, and
without importing torch or fairseq; bad input gets one line and no output."""

import json
import subprocess
import sys

import pytest
import torch
from sacremoses import MosesDetokenizer

from conftest import BIN, REPO, TINY_TRAIN_ARGS, build_tiny_model, padded_sources, run, toy_task
from fairseq_vqlatent.export import export_graphs
from fairseq_vqlatent.latent_generator import LatentGenerator

TEST_LINES = 200


@pytest.fixture(scope="module")
def exported(tmp_path_factory, corpus_dir):
    """A BPE slice (data-prep), a tiny CTC model (fairseq-train), its shortlist, and its translators."""
    work = tmp_path_factory.mktemp("export")
    data = work / "data"
    run(["bash", REPO / "data-prep" / "prepare-multi30k.sh", "--from", corpus_dir, data,
         "--max-lines", "2000", "--max-eval-lines", str(TEST_LINES), "--bpe-merges", "1000"])
    save = work / "ckpt"
    run(["fairseq-train", data / "bin", *TINY_TRAIN_ARGS, "--ctc-upsample", "2", "--label-smoothing", "0.1",
         "--max-update", "400",
         "--save-dir", save, "--no-epoch-checkpoints"])
    ckpt = save / "checkpoint_last.pt"
    shortlist = work / "shortlist.pt"
    run([sys.executable, "-m", "fairseq_vqlatent.shortlist", data / "bin", shortlist, "--top-k", "1", "--frequent", "2"])
    common = [ckpt, "--data", data / "bin", "--bpe", "subword_nmt", "--bpe-codes", data / "bpe.codes", "--tokenizer", "moses"]
    run(["vqlatent-export", common[0], work / "translator", *common[1:]])
    run(["vqlatent-export", common[0], work / "translator-shortlist", *common[1:], "--shortlist", shortlist])
    return dict(data=data, ckpt=ckpt, shortlist=shortlist, work=work)


def generate(exported, *extra):
    """fairseq-generate's translations of the test slice, detokenised as scripts/evaluate.sh does."""
    proc = run(["fairseq-generate", exported["data"] / "bin", "--user-dir", REPO / "fairseq_vqlatent",
                "--task", "translation_vqlatent", "--path", exported["ckpt"], "--gen-subset", "test",
                "--batch-size", "64", "--remove-bpe", "--cpu", "--max-len-a", "1.2", "--max-len-b", "10", *extra])
    hyps = {}
    for line in proc.stdout.splitlines():
        if line.startswith("H-"):
            number, _, text = line[2:].split("\t")
            hyps[int(number)] = text
    assert sorted(hyps) == list(range(TEST_LINES))
    detok = MosesDetokenizer("de")
    return [detok.detokenize(hyps[i].split(), return_str=True) for i in range(TEST_LINES)]


def translate(directory, lines, *options, check=True):
    """vqlatent-translate in a fresh interpreter that fails if torch or fairseq was imported."""
    code = ("import sys; from vqlatent_runtime.cli import main; status = main(sys.argv[1:]); "
            "leaked = [m for m in ('torch', 'fairseq', 'fairseq_vqlatent') if m in sys.modules]; "
            "assert not leaked, f'imported {leaked}'; sys.exit(status)")
    return run([sys.executable, "-c", code, directory, *options], input=lines, check=check)


def raw_test(exported):
    return (exported["data"] / "orig" / "test.en").read_text(encoding="utf-8")


@pytest.mark.parametrize("batch", ["1", "64"])
def test_translate_gives_fairseq_generates_text_without_torch(exported, batch):
    expected = generate(exported)
    out = translate(exported["work"] / "translator", raw_test(exported), "--batch-size", batch, "--threads", "1")
    found = out.stdout.splitlines()
    assert len(found) == TEST_LINES
    assert found == expected
    assert len(set(found)) > 5  # varied output: a tiny model says little, but not one thing


def test_the_shortlist_inside_the_graph_gives_latent_shortlists_text(exported):
    expected = generate(exported, "--latent-shortlist", exported["shortlist"], "--batch-size", "1")
    out = translate(exported["work"] / "translator-shortlist", raw_test(exported), "--batch-size", "1", "--threads", "1")
    assert out.stdout.splitlines() == expected
    assert expected != generate(exported)  # a 1-candidate shortlist changes some output: it was applied


@pytest.mark.parametrize("shortlist", [False, True], ids=["full", "shortlist"])
def test_int8_export_translates_and_says_so(exported, shortlist):
    out_dir = exported["work"] / f"translator-int8-{shortlist}"
    extra = ["--shortlist", exported["shortlist"]] if shortlist else []
    run(["vqlatent-export", exported["ckpt"], out_dir, "--data", exported["data"] / "bin", "--bpe", "subword_nmt",
         "--bpe-codes", exported["data"] / "bpe.codes", "--int8", *extra])
    assert json.loads((out_dir / "config.json").read_text())["int8"] is True
    float32 = (exported["work"] / "translator" / "decoder.onnx").stat().st_size
    assert (out_dir / "decoder.onnx").stat().st_size < 0.75 * float32  # int8 weights
    found = translate(out_dir, raw_test(exported), "--batch-size", "64").stdout.splitlines()
    assert len(found) == TEST_LINES
    # int8 rounds, so a few words may change; the shortlist's bans once became NaN and every line empty
    reference = translate(exported["work"] / ("translator-shortlist" if shortlist else "translator"), raw_test(exported),
                          "--batch-size", "64").stdout.splitlines()
    assert sum(a == b for a, b in zip(found, reference)) > 0.8 * TEST_LINES


def test_raw_text_reaches_the_model_as_data_prep_binarised_it(exported):
    from vqlatent_runtime.translator import Translator

    codec = Translator(exported["work"] / "translator", threads=1).text
    sub = (exported["data"] / "sub" / "test.en").read_text(encoding="utf-8").splitlines()
    assert [codec.subwords(line) for line in raw_test(exported).splitlines()] == [s.split() for s in sub]


def test_the_graphs_decode_as_the_generator_alone_and_in_a_padded_batch():
    """On a model whose prior never stops, each sentence's own code budget decides its
    length: a batch must not lend a short sentence a longer sentence's budget."""
    from vqlatent_runtime.translator import Timings, Translator, _session

    task = toy_task()
    torch.manual_seed(0)
    model = build_tiny_model(task, ctc_upsample=2).eval()
    gen = LatentGenerator([model], task.target_dictionary, max_len_a=1.2, max_len_b=10, blank_penalty=2.0)
    src, lengths = padded_sources(task)
    expected = [h[0]["tokens"][:-1].tolist() for h in gen.generate([model], {"net_input": {"src_tokens": src, "src_lengths": lengths}})]
    alone = [gen.generate([model], {"net_input": {"src_tokens": row[row.ne(1)][None], "src_lengths": n[None]}})[0][0]
             for row, n in zip(src, lengths)]
    assert [h["tokens"][:-1].tolist() for h in alone] == expected  # failed when the batch's longest sentence set the budget
    sessions = {name: _session(graph, 1) for name, graph in export_graphs(model, 2.0).items()}
    translator = Translator.__new__(Translator)
    translator.encoder, translator.decoder = sessions["encoder"], sessions["decoder"]
    translator.prior_one = translator.prior_all = sessions["prior_step"]
    translator.pad, translator.nspecial, translator.timings = task.target_dictionary.pad(), 4, Timings()
    translator.config = {"shortlist": False, "max_len_a": 1.2, "max_len_b": 10, "compression": model.compression}
    ids = [row[row.ne(task.source_dictionary.pad())].tolist() for row in src]
    assert translator.decode_batch(ids) == expected
    assert [translator.decode_batch([x])[0] for x in ids] == expected
    budgets = [translator.budget(len(x)) for x in ids]
    assert len(set(budgets)) > 1 and translator.timings.codes[:6] == budgets  # the prior never stopped


@pytest.mark.parametrize("data, problem", [
    (b"A man.\n\nA dog.\n", "input line 2 is empty"),
    (b"A man.\nA \xff dog.\n", "input line 2 is not UTF-8"),
    (b"A man.\n" + b"dog " * 2000 + b"\n", "input line 2 is too long"),
], ids=["empty", "not-utf8", "over-long"])
def test_bad_input_is_one_line_and_no_output(exported, tmp_path, data, problem):
    out_file = tmp_path / "out.txt"
    proc = subprocess.run([BIN / "vqlatent-translate", exported["work"] / "translator", "--output", out_file],
                          input=data, capture_output=True, timeout=300)
    stderr = proc.stderr.decode()
    assert proc.returncode == 1
    assert stderr.count("\n") == 1 and problem in stderr, stderr
    assert proc.stdout == b"" and list(tmp_path.iterdir()) == []


def test_a_missing_or_foreign_directory_is_one_line(exported, tmp_path):
    proc = translate(tmp_path / "nowhere", "A man.\n", check=False)
    assert proc.returncode == 1 and "does not exist" in proc.stderr and proc.stderr.count("\n") == 1
    other = tmp_path / "other"
    other.mkdir()
    for f in (exported["work"] / "translator").iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    proc = translate(other, "A man.\n", check=False)
    assert proc.returncode == 1 and "format 99" in proc.stderr and "export it again" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_export_refuses_in_one_line(exported, tmp_path):
    data = exported["data"]
    common = ["--data", data / "bin", "--bpe", "subword_nmt", "--bpe-codes", data / "bpe.codes"]
    proc = run(["vqlatent-export", exported["ckpt"], exported["work"] / "translator", *common], check=False)
    assert proc.returncode == 1 and "exists" in proc.stderr.splitlines()[-1]
    proc = run(["vqlatent-export", tmp_path / "missing.pt", tmp_path / "out", *common], check=False)
    assert proc.returncode == 1 and "does not exist" in proc.stderr.splitlines()[-1]
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------ soak: 20,000 lines with bad ones mixed in

SOAK_LINES = 20_000
SOAK_BAD = {1_000: b"", 5_000: b"caf\xe9 au lait", 9_000: b"A man\x00on a bike.", 13_000: b"dog " * 1500,
            17_000: b"   "}  # line number (from 1) -> a bad line


def soak_input(exported):
    good = raw_test(exported).encode().splitlines()
    lines = [SOAK_BAD.get(n) if n in SOAK_BAD else good[(n - 1) % len(good)] for n in range(1, SOAK_LINES + 1)]
    return b"\n".join(lines) + b"\n", good


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def run_watching_memory(cmd, data: bytes, count_done):
    """Run cmd on data; sample its resident memory each time ``count_done(stdout or stderr line)``
    reports progress. Returns (returncode, stdout lines, stderr lines, [(done, MB)])."""
    import os
    import threading

    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([str(c) for c in cmd], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=REPO)
    out, err, samples = [], [], []

    def feed():
        proc.stdin.write(data)
        proc.stdin.close()

    def watch(stream, sink):
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            sink.append(line)
            done = count_done(line, out)
            if done is not None:
                try:
                    samples.append((done, rss_mb(proc.pid)))
                except (FileNotFoundError, StopIteration):
                    pass

    threads = [threading.Thread(target=feed), threading.Thread(target=watch, args=(proc.stdout, out)),
               threading.Thread(target=watch, args=(proc.stderr, err))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=900)
    return proc.wait(timeout=60), out, err, samples


def flat(samples, total, label):
    first = next(mb for done, mb in samples if done >= 1000)
    last = max(mb for done, mb in samples if done >= total - 1000)
    print(f"soak {label}: {first:.0f} MB resident after 1,000 translations, {last:.0f} MB at the last 1,000")
    assert last <= first * 1.05 + 10, f"{label}: resident memory grew from {first:.0f} to {last:.0f} MB"


@pytest.mark.slow
def test_soak_vqlatent_translate_skips_each_bad_line_once_in_flat_memory(exported):
    data, good = soak_input(exported)
    expected = dict(zip(good, translate(exported["work"] / "translator", b"\n".join(good).decode() + "\n",
                                        "--threads", "1").stdout.splitlines()))
    progress = lambda line, out: int(line.split()[1].replace(",", "")) if "sentences (" in line else None  # noqa: E731
    code, out, err, samples = run_watching_memory(
        [BIN / "vqlatent-translate", exported["work"] / "translator", "--threads", "1", "--skip-bad-lines"], data, progress)
    assert code == 0, err[-20:]
    skipped = [line for line in err if "skipped" in line]
    assert sorted(int(line.split("input line ")[1].split()[0]) for line in skipped) == sorted(SOAK_BAD), skipped
    good_lines = [line for n, line in enumerate(data.split(b"\n")[:SOAK_LINES], 1) if n not in SOAK_BAD]
    assert out == [expected[line] for line in good_lines]  # one line per good input line, in order
    flat(samples, SOAK_LINES - len(SOAK_BAD), "vqlatent-translate")


@pytest.mark.slow
def test_soak_fairseq_interactive_skips_each_bad_line_once_in_flat_memory(exported):
    data, good = soak_input(exported)
    hypotheses = lambda line, out: sum(x.startswith("H-") for x in out) if line.startswith("H-") else None  # noqa: E731
    d = exported["data"]
    code, out, err, samples = run_watching_memory(
        ["fairseq-interactive", d / "bin", "--user-dir", REPO / "fairseq_vqlatent", "--task", "translation_vqlatent",
         "--path", exported["ckpt"], "--cpu", "--buffer-size", "1000", "--batch-size", "64", "--skip-bad-lines",
         "--source-lang", "en", "--target-lang", "de",  # fairseq's Moses tokeniser takes its languages from these
         "--bpe", "subword_nmt", "--bpe-codes", d / "bpe.codes", "--tokenizer", "moses"], data, hypotheses)
    assert code == 0, err[-20:]
    skipped = [line for line in err if "skipped (--skip-bad-lines)" in line]
    assert [int(line.split("line ")[1].split()[0]) for line in skipped] == sorted(SOAK_BAD), skipped
    hyps = [line.split("\t") for line in out if line.startswith("H-")]
    ids = [int(h[0][2:]) for h in hyps]
    assert ids == [n - 1 for n in range(1, SOAK_LINES + 1) if n not in SOAK_BAD]  # in order, bad lines left out
    by_source = {}
    for i, h in zip(ids, hyps):  # each of the 200 sentences, repeated 100 times, translates the same every time
        by_source.setdefault(i % len(good), set()).add(h[2])
    assert all(len(texts) == 1 for texts in by_source.values())
    flat(samples, SOAK_LINES - len(SOAK_BAD), "fairseq-interactive")


def test_the_readmes_hub_example_with_subword_nmt_and_moses(exported):
    """The README's Python example as written: raw text in, detokenised text out, BPE with the Moses tokeniser."""
    from fairseq_vqlatent.models.vqlatent_transformer import VQLatentTransformerModel

    d = exported["data"]
    de = VQLatentTransformerModel.from_pretrained(
        str(exported["ckpt"].parent), checkpoint_file=exported["ckpt"].name, data_name_or_path=str(d / "bin"),
        bpe="subword_nmt", bpe_codes=str(d / "bpe.codes"), tokenizer="moses", source_lang="en", target_lang="de")
    lines = raw_test(exported).splitlines()[:40]
    hub = de.translate(lines)
    exported_text = translate(exported["work"] / "translator", "\n".join(lines) + "\n").stdout.splitlines()
    assert len(hub) == 40 and not any("@@" in h for h in hub)
    # The hub's Moses tokeniser does not escape (& -> &amp;) as data-prep does; elsewhere the text is the same.
    plain = [i for i, line in enumerate(lines) if not set("&'\"<>[]|") & set(line)]
    assert len(plain) > 20 and [hub[i] for i in plain] == [exported_text[i] for i in plain]
