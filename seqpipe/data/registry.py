"""The dataset registry (``data/registry.yaml``) and how its files are found.

A registry file is named by its path in the mirror layout (``multi30k/raw/train.en.gz``).
``fetch(path)`` looks in, in order:

1. ``$SEQPIPE_MIRROR/<path>`` — an offline copy laid out like ../shared/data,
2. ``$SEQPIPE_DOWNLOADS/<path>`` (default ``data/downloads/`` beside the registry, git-ignored),
3. the file's public URL: downloaded with a progress bar and retries into (2).

Every file is checked against its sha256 before use; a mismatch is a clear error.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError

REGISTRY_FILE = Path(__file__).resolve().parents[2] / "data" / "registry.yaml"


@functools.lru_cache(maxsize=1)
def load_registry(path: Path = REGISTRY_FILE) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def dataset_entry(name: str) -> dict[str, Any]:
    reg = load_registry()
    if name not in reg:
        import difflib

        close = difflib.get_close_matches(name, list(reg), n=1)
        hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(reg)}"
        raise InputError(f"data.dataset: unknown dataset {name!r}{hint}")
    return reg[name]


def mirror_root() -> Path | None:
    value = os.environ.get("SEQPIPE_MIRROR")
    return Path(value).expanduser().resolve() if value else None


def downloads_root() -> Path:
    value = os.environ.get("SEQPIPE_DOWNLOADS")
    return Path(value).expanduser() if value else REGISTRY_FILE.parent / "downloads"


_VERIFIED: dict[tuple[str, float, int], str] = {}


def _sha256(path: Path) -> str:
    st = path.stat()
    memo = (str(path), st.st_mtime, st.st_size)
    if memo not in _VERIFIED:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        _VERIFIED[memo] = h.hexdigest()
    return _VERIFIED[memo]


def fetch(dataset: str, rel: str) -> Path:
    """Local path of registry file ``rel`` of ``dataset``, verified against its sha256."""
    entry = dataset_entry(dataset)
    info = entry["files"].get(rel)
    if info is None:
        raise InputError(f"dataset {dataset}: no file {rel} in the registry")
    want = info["sha256"]
    candidates = []
    mirror = mirror_root()
    if mirror is not None:
        candidates.append(mirror / rel)
    candidates.append(downloads_root() / rel)
    for path in candidates:
        if path.is_file():
            got = _sha256(path)
            if got != want:
                raise InputError(f"{path}: sha256 mismatch (expected {want[:12]}…, got {got[:12]}…)")
            return path
    url = info.get("url")
    if not url:
        where = f"{mirror / rel}" if mirror else "$SEQPIPE_MIRROR (not set)"
        raise InputError(
            f"dataset {dataset}: {rel} is not in {where} and has no public download URL; "
            "set SEQPIPE_MIRROR to a folder laid out like ../shared/data"
        )
    dest = downloads_root() / rel
    download(url, dest, want)
    return dest


def download(url: str, dest: Path, sha256: str, retries: int = 3) -> None:
    """Download ``url`` to ``dest`` with a progress bar, retries and checksum verification."""
    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    last: Exception | None = None
    for attempt in range(1, retries + 1):
        try:
            with urllib.request.urlopen(url, timeout=60) as resp:
                total = int(resp.headers.get("Content-Length") or 0) or None
                h = hashlib.sha256()
                with open(tmp, "wb") as f, tqdm(
                    total=total, unit="B", unit_scale=True, desc=dest.name, leave=False
                ) as bar:
                    while block := resp.read(1 << 16):
                        f.write(block)
                        h.update(block)
                        bar.update(len(block))
            if h.hexdigest() != sha256:
                tmp.unlink(missing_ok=True)
                raise InputError(f"{url}: sha256 mismatch after download (expected {sha256[:12]}…)")
            os.replace(tmp, dest)
            return
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            last = exc
            time.sleep(min(2**attempt, 10))
    tmp.unlink(missing_ok=True)
    raise InputError(
        f"{url}: download failed after {retries} tries ({last}); for offline use set "
        "SEQPIPE_MIRROR to a folder laid out like ../shared/data"
    )


# ------------------------------------------------------------------------- archives


def _check_member(dest: Path, name: str, archive: Path) -> Path:
    target = (dest / name).resolve()
    if not target.is_relative_to(dest.resolve()) or os.path.isabs(name):
        raise InputError(f"{archive}: refusing to extract {name!r}: it leaves the target folder")
    return target


def safe_extract_tar(archive: Path, dest: Path) -> None:
    """Extract a tar archive, refusing members (and links) that leave ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        for m in tar.getmembers():
            _check_member(dest, m.name, archive)
            if m.issym() or m.islnk():
                _check_member(dest, os.path.join(os.path.dirname(m.name), m.linkname), archive)
        tar.extractall(dest, filter="data")


def safe_read_zip_member(archive: Path, member: str) -> bytes:
    """Read one member of a zip file (nothing is written to disk)."""
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        if member not in names:
            raise InputError(f"{archive}: no member {member!r} (has {', '.join(names[:5])})")
        return zf.read(member)


def safe_extract_zip(archive: Path, dest: Path) -> None:
    """Extract a zip file, refusing members whose path leaves ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            _check_member(dest, name, archive)
        zf.extractall(dest)  # noqa: S202 — every member checked above


# ------------------------------------------------------------------------- keys


def data_fingerprint(recipe: Any) -> dict[str, Any]:
    """What identifies the prepare stage's input data (part of its cache key)."""
    d = recipe.data
    if d.dataset == "local":
        out = {}
        for split, files in (d.local or {}).items():
            for side in ("src", "tgt"):
                p = Path(getattr(files, side))
                out[f"{split}.{side}"] = _sha256(p) if p.is_file() else f"missing:{p}"
        return out
    if d.dataset in ("kaldi", "tsv", "librispeech_dir"):
        p = Path(d.path or "")
        if p.is_file():
            return {"path": _sha256(p)}
        if p.is_dir():
            return {
                f.relative_to(p).as_posix(): [f.stat().st_size, int(f.stat().st_mtime)]
                for f in sorted(p.rglob("*"))
                if f.is_file()
            }
        return {"path": f"missing:{p}"}
    if d.dataset == "fsdd_connected":
        entry = dataset_entry("fsdd")
    else:
        entry = dataset_entry(d.dataset)
    return {rel: info["sha256"] for rel, info in entry["files"].items()}
