"""vqlatent-translate: raw text in, detokenised translations out, one line each.

    vqlatent-translate OUT_DIR [--batch-size 64] [--threads T] [--output FILE] < raw.txt > out.txt

Every input line is read and checked before the first translation is written: an
empty or over-long line, or bytes that are not UTF-8, stop it with one line that
names the input line and no output at all; with --skip-bad-lines each such line is
reported once and left out of the output instead. --output writes through a temporary
file and a rename, so a killed run leaves no partial file.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from typing import List, Tuple

from .translator import Translator, TranslatorError


def line_problem(raw: bytes):
    """(text, None) for a line that can be translated, else (None, what is wrong with it)."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, f"is not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
    if not line.strip():
        return None, "is empty: there is nothing to translate; remove empty lines"
    if "\0" in line:
        return None, "holds a NUL byte: it is not a line of text"
    return line, None


def read_lines(data: bytes, skip_bad_lines: bool = False) -> Tuple[List[int], List[str]]:
    """The line numbers (from 1) and texts of the lines to translate. A bad line stops
    everything, or with ``skip_bad_lines`` is reported once on stderr and left out."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline that ends the last line
    numbers, text = [], []
    for number, raw in enumerate(lines, 1):
        line, problem = line_problem(raw)
        if problem is not None:
            if not skip_bad_lines:
                raise TranslatorError(f"input line {number} {problem}")
            warn_skipped(number, problem)
            continue
        numbers.append(number)
        text.append(line)
    return numbers, text


def warn_skipped(number: int, problem: str) -> None:
    print(f"vqlatent-translate: warning: input line {number} {problem}; skipped", file=sys.stderr, flush=True)


class Progress:
    """A line on stderr every few seconds, for inputs long enough to wait for."""

    def __init__(self, total: int, every: float = 5.0):
        self.on, self.every, self.started, self.last = total >= 1000, every, time.perf_counter(), 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter() - self.started
        if self.on and (now - self.last >= self.every or done == total):
            self.last = now
            print(f"vqlatent-translate: {done:,} / {total:,} sentences ({done / max(now, 1e-9):.0f} / s)",
                  file=sys.stderr, flush=True)


def write_atomically(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".vqlatent-translate-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="vqlatent-translate", description=__doc__.split("\n\n")[0])
    p.add_argument("directory", help="a translator exported by vqlatent-export")
    p.add_argument("--batch-size", type=int, default=64, help="sentences per batch (default 64)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (default: every core)")
    p.add_argument("--output", "-o", help="write here (atomically) instead of stdout")
    p.add_argument("--timings", help="write seconds spent decoding and in tokenisation to this JSON file")
    p.add_argument("--skip-bad-lines", action="store_true",
                   help="report each bad input line (empty, not UTF-8, too long) once on stderr and leave it out of "
                        "the output, instead of stopping at the first")
    a = p.parse_args(argv)
    if a.batch_size < 1 or a.threads < 0:
        p.error("--batch-size must be at least 1 and --threads at least 0")
    try:
        translator = Translator(a.directory, threads=a.threads)
        numbers, lines = read_lines(sys.stdin.buffer.read(), a.skip_bad_lines)
        started = time.perf_counter()
        out = translator.translate(lines, a.batch_size, Progress(len(lines)), numbers,
                                   on_bad_line=warn_skipped if a.skip_bad_lines else None)
        seconds = time.perf_counter() - started
    except TranslatorError as e:
        print(f"vqlatent-translate: error: {e}", file=sys.stderr)
        return 1
    text = "".join(line + "\n" for line in out if line is not None)
    if a.output:
        write_atomically(a.output, text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    if a.timings:
        t = translator.timings
        with open(a.timings, "w") as f:
            json.dump({"sentences": len(lines), "batch_size": a.batch_size, "end_to_end_seconds": seconds,
                       "decode_seconds": t.decode, "text_seconds": t.text,
                       "mean_codes": sum(t.codes) / max(len(t.codes), 1)}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
