"""Parallel text: reading, normalising and filtering.

Normalisation (every split): Unicode NFC, runs of whitespace collapsed to one space, stripped.
Filtering (training split only — valid and test sets are never thinned, so scores stay
comparable): empty lines, lines longer than ``max_words`` and pairs whose word-count ratio is
over ``max_length_ratio`` are dropped and counted.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqpipe.errors import InputError

_WS = re.compile(r"\s+")


def normalize(line: str) -> str:
    """NFC + whitespace collapsed + stripped."""
    return _WS.sub(" ", unicodedata.normalize("NFC", line)).strip()


def _open_binary(path: Path) -> io.BufferedIOBase:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def read_lines(path: Path | str, label: str | None = None) -> list[str]:
    """Read a UTF-8 text file (optionally .gz); invalid UTF-8 names the file and line."""
    path = Path(path)
    label = label or str(path)
    if not path.is_file():
        raise InputError(f"{label}: file not found")
    try:
        with _open_binary(path) as f:
            return list(decode_lines(f, label))
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InputError(f"{label}: cannot read ({exc})") from None


def decode_lines(f: Iterable[bytes], label: str) -> Iterator[str]:
    """UTF-8 lines without their line ends; invalid UTF-8 names ``label`` and the line."""
    for i, raw in enumerate(f, 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{label}:{i}: invalid UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                f"{exc.start + 1})"
            ) from None
        yield text.rstrip("\r\n")


def iter_tsv_pairs(data: bytes, label: str) -> Iterator[tuple[str, str]]:
    """Lines ``A<TAB>B[<TAB>...]`` of a UTF-8 buffer (Tatoeba's Anki files)."""
    for i, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as exc:
            raise InputError(f"{label}:{i}: invalid UTF-8 (column {exc.start + 1})") from None
        cols = text.split("\t")
        if len(cols) < 2:
            raise InputError(f"{label}:{i}: expected 2 tab-separated columns, got {len(cols)}")
        yield cols[0], cols[1]


@dataclass
class FilterStats:
    read: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(
        default_factory=lambda: {"empty": 0, "too_long": 0, "length_ratio": 0}
    )

    def as_dict(self) -> dict[str, object]:
        return {"read": self.read, "kept": self.kept, "dropped": dict(self.dropped)}


def clean_pairs(
    pairs: Iterable[tuple[str, str]],
    *,
    filter_: bool,
    max_words: int,
    max_ratio: float,
    limit: int | None = None,
) -> tuple[list[str], list[str], FilterStats]:
    """Normalise (and, for training data, filter) sentence pairs."""
    stats = FilterStats()
    src_out: list[str] = []
    tgt_out: list[str] = []
    for s, t in pairs:
        if limit is not None and stats.kept >= limit:
            break
        stats.read += 1
        s, t = normalize(s), normalize(t)
        if filter_:
            if not s or not t:
                stats.dropped["empty"] += 1
                continue
            ns, nt = len(s.split()), len(t.split())
            if ns > max_words or nt > max_words:
                stats.dropped["too_long"] += 1
                continue
            if max(ns, nt) / max(1, min(ns, nt)) > max_ratio:
                stats.dropped["length_ratio"] += 1
                continue
        src_out.append(s)
        tgt_out.append(t)
        stats.kept += 1
    return src_out, tgt_out, stats


def read_parallel(src: Path, tgt: Path, what: str = "") -> list[tuple[str, str]]:
    """Read two line-aligned files; mismatched line counts are an error naming both.
    ``what`` (e.g. the recipe key) is added to error messages."""
    suffix = f" ({what})" if what else ""
    try:
        a = read_lines(src)
        b = read_lines(tgt)
    except InputError as exc:
        raise InputError(f"{exc}{suffix}") from None
    if len(a) != len(b):
        raise InputError(
            f"{src} has {len(a)} lines but {tgt} has {len(b)}: parallel files must have the "
            f"same number of lines{suffix}"
        )
    return list(zip(a, b, strict=True))


def split_of(english: str, valid_fraction: float, test_fraction: float, seed: int) -> str:
    """Deterministic split by a hash of the English side: all pairs of one English sentence
    land in the same split, so no test sentence is seen in training."""
    h = hashlib.sha256(f"{seed}\t{english}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + valid_fraction:
        return "valid"
    return "train"


def write_lines(path: Path, lines: Iterable[str]) -> int:
    n = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line)
            f.write("\n")
            n += 1
    return n


def write_nbest(
    path: Path,
    ids: list[Any],
    nbest: list[list[tuple[list[int], float]]],
    decode: Callable[[list[list[int]]], list[str]],
) -> None:
    """``ID<TAB>RANK<TAB>SCORE<TAB>TEXT`` lines of n-best lists (``decode``: ids -> texts)."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for key, hyps in zip(ids, nbest, strict=True):
            texts = decode([h for h, _ in hyps])
            for rank, ((_, score), text) in enumerate(zip(hyps, texts, strict=True), 1):
                f.write(f"{key}\t{rank}\t{score:.4f}\t{text}\n")
