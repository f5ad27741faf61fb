"""Downloading a registry file as users expect: resumed, retried, verified, shown.

``download(url, dest, checksum)`` writes to ``dest.part`` and renames it to ``dest`` only once
its checksum (sha256, or the md5 a publisher lists) matches. An interrupted transfer resumes
where it stopped with an HTTP ``Range`` request (a server that ignores it sends the whole file
again); connection errors, timeouts, short reads and 5xx/429 answers are retried with
exponential backoff. A complete file with another checksum is set aside as ``dest.bad`` (never
used) and is an :class:`~seqpipe.errors.InputError` naming the URL and both checksums.

``SEQPIPE_URL_REWRITE="FROM=TO ..."`` replaces a URL prefix before downloading (e.g. a local
caching mirror of the upstream hosts; the tests stand in for them with a loopback server).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

from seqpipe.errors import InputError

CHUNK = 1 << 16


class Checksum(NamedTuple):
    kind: str  # sha256 | md5
    hex: str

    def __str__(self) -> str:
        return f"{self.kind} {self.hex}"


def checksum_of(info: dict) -> Checksum:
    """The checksum a registry entry gives: ``sha256`` if it has one, else ``md5``."""
    for kind in ("sha256", "md5"):
        if info.get(kind):
            return Checksum(kind, str(info[kind]).lower())
    raise InputError(f"registry entry {info}: neither sha256 nor md5")


_MEMO: dict[tuple[str, str, float, int], str] = {}


def file_digest(path: Path, kind: str) -> str:
    """The ``kind`` digest of ``path`` (remembered per path, mtime and size)."""
    st = path.stat()
    memo = (kind, str(path), st.st_mtime, st.st_size)
    if memo not in _MEMO:
        with open(path, "rb") as f:
            _MEMO[memo] = hashlib.file_digest(f, kind).hexdigest()
    return _MEMO[memo]


def rewrite_url(url: str) -> str:
    """``url`` after the first matching ``SEQPIPE_URL_REWRITE`` prefix rule."""
    for rule in os.environ.get("SEQPIPE_URL_REWRITE", "").split():
        old, sep, new = rule.partition("=")
        if sep and url.startswith(old):
            return new + url[len(old) :]
    return url


class _Retry(Exception):
    """A transfer that may succeed when tried again (resuming from what is on disk)."""


def _transfer(url: str, part: Path, desc: str) -> None:
    """Append the rest of ``url`` to ``part`` (a Range request when it has bytes already)."""
    from tqdm import tqdm

    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=60)
    except urllib.error.HTTPError as e:
        if e.code == 416:  # the part already holds the whole file (or is wrong): start over
            part.unlink(missing_ok=True)
            raise _Retry("416 range not satisfiable") from None
        if e.code >= 500 or e.code == 429:
            raise _Retry(f"HTTP {e.code}") from None
        raise InputError(f"{url}: HTTP {e.code} {e.reason}") from None
    with resp:
        if have and resp.status != 206:  # the server ignored the range: the whole file again
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length else None
        with (
            open(part, "ab" if have else "wb") as f,
            tqdm(
                total=total, initial=have, unit="B", unit_scale=True, desc=desc, leave=False
            ) as bar,
        ):
            while block := resp.read(CHUNK):
                f.write(block)
                bar.update(len(block))
    if total is not None and part.stat().st_size < total:
        raise _Retry(f"connection closed at {part.stat().st_size} of {total} bytes")


def download(
    url: str, dest: Path, checksum: Checksum, retries: int = 5, backoff: float = 1.0
) -> None:
    """Download ``url`` to ``dest`` (see the module docstring); ``retries`` tries in all, the
    n-th failure followed by ``backoff * 2**(n-1)`` seconds (at most 60)."""
    url = rewrite_url(url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last = ""
    for attempt in range(1, retries + 1):
        try:
            _transfer(url, part, dest.name)
            break
        except _Retry as e:
            last = str(e)
        except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError) as e:
            last = f"{type(e).__name__}: {e}"
        if attempt < retries:
            time.sleep(min(backoff * 2 ** (attempt - 1), 60))
    else:
        raise InputError(
            f"{url}: download failed after {retries} tries ({last}); the part downloaded so "
            f"far stays in {part} and the next run resumes it; for offline use set "
            "SEQPIPE_MIRROR to a folder laid out like ../shared/data"
        )
    got = file_digest(part, checksum.kind)
    if got != checksum.hex:
        bad = dest.with_name(dest.name + ".bad")
        os.replace(part, bad)
        raise InputError(
            f"{url}: {checksum.kind} mismatch: expected {checksum.hex}, got {got}; the file "
            f"is kept aside as {bad} and not used"
        )
    os.replace(part, dest)
