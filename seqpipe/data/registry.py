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

from seqpipe.core.cache import sha256_file
from seqpipe.errors import InputError

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
        _VERIFIED[memo] = sha256_file(path)
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
                raise InputError(
                    f"{path}: sha256 mismatch (expected {want[:12]}…, got {got[:12]}…)"
                )
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
                with (
                    open(tmp, "wb") as f,
                    tqdm(
                        total=total, unit="B", unit_scale=True, desc=dest.name, leave=False
                    ) as bar,
                ):
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


class UnsafeArchiveError(InputError):
    """An archive member would be written outside the destination folder."""

    def __init__(self, archive: str | Path, member: str, reason: str) -> None:
        super().__init__(f"{archive}: refusing member {member!r}: {reason}")


def _check_tar_member(member: tarfile.TarInfo, dest: Path, archive: Path) -> None:
    """Raise :class:`UnsafeArchiveError` if ``member`` would land outside ``dest`` (resolved)."""
    name = member.name
    if name.startswith(("/", "\\")) or os.path.isabs(name) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(archive, name, "absolute path")
    target = (dest / name).resolve()
    if target != dest and dest not in target.parents:
        raise UnsafeArchiveError(archive, name, "path leaves the target folder")
    if member.issym() or member.islnk():
        link = member.linkname
        if os.path.isabs(link):
            raise UnsafeArchiveError(archive, name, f"link to absolute path {link!r}")
        # symlinks are relative to the member's folder, hard links to the archive root
        base = target.parent if member.issym() else dest
        link_target = (base / link).resolve()
        if link_target != dest and dest not in link_target.parents:
            raise UnsafeArchiveError(archive, name, f"link {link!r} points outside the folder")
    elif not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(archive, name, "device, fifo or other special file")


def safe_extract_tar(archive: str | Path, dest: str | Path) -> Path:
    """Extract a (compressed) tar archive into ``dest``, refusing unsafe members.

    Every member is checked first (absolute paths, ``..`` escapes, links pointing outside
    ``dest``, device files): one bad member and nothing is extracted. Extraction then also
    uses tarfile's ``filter="data"`` as a second line of defence. The one implementation in
    seqpipe (``seqpipe.data.asr_datasets`` re-exports it).

    :return: ``dest`` (created if needed)
    :raises UnsafeArchiveError: a member would escape ``dest``
    :raises InputError: the archive is missing or unreadable
    """
    archive = Path(archive)
    dest = Path(dest)
    if not archive.is_file():
        raise InputError(f"{archive}: archive not found")
    dest_resolved = dest.resolve()
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_tar_member(member, dest_resolved, archive)
            dest.mkdir(parents=True, exist_ok=True)  # (nothing is written before the checks)
            # the explicit checks above, and tarfile's own "data" filter (Python >= 3.10.12)
            tar.extractall(dest_resolved, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as e:
        raise InputError(f"{archive}: cannot extract ({type(e).__name__}: {e})") from e
    return dest


def safe_read_zip_member(archive: Path, member: str) -> bytes:
    """Read one member of a zip file (nothing is written to disk)."""
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        if member not in names:
            raise InputError(f"{archive}: no member {member!r} (has {', '.join(names[:5])})")
        return zf.read(member)


# ------------------------------------------------------------------------- keys


# recipe ``data.dataset`` names whose files come from a differently named registry entry
REGISTRY_NAMES = {
    "fsdd_digits": "fsdd",
    "fsdd_connected": "fsdd",
    "librispeech": "librispeech_sample",
}


def registry_name(dataset: str) -> str:
    """The registry entry that holds the files of recipe dataset ``dataset``."""
    return REGISTRY_NAMES.get(dataset, dataset)


def data_fingerprint(recipe: Any) -> dict[str, Any]:
    """What identifies the prepare stage's input data (part of its cache key).

    Registry datasets: the sha256 of their files. Local ASR data (``kaldi``, ``tsv``,
    ``librispeech`` with ``data.path``): the path, and size + mtime of every file below it
    and of every audio file its ``*.tsv`` / ``wav.scp`` files name (one digest).
    """
    d = recipe.data
    if d.dataset == "local":
        out = {}
        for split, files in (d.local or {}).items():
            for side in ("src", "tgt"):
                p = Path(getattr(files, side))
                out[f"{split}.{side}"] = _sha256(p) if p.is_file() else f"missing:{p}"
        return out
    if d.dataset in ("kaldi", "tsv") or (d.dataset == "librispeech" and d.path):
        return _local_fingerprint(Path(d.path or ""))
    entry = dataset_entry(registry_name(d.dataset))
    return {rel: info["sha256"] for rel, info in entry["files"].items()}


def _stat_entry(f: Path) -> list[Any]:
    try:
        st = f.stat()
    except OSError:
        return [str(f), "missing"]
    return [str(f), st.st_size, st.st_mtime_ns]


def _referenced_audio(listing: Path) -> list[Path]:
    """Audio files named by a ``*.tsv`` (first column) or ``wav.scp`` (second column)."""
    out = []
    try:
        lines = listing.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return out
    for i, line in enumerate(lines):
        if listing.name == "wav.scp":
            parts = line.split(maxsplit=1)
            raw = parts[1].strip() if len(parts) == 2 else ""
        else:
            raw = line.split("\t", 1)[0].strip()
            if i == 0 and raw.lower() == "path":
                continue
        if not raw or raw.endswith("|"):
            continue
        p = Path(raw)
        out.append(p if p.is_absolute() else listing.parent / p)
    return out


def _local_fingerprint(p: Path) -> dict[str, Any]:
    if not p.exists():
        return {"path": f"missing:{p}"}
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    listings = [f for f in files if f.suffix == ".tsv" or f.name == "wav.scp"]
    h = hashlib.sha256()
    for f in files:
        h.update(repr(_stat_entry(f)).encode())
    if p.is_file():
        h.update(_sha256(p).encode())
    n_audio = 0
    for listing in listings:
        for audio in _referenced_audio(listing):
            h.update(repr(_stat_entry(audio)).encode())
            n_audio += 1
    return {"path": str(p), "files": len(files), "audio": n_audio, "digest": h.hexdigest()[:32]}
