#!/usr/bin/env python3
"""Refuse a corpus file that would be silently changed on its way to the model.

    check_text.py FILE [FILE ...]

Each file must be UTF-8 text without a byte-order mark, Windows line endings or
C0 control characters (tab excepted). Control characters are refused, not normalised
to a space: the tokenisers treat them differently (sacremoses drops a NUL, so
"A\\0B" became "AB"), and a corpus that holds them usually holds other damage too.
The first problem is named with its file, line (counted from 1) and column.
"""

import sys
import unicodedata

FIXES = {
    "bom": "remove it first (sed -i '1s/^\\xEF\\xBB\\xBF//' {f})",
    "crlf": "convert it first (dos2unix {f}, or sed -i 's/\\r$//' {f})",
    "utf8": "convert it first, e.g. iconv -f latin1 -t utf-8 {f}",
    "control": "replace them first, e.g. with spaces: tr '\\000-\\010\\013\\014\\016-\\037\\177' ' ' < {f}",
}


def is_control(ch: str) -> bool:
    """C0 controls and DEL, tab excepted. C1 controls (U+0080-U+009F) pass: WMT's news text holds
    them as mis-decoded Windows-1252 quotes (U+0084 for „), and the tokenisers keep them."""
    return (ch < " " and ch != "\t") or ch == "\x7f"


def problem(path: str):
    """(line, message, fix) for the first problem in ``path``, or None."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                return number, "starts with a UTF-8 byte-order mark", "bom"
            if raw.endswith(b"\r\n"):
                return number, "has a Windows line ending (CRLF)", "crlf"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return number, f"is not UTF-8 text (byte {raw[e.start:e.start + 1]!r} at byte {e.start + 1})", "utf8"
            for column, ch in enumerate(line.rstrip("\n"), start=1):
                if is_control(ch):
                    name = unicodedata.name(ch, {"\0": "NUL"}.get(ch, "control character"))
                    return number, f"holds a control character (U+{ord(ch):04X} {name} at column {column})", "control"
    return None


def main(argv) -> int:
    for path in argv:
        found = problem(path)
        if found:
            number, message, fix = found
            print(f"error: {path} line {number} {message}: {FIXES[fix].format(f=path)}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
