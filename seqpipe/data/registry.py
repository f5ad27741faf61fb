"""The dataset registry (``data/registry.yaml``) and how its files are found.

A registry file is named by its path in the mirror layout (``multi30k/raw/train.en.gz``).
``fetch(path)`` looks in, in order:

1. ``$SEQPIPE_MIRROR/<path>`` — an offline copy laid out like ../shared/data,
2. ``$SEQPIPE_DOWNLOADS/<path>`` (default ``data/downloads/`` beside the registry, git-ignored),
3. its public source (``seqpipe.data.download``: resumed, retried, verified) into (2): the file
   at ``url``, or for a re-packed mirror tarball the ``upstream`` files it was made of, read
   in place of its contents.

Every file is checked against its checksum (sha256, or a publisher's md5) before use.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import yaml

from seqpipe.data.download import Checksum, checksum_of, download, file_digest
from seqpipe.errors import InputError

log = logging.getLogger("seqpipe")

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


def _sha256(path: Path) -> str:
    return file_digest(path, "sha256")


def fetch(dataset: str, rel: str) -> Path:
    """Local copy of registry file ``rel`` of ``dataset``, verified (see the module
    docstring): a file, or for an entry whose upstream is a list of files, the folder that
    holds them as its tarball would. The log says which source it used."""
    entry = dataset_entry(dataset)
    info = entry["files"].get(rel)
    if info is None:
        raise InputError(f"dataset {dataset}: no file {rel} in the registry")
    want = checksum_of(info)
    mirror = mirror_root()
    for path, what in (
        (mirror / rel if mirror else None, "the mirror"),
        (downloads_root() / rel, "a download"),
    ):
        if path is not None and path.is_file():
            got = file_digest(path, want.kind)
            if got != want.hex:
                raise InputError(
                    f"{path}: {want.kind} mismatch (expected {want.hex[:12]}…, got {got[:12]}…)"
                )
            log.info("prepare  %s: %s's copy (%s %s…)", rel, what, want.kind, want.hex[:12])
            return path
    if info.get("upstream"):
        return fetch_file_list(rel, info["upstream"])
    url = info.get("url")
    if not url:
        where = f"{mirror / rel}" if mirror else "$SEQPIPE_MIRROR (not set)"
        raise InputError(
            f"dataset {dataset}: {rel} is not in {where} and has no public download URL; "
            "set SEQPIPE_MIRROR to a folder laid out like ../shared/data"
        )
    dest = downloads_root() / rel
    download(url, dest, want)
    log.info("prepare  %s: downloaded from %s (%s verified)", rel, url, want.kind)
    return dest


def extra_speakers(dataset: str) -> dict[str, dict[str, Any]]:
    """``{speaker: entry}``: the speakers registry entry ``dataset`` can fetch beyond its files
    (upstream recordings that the mirror's copy leaves out). An entry is one ``{url, list}`` or
    ``sources: [{url, list}, ...]``, and may name a ``layout`` other than FSDD's."""
    return dataset_entry(dataset).get("extra_speakers") or {}


def extra_speaker_entry(dataset: str, speaker: str) -> dict[str, Any]:
    """Extra speaker ``speaker``'s registry entry; an unknown one is an :class:`InputError`."""
    known = extra_speakers(dataset)
    if speaker not in known:
        have = ", ".join(known) or "none"
        raise InputError(
            f"data.extra_speakers: {dataset} has no extra speaker {speaker!r} ({have})"
        )
    return known[speaker]


def extra_speaker_sources(entry: dict[str, Any]) -> list[dict[str, str]]:
    """The ``{url, list}`` file lists an extra speaker's entry is made of."""
    return entry.get("sources") or [entry]


def fetch_extra_speaker(dataset: str, speaker: str) -> Path:
    """The folder holding extra speaker ``speaker``'s upstream files (laid out as upstream,
    FSDD's ``recordings/...`` unless its entry names another ``layout``), downloaded once into
    ``downloads/<dataset>/<speaker>/upstream/`` and verified file by file."""
    sources = extra_speaker_sources(extra_speaker_entry(dataset, speaker))
    folders = {fetch_file_list(f"{dataset}/{speaker}/recordings", src) for src in sources}
    return folders.pop()  # the lists' files all land in the speaker's one upstream folder


def extra_speaker_digest(dataset: str, speaker: str) -> str:
    """sha256 of extra speaker ``speaker``'s file list (which names every file's sha256), or for
    another layout of its lists' sha256s with the layout and its conversion settings: what
    identifies its data in a cache key ("unknown" for a speaker the registry lacks, which
    prepare then refuses)."""
    entry = extra_speakers(dataset).get(speaker)
    if entry is None:
        return "unknown"
    digests = [_sha256(REGISTRY_FILE.parent / s["list"]) for s in extra_speaker_sources(entry)]
    if "layout" not in entry:  # FSDD's layout, one list: that list's digest
        return digests[0]
    how = json.dumps([entry["layout"], entry.get("convert"), digests], sort_keys=True)
    return hashlib.sha256(how.encode()).hexdigest()


def read_file_list(name: str) -> list[tuple[str, str]]:
    """(sha256, relative path) of each line of ``data/<name>`` (``sha256sum`` format)."""
    out = []
    for i, line in enumerate((REGISTRY_FILE.parent / name).read_text().splitlines(), 1):
        sha, sep, rel = line.partition("  ")
        if not sep or len(sha) != 64 or rel.startswith("/") or ".." in Path(rel).parts:
            raise InputError(f"data/{name}:{i}: expected '<sha256>  <relative path>'")
        out.append((sha, rel))
    return out


def fetch_file_list(rel: str, upstream: dict[str, str]) -> Path:
    """The files of ``upstream['list']`` under ``upstream['url']``, each downloaded (once)
    into ``downloads/<folder of rel>/upstream/`` and verified. :return: that folder"""
    from tqdm import tqdm

    folder = downloads_root() / Path(rel).parent / "upstream"
    files = read_file_list(upstream["list"])
    for sha, name in tqdm(
        files, desc=f"{rel} (upstream files)", unit="file", leave=False, disable=None
    ):
        dest = folder / name
        if dest.is_file() and file_digest(dest, "sha256") == sha:
            continue
        download(upstream["url"] + name, dest, Checksum("sha256", sha))
    log.info(
        "prepare  %s: %d upstream files from %s, verified (%s)",
        rel,
        len(files),
        upstream["url"],
        folder,
    )
    return folder


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
    return {rel: checksum_of(info).hex for rel, info in entry["files"].items()}


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
