"""data-prep/: both download paths give the same layout, and bad corpora get clear errors."""

import gzip
import shutil
import tarfile
from pathlib import Path

import pytest

from conftest import REPO, run

WMT_DIRS = (REPO.parent / "shared" / "corpora" / "wmt-news-extra", REPO.parent / "shared" / "corpora" / "wmt14")
PREPARE_M30K = ["bash", REPO / "data-prep" / "prepare-multi30k.sh"]
PREPARE_WMT14 = ["bash", REPO / "data-prep" / "prepare-wmt14en2de.sh"]


def head(path: Path, n: int) -> list:
    with open(path, encoding="utf-8") as f:
        return [next(f) for _ in range(n)]


def write(path: Path, lines) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line if line.endswith("\n") else line + "\n" for line in lines), encoding="utf-8")
    return path


def layout(out: Path) -> set:
    """Relative paths of everything a prepare script made, except the downloads."""
    return {str(p.relative_to(out)) for p in out.rglob("*") if "download" not in p.relative_to(out).parts}


def fail(cmd, env=None):
    proc = run(cmd, check=False, env=env)
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


# ---------------------------------------------------------------- Multi30k

def small_multi30k(corpus_dir: Path, dest: Path, n: int = 300) -> Path:
    for name in ("train", "val", "test_2016_flickr"):
        for lang in ("en", "de"):
            write(dest / f"{name}.{lang}", head(corpus_dir / f"{name}.{lang}", n))
    return dest


def test_multi30k_download_and_from_give_the_same_layout(corpus_dir, tmp_path):
    local = small_multi30k(corpus_dir, tmp_path / "local")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for f in local.iterdir():  # the official release ships gzipped text
        with open(f, "rb") as src, gzip.open(mirror / f"{f.name}.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)

    run([*PREPARE_M30K, "--from", local, tmp_path / "a", "--bpe-merges", "300"])
    proc = run([*PREPARE_M30K, tmp_path / "b", "--bpe-merges", "300"],
               env={"MULTI30K_MIRROR": f"file://{mirror}"})
    assert "downloading file://" in proc.stdout

    assert layout(tmp_path / "a") == layout(tmp_path / "b")
    for rel in ("orig/train.de", "orig/test.en", "bin/dict.de.txt", "bin/train.en-de.de.bin"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert (tmp_path / "a" / "bin" / "subword-scheme").read_text().strip() == "subword_nmt"
    assert "@@" in (tmp_path / "a" / "sub" / "train.clean.de").read_text()


def test_multi30k_rerun_skips_every_finished_step(corpus_dir, tmp_path):
    local = small_multi30k(corpus_dir, tmp_path / "local", n=100)
    run([*PREPARE_M30K, "--from", local, tmp_path / "out", "--spm", "--vocab-size", "300"])
    proc = run([*PREPARE_M30K, "--from", local, tmp_path / "out", "--spm", "--vocab-size", "300"])
    assert proc.stdout.count("(done already, skipped)") == 6, proc.stdout
    assert (tmp_path / "out" / "spm.model").exists()
    assert (tmp_path / "out" / "bin" / "subword-scheme").read_text().strip() == "sentencepiece"


# ---------------------------------------------------------------- WMT'14

@pytest.fixture(scope="module")
def wmt14_from_local(tmp_path_factory):
    """prepare-wmt14en2de.sh --from the shared WMT news sets (3,000 training pairs)."""
    for d in WMT_DIRS:
        if not d.exists():
            pytest.fail(f"corpus directory {d} not found")
    out = tmp_path_factory.mktemp("wmt14-from")
    proc = run([*PREPARE_WMT14, out, "--from", WMT_DIRS[0], "--from", WMT_DIRS[1],
                "--max-lines", "3000", "--bpe-merges", "500"])
    return out, proc.stdout


def test_wmt14_from_uses_newstest2013_and_2014_for_valid_and_test(wmt14_from_local):
    out, log = wmt14_from_local
    assert (out / "orig" / "valid.de").read_bytes() == (WMT_DIRS[1] / "newstest2013.de").read_bytes()
    assert (out / "orig" / "test.en").read_bytes() == (WMT_DIRS[1] / "newstest2014.en").read_bytes()
    assert "train: " + str(WMT_DIRS[0] / "newstest2012") in log
    assert "newstest2014 (" not in log  # never trained on
    from fairseq.data import data_utils, Dictionary
    d = Dictionary.load(str(out / "bin" / "dict.de.txt"))
    sizes = {s: len(data_utils.load_indexed_dataset(str(out / "bin" / f"{s}.en-de.de"), d)) for s in ("valid", "test")}
    assert sizes == {"valid": 3000, "test": 3003}


def tgz(path: Path, members: dict):
    """A .tgz holding {name inside the archive: lines}."""
    staging = path.with_suffix(".d")
    for name, lines in members.items():
        write(staging / name, lines)
    with tarfile.open(path, "w:gz") as t:
        for name in members:
            t.add(staging / name, arcname=name)


def sgm(lines, lang):
    segs = [f'<seg id="{i}">{line.rstrip()}</seg>\n' for i, line in enumerate(lines, 1)]
    return [f'<srcset setid="newstest2014" srclang="any">\n<doc sysid="ref" docid="1" lang="{lang}">\n',
            *segs, "</doc>\n</srcset>\n"]


def test_wmt14_download_path_gives_the_same_layout_as_from(wmt14_from_local, tmp_path):
    """The official archives' structure, rebuilt from the shared corpora and served over file://."""
    news, wmt14 = WMT_DIRS
    take = lambda name, lang, n=300: head(news / f"{name}.{lang}", n)  # noqa: E731
    mirror = tmp_path / "mirror"
    (mirror / "wmt13").mkdir(parents=True)
    (mirror / "wmt14").mkdir()
    tgz(mirror / "wmt13" / "training-parallel-europarl-v7.tgz",
        {f"training/europarl-v7.de-en.{l}": take("newstest2009", l) for l in ("en", "de")})
    tgz(mirror / "wmt13" / "training-parallel-commoncrawl.tgz",
        {f"commoncrawl.de-en.{l}": take("newstest2010", l) for l in ("en", "de")})
    tgz(mirror / "wmt14" / "training-parallel-nc-v9.tgz",
        {f"training/news-commentary-v9.de-en.{l}": take("newstest2011", l) for l in ("en", "de")})
    tgz(mirror / "wmt14" / "dev.tgz", {f"dev/newstest2013.{l}": head(wmt14 / f"newstest2013.{l}", 200) for l in ("en", "de")})
    test_en, test_de = head(wmt14 / "newstest2014.en", 200), head(wmt14 / "newstest2014.de", 200)
    tgz(mirror / "wmt14" / "test-full.tgz", {"test-full/newstest2014-deen-src.en.sgm": sgm(test_en, "en"),
                                             "test-full/newstest2014-deen-ref.de.sgm": sgm(test_de, "de")})

    out = tmp_path / "online"
    proc = run([*PREPARE_WMT14, out, "--bpe-merges", "300"], env={"WMT14_MIRROR": f"file://{mirror}"})
    assert proc.stdout.count("downloading file://") == 5
    assert layout(out) == layout(wmt14_from_local[0])
    assert (out / "orig" / "test.de").read_text(encoding="utf-8").splitlines() == [x.strip() for x in test_de]
    assert len((out / "orig" / "train.en").read_text().splitlines()) == 900


# ---------------------------------------------------------------- bad input

@pytest.fixture
def good_corpus(corpus_dir, tmp_path):
    return small_multi30k(corpus_dir, tmp_path / "corpus", n=50)


def test_missing_file_is_named(good_corpus, tmp_path):
    (good_corpus / "val.de").unlink()
    err = fail([*PREPARE_M30K, "--from", good_corpus, tmp_path / "out"])
    assert f"error: missing corpus file {good_corpus}/val.de" in err
    assert not (tmp_path / "out" / "orig").exists()


def test_sides_of_different_length_are_refused(good_corpus, tmp_path):
    write(good_corpus / "train.de", head(good_corpus / "train.de", 49))
    err = fail([*PREPARE_M30K, "--from", good_corpus, tmp_path / "out"])
    assert "train.en has 50 lines but" in err and "train.de has 49: the two sides must be line-aligned" in err
    assert not (tmp_path / "out" / "orig").exists()


def test_windows_line_endings_are_named(good_corpus, tmp_path):
    lines = head(good_corpus / "train.de", 50)
    (good_corpus / "train.de").write_bytes("".join(x.rstrip("\n") + "\r\n" for x in lines).encode("utf-8"))
    err = fail([*PREPARE_M30K, "--from", good_corpus, tmp_path / "out"])
    assert f"error: {good_corpus}/train.de line 1 has a Windows line ending (CRLF): convert it first" in err
    assert not (tmp_path / "out" / "orig").exists()


def test_a_byte_order_mark_is_named(good_corpus, tmp_path):
    data = (good_corpus / "val.en").read_bytes()
    (good_corpus / "val.en").write_bytes(b"\xef\xbb\xbf" + data)
    err = fail([*PREPARE_M30K, "--from", good_corpus, tmp_path / "out"])
    assert f"error: {good_corpus}/val.en line 1 starts with a UTF-8 byte-order mark: remove it first" in err
    assert not (tmp_path / "out" / "orig").exists()


def test_empty_corpus_is_refused(good_corpus, tmp_path):
    write(good_corpus / "train.en", [])
    write(good_corpus / "train.de", [])
    err = fail([*PREPARE_M30K, "--from", good_corpus, tmp_path / "out"])
    assert f"error: empty corpus file {good_corpus}/train.en" in err


def test_empty_line_in_a_test_set_is_named(good_corpus, tmp_path):
    lines = head(good_corpus / "test_2016_flickr.en", 50)
    lines[2] = "   \n"
    write(good_corpus / "test_2016_flickr.en", lines)
    err = fail([*PREPARE_M30K, "--from", good_corpus, tmp_path / "out"])
    assert f"{good_corpus}/test_2016_flickr.en line 3 is empty" in err
    assert not (tmp_path / "out" / "orig").exists()  # checked before anything is copied


def test_a_corpus_that_cleaning_empties_leaves_nothing_finished(good_corpus, tmp_path):
    write(good_corpus / "train.de", ["ja"] * 50)  # every pair's length ratio is far above 3
    err = fail([*PREPARE_M30K, "--from", good_corpus, tmp_path / "out", "--bpe-merges", "50"])
    assert "no training pair" in err and "survives cleaning" in err
    assert not list((tmp_path / "out" / "sub").glob("train.clean*"))
    assert not (tmp_path / "out" / "bin").exists()


def test_failed_download_points_to_from(tmp_path):
    err = fail([*PREPARE_M30K, tmp_path / "out"], env={"MULTI30K_MIRROR": f"file://{tmp_path}/nowhere"})
    assert "error: could not download file://" in err and "--from DIR" in err
    assert not list((tmp_path / "out" / "download").glob("*.gz"))


def test_wmt14_without_a_validation_set_is_refused(tmp_path):
    news = tmp_path / "news"
    for lang in ("en", "de"):
        write(news / f"newstest2012.{lang}", head(WMT_DIRS[0] / f"newstest2012.{lang}", 20))
        write(news / f"newstest2014.{lang}", head(WMT_DIRS[1] / f"newstest2014.{lang}", 20))
    err = fail([*PREPARE_WMT14, tmp_path / "out", "--from", news])
    assert "error: no newstest2013.{en,de} (the validation set)" in err
    assert not (tmp_path / "out" / "orig").exists()


def test_missing_corpus_directory_is_named(tmp_path):
    err = fail([*PREPARE_WMT14, tmp_path / "out", "--from", tmp_path / "nope"])
    assert f"error: corpus directory {tmp_path}/nope does not exist" in err


@pytest.mark.parametrize("damage, message", [
    (b"A\0B", "line 3 holds a control character (U+0000 NUL at column 2): replace them first"),
    (b"A\x1bB", "line 3 holds a control character (U+001B"),
    (b"caf\xe9", "line 3 is not UTF-8 text (byte b'\\xe9' at byte 4): convert it first"),
])
def test_damaged_text_is_named_by_file_and_line_and_a_fixed_corpus_is_used_on_rerun(good_corpus, tmp_path, damage, message):
    path = good_corpus / "train.en"
    lines = path.read_bytes().split(b"\n")
    original, lines[2] = lines[2], damage
    path.write_bytes(b"\n".join(lines))
    out = tmp_path / "out"
    err = fail([*PREPARE_M30K, "--from", good_corpus, out, "--bpe-merges", "50"])
    assert f"error: {path} {message}" in err, err
    assert not (out / "orig").exists() and not list(out.rglob("*.tmp"))

    lines[2] = original
    path.write_bytes(b"\n".join(lines))
    run([*PREPARE_M30K, "--from", good_corpus, out, "--bpe-merges", "50"])
    assert (out / "orig" / "train.en").read_bytes() == path.read_bytes()
