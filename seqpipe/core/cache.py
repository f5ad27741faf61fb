"""The artifact store: ``<workspace>/cache/<stage>/<key>/``.

An artifact is a folder with the stage's files and a ``manifest.json`` that is written last.
A stage writes into ``<key>.partial/`` and, when done, writes the manifest and renames the
folder into place (``os.rename`` is atomic on one file system), so a folder named ``<key>``
always holds a finished artifact: killing seqpipe at any moment leaves at most a ``.partial``
folder, which the next run either resumes (training) or discards.

A lock per artifact (:meth:`ArtifactStore.building`: ``cache/<stage>/<key>.lock``, a POSIX
record lock) lets runs of different recipes share a workspace: when two need the same missing
artifact, one builds it and the other (``--wait``) waits and then uses it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from seqpipe.core import __version__
from seqpipe.errors import CorruptError, LockedError

MANIFEST = "manifest.json"
log = logging.getLogger("seqpipe")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` via a temporary file and a rename (never half-written)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class Artifact:
    """A finished artifact: its stage, key and folder."""

    stage: str
    key: str
    path: Path

    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / MANIFEST).read_text(encoding="utf-8"))

    def problem(self, full: bool = False) -> str | None:
        """The first file that does not match the manifest: missing or of another size, or
        (``full``) of another sha256. None when the artifact is intact."""
        files = self.manifest().get("files") or {}
        bad = _size_problem(self.path, files)
        if bad is None and full:
            bad = next(
                (
                    f"{r}: sha256 differs"
                    for r, m in files.items()
                    if _sha(self.path / r) != m.get("sha256")
                ),
                None,
            )
        return bad

    def file(self, name: str) -> Path:
        return self.path / name


class ArtifactStore:
    def __init__(self, workspace: Path):
        self.workspace = Path(workspace)
        self.root = self.workspace / "cache"

    def final_dir(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def partial_dir(self, stage: str, key: str) -> Path:
        return self.root / stage / f"{key}.partial"

    def get(self, stage: str, key: str) -> Artifact | None:
        """The finished artifact for (stage, key), or None."""
        path = self.final_dir(stage, key)
        manifest = path / MANIFEST
        if not manifest.is_file():
            return None
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        if data.get("key") != key:
            return None
        return Artifact(stage, key, path)

    def usable(self, stage: str, key: str, full: bool = False) -> Artifact | None:
        """The finished artifact if its files match its manifest (sizes; ``full``: sha256
        too); a corrupt one is renamed ``<key>.corrupt`` (kept aside, never used) with a
        warning, and None is returned so that it is rebuilt."""
        art = self.get(stage, key)
        why = art.problem(full) if art is not None else None
        if art is None or why is None:
            return art
        self.set_aside(art, why)
        return None

    def set_aside(self, art: Artifact, why: str) -> None:
        """Rename a corrupt artifact to ``<key>.corrupt`` (never used again), with a warning."""
        aside = art.path.with_name(f"{art.key}.corrupt")
        if aside.exists():
            shutil.rmtree(aside)
        os.replace(art.path, aside)
        log.warning("%-8s corrupt  %s (%s): set aside as %s", art.stage, art.key, why, aside.name)

    def keys(self, stage: str) -> list[str]:
        d = self.root / stage
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if p.is_dir() and "." not in p.name)

    def begin(self, stage: str, key: str, keep_partial: bool) -> Path:
        """Folder to write into. ``keep_partial``: resume an interrupted run's files."""
        part = self.partial_dir(stage, key)
        if part.exists() and not keep_partial:
            shutil.rmtree(part)
        part.mkdir(parents=True, exist_ok=True)
        # a final folder without a valid manifest is debris from a crashed older version
        final = self.final_dir(stage, key)
        if final.exists() and self.get(stage, key) is None:
            shutil.rmtree(final)
        return part

    def commit(
        self, stage: str, key: str, manifest: dict[str, Any], scratch: tuple[str, ...] = ()
    ) -> Artifact:
        """Checksum the files (all but those matching the ``scratch`` globs: resume state),
        write the manifest, delete the scratch files and rename the folder into place. Until
        the manifest is written a rerun resumes from the scratch files; after it, a rerun only
        finishes the commit (:meth:`finish`)."""
        part = self.partial_dir(stage, key)
        drop = {p for pattern in scratch for p in part.glob(pattern)}
        files = {}
        for p in sorted(part.rglob("*")):
            if p.is_file() and p.name != MANIFEST and p not in drop:
                rel = p.relative_to(part).as_posix()
                files[rel] = {"bytes": p.stat().st_size, "sha256": _sha(p)}
        write_json_atomic(part / MANIFEST, dict(manifest, key=key, stage=stage, files=files))
        art = self.finish(stage, key)
        assert art is not None
        return art

    def finish(self, stage: str, key: str) -> Artifact | None:
        """Finish an interrupted commit: a ``.partial`` folder whose manifest was written
        loses the files its manifest does not list and is renamed into place. None when there
        is no such folder (or a file the manifest lists is missing or of another size)."""
        part = self.partial_dir(stage, key)
        try:
            listed = json.loads((part / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        files = listed.get("files") if listed.get("key") == key else None
        if not isinstance(files, dict) or _size_problem(part, files):
            return None
        for p in sorted(part.rglob("*"), reverse=True):  # files before their folders
            rel = p.relative_to(part).as_posix()
            if p.is_file() and p.name != MANIFEST and rel not in files:
                p.unlink()
            elif p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        final = self.final_dir(stage, key)
        if final.exists():
            shutil.rmtree(final)
        os.replace(part, final)
        _fsync_dir(final.parent)
        return Artifact(stage, key, final)

    def size(self, path: Path) -> int:
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())

    def lock_file(self, stage: str, key: str) -> Path:
        return self.root / stage / f"{key}.lock"

    @contextlib.contextmanager
    def building(self, stage: str, key: str, wait: bool = False) -> Iterator[None]:
        """Hold the lock of artifact (stage, key) while building it: a POSIX record lock
        (``fcntl.lockf``; NFSv4 and Lustre honour it) on ``cache/<stage>/<key>.lock``, which
        the kernel drops when the process dies. Another process building it: LockedError
        naming it, or with ``wait`` one log line and a blocking wait. Lock files are never
        deleted: another process may be waiting on the file (deleting it would let a third
        lock a new one)."""
        path = self.lock_file(stage, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+") as f:  # one descriptor per lock file and process (POSIX locks)
            try:
                fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                if not wait:
                    raise LockedError(
                        f"{path.parent / key}: being built by {holder}; pass --wait to use it "
                        "when it is done"
                    ) from None
                log.info("waiting  for %s, which builds %s %s", holder, stage, key)
                fcntl.lockf(f, fcntl.LOCK_EX)
            f.seek(0)
            f.truncate()
            f.write(
                f"seqpipe pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}"
            )
            f.flush()
            try:
                yield
            finally:
                f.seek(0)
                f.truncate()
                f.flush()
                fcntl.lockf(f, fcntl.LOCK_UN)

    def builder(self, stage: str, key: str) -> str | None:
        """Who is building (stage, key) now (``seqpipe pid N on HOST since T``), or None.
        Not for a process that holds locks itself (closing a descriptor drops its locks)."""
        path = self.lock_file(stage, key)
        try:
            f = open(path)  # noqa: SIM115
        except OSError:
            return None
        with f:
            try:
                fcntl.lockf(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return f.read().strip() or "another process"
            fcntl.lockf(f, fcntl.LOCK_UN)
        return None


def _size_problem(folder: Path, files: dict[str, Any]) -> str | None:
    """The first file of a manifest's ``files`` that is missing or of another size."""
    for rel, meta in files.items():
        try:
            size = (folder / rel).stat().st_size
        except OSError:
            return f"{rel}: missing"
        if size != meta.get("bytes"):
            return f"{rel}: {size} bytes, its manifest says {meta.get('bytes')}"
    return None


_SHA: dict[tuple[int, int, int, int], str] = {}  # (device, inode, size, mtime) -> sha256


def _sha(path: Path) -> str:
    """sha256 of a file, hashed once per process while its size and mtime stay the same
    (the name stays valid across the commit's rename: the memo is by inode)."""
    st = path.stat()
    memo = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if memo not in _SHA:
        _SHA[memo] = sha256_file(path)
    return _SHA[memo]


def _listed(path: Path) -> tuple[Path | None, dict[str, Any]]:
    """(artifact folder, manifest entry) of a file of a finished artifact; (None, {}) when no
    enclosing folder's manifest lists it (a stage's own .partial output, an exported file)."""
    path = Path(path).resolve()
    for folder in path.parents:
        try:
            files = json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("files")
        except (OSError, ValueError):
            continue
        entry = (files or {}).get(path.relative_to(folder).as_posix())
        return (folder, entry) if isinstance(entry, dict) else (None, {})
    return None, {}


def verified(path: str | Path) -> Path:
    """``path``, after checking it against the manifest of the artifact it belongs to (size
    and sha256; each file hashed once per process). Raises :class:`CorruptError` naming the
    file and how to rebuild it; a file no manifest lists is returned unchecked."""
    folder, entry = _listed(path)
    if folder is None:
        return Path(path)
    path = Path(path).resolve()
    why = (
        _size_problem(folder, {path.relative_to(folder).as_posix(): entry})
        if path.exists()
        else "missing"
    )
    if why is None and _sha(path) != entry.get("sha256"):
        why = "sha256 differs from its manifest"
    if why is not None:
        stage = folder.parent.name
        raise CorruptError(
            f"{path}: corrupt ({why.split(': ', 1)[-1]}); `seqpipe run RECIPE` rebuilds the "
            f"{stage} artifact {folder.name} (add --verify to check every artifact it uses)"
        )
    return path


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def library_versions() -> dict[str, str]:
    """Versions of what can change an artifact (recorded in every manifest)."""
    out = {"seqpipe": __version__, "python": platform.python_version()}
    for pkg in ("torch", "torchaudio", "sentencepiece", "sacrebleu", "jiwer", "numpy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[pkg] = metadata.version(pkg)
    return out


_GIT: dict[str, str | None] = {}


def git_commit() -> str | None:
    """The commit of the seqpipe checkout, with ``+dirty`` if it has local changes."""
    if "commit" in _GIT:
        return _GIT["commit"]
    here = Path(__file__).resolve().parent.parent
    commit = None
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if out.returncode == 0:
            commit = out.stdout.strip()
            dirty = subprocess.run(
                ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=5,
            )
            if dirty.stdout.strip():
                commit += "+dirty"
    except (OSError, subprocess.SubprocessError):
        commit = None
    _GIT["commit"] = commit
    return commit
