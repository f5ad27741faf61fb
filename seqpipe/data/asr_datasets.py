"""ASR corpora as lists of :class:`Utterance`, plus safe archive extraction.

Every loader takes an *extracted* dataset folder and returns an :class:`Utterances` list
(a plain ``list`` of :class:`Utterance` that also carries what was skipped). Problems — a
missing or unreadable audio file, an empty transcript, a malformed line — are named with
their file (and line). ``on_error="stop"`` raises :class:`DatasetError` at the first one;
``on_error="skip"`` drops the utterance, counts it (``utts.num_skipped``) and keeps the
messages (``utts.skipped``).

Loaders (each folder may be the extracted archive's top folder or the folder that holds it):

==========================  =====================================================
:func:`load_yesno`          ``waves_yesno/*.wav``; transcript from the file name
:func:`load_fsdd`           ``recordings/{digit}_{speaker}_{index}.wav``
:func:`build_connected_digits`  multi-digit utterances made from FSDD (deterministic)
:func:`load_an4`            ``an4_subset/wav/*.wav`` + ``utterances.tsv``
:func:`load_librispeech`    ``<spk>/<chapter>/<spk>-<chapter>.trans.txt`` + ``*.flac``
:func:`load_kaldi_dir`      ``wav.scp`` + ``text`` (+ optional ``utt2spk``)
:func:`load_tsv`            ``path<TAB>transcript`` lines
==========================  =====================================================
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from seqpipe.data.audio import AudioError, audio_info, read_audio, write_audio
from seqpipe.data.registry import safe_extract_tar
from seqpipe.errors import InputError

OnError = Literal["skip", "stop"]

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


MANIFEST_COLUMNS = ("utt_id", "path", "duration", "text", "speaker")


@dataclass(frozen=True)
class Utterance:
    """One utterance of a corpus.

    :param utt_id: unique id (Kaldi convention: starts with the speaker where known)
    :param path: audio file (absolute)
    :param duration: seconds, from the file header
    :param text: transcript (as in the corpus, not normalised)
    :param speaker: speaker id ("" if unknown)
    """

    utt_id: str
    path: str
    duration: float
    text: str
    speaker: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class Utterances(list):
    """A ``list`` of :class:`Utterance` that remembers what the loader skipped.

    :ivar skipped: one message per dropped utterance (file and reason)
    """

    def __init__(self, items: Iterable[Utterance] = (), skipped: Sequence[str] = ()) -> None:
        super().__init__(items)
        self.skipped: list[str] = list(skipped)

    @property
    def num_skipped(self) -> int:
        """How many utterances were dropped (``on_error="skip"``)."""
        return len(self.skipped)


class DatasetError(InputError):
    """A corpus problem (missing file, empty transcript, bad line); one line naming the file."""


# --------------------------------------------------------------------------------------------
# archives


def extract_once(archive: str | Path, dest: str | Path) -> Path:
    """Extract ``archive`` into ``dest`` unless a previous extraction completed.

    Extracts into a temporary sibling folder, writes a ``.extracted`` marker (archive size
    and mtime) and renames it into place, so an interrupted run never leaves a folder that
    looks complete.

    :return: ``dest``
    """
    archive = Path(archive)
    dest = Path(dest)
    marker = dest / ".extracted"
    stat = archive.stat()
    stamp = json.dumps({"archive": archive.name, "size": stat.st_size, "mtime": int(stat.st_mtime)})
    if marker.is_file() and marker.read_text() == stamp:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        safe_extract_tar(archive, tmp)
        (tmp / ".extracted").write_text(stamp)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


# --------------------------------------------------------------------------------------------
# helpers


class _Collector:
    """Collects utterances and problems according to ``on_error``."""

    def __init__(self, on_error: OnError) -> None:
        if on_error not in ("skip", "stop"):
            raise ValueError(f"on_error must be 'skip' or 'stop', not {on_error!r}")
        self.on_error = on_error
        self.items: list[Utterance] = []
        self.skipped: list[str] = []

    def problem(self, message: str) -> None:
        if self.on_error == "stop":
            raise DatasetError(message)
        self.skipped.append(message)

    def add(self, utt_id: str, path: Path, text: str, speaker: str = "", where: str = "") -> None:
        """Check audio and transcript, then keep the utterance (or report it)."""
        where = where or str(path)
        text = " ".join(text.split())
        if not text:
            self.problem(f"{where}: empty transcript for utterance {utt_id!r}")
            return
        if not path.is_file():
            self.problem(f"{path}: audio file not found (utterance {utt_id!r})")
            return
        try:
            frames, sr = audio_info(path)
        except AudioError as e:
            self.problem(f"{e} (utterance {utt_id!r})")
            return
        if frames == 0:
            self.problem(f"{path}: audio has no samples (utterance {utt_id!r})")
            return
        self.items.append(Utterance(utt_id, str(path.resolve()), frames / sr, text, speaker))

    def result(self) -> Utterances:
        ids = [u.utt_id for u in self.items]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise DatasetError(f"duplicate utterance ids: {', '.join(dup)}")
        return Utterances(self.items, self.skipped)


def _find_dir(root: str | Path, name: str, marker: str = "") -> Path:
    """``root`` itself if it is ``name`` (or holds ``marker``), else ``root/name``."""
    root = Path(root)
    if root.name == name or (marker and (root / marker).exists()):
        return root
    if (root / name).is_dir():
        return root / name
    raise DatasetError(f"{root}: no {name}/ folder here (extract the archive first)")


def _check_split(split: str, allowed: Sequence[str]) -> None:
    if split not in allowed:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(allowed)}")


# --------------------------------------------------------------------------------------------
# yesno


def yesno_transcript(stem: str) -> str:
    """``"0_1_1"`` -> ``"NO YES YES"``."""
    words = {"0": "NO", "1": "YES"}
    try:
        return " ".join(words[c] for c in stem.split("_"))
    except KeyError:
        raise DatasetError(f"{stem}: yesno file name is not 0/1 digits joined by '_'") from None


def load_yesno(
    root: str | Path,
    split: str = "train",
    splits_tsv: str | Path | None = None,
    on_error: OnError = "stop",
) -> Utterances:
    """The yesno corpus (one speaker, 8 words per file).

    :param root: folder holding ``waves_yesno/`` (or that folder itself)
    :param split: ``train``, ``test`` or ``all``
    :param splits_tsv: ``utt_id<TAB>split<TAB>transcript`` file (with header). ``None``: use
        ``splits.tsv`` in or next to ``root`` if present, else the Kaldi rule (sort the file
        names; first 30 train, last 30 test).
    """
    _check_split(split, ("train", "test", "all"))
    wav_dir = _find_dir(root, "waves_yesno")
    stems = sorted(p.stem for p in wav_dir.glob("*.wav"))
    if splits_tsv is None:
        for cand in (Path(root) / "splits.tsv", wav_dir.parent / "splits.tsv"):
            if cand.is_file():
                splits_tsv = cand
                break
    if splits_tsv is not None:
        rows = _read_tsv_rows(Path(splits_tsv), ("utt_id", "split", "transcript"))
        assignment = {r["utt_id"]: r["split"] for r in rows}
        for r in rows:
            if yesno_transcript(r["utt_id"]) != " ".join(r["transcript"].split()):
                raise DatasetError(
                    f"{splits_tsv}: transcript of {r['utt_id']} disagrees with its name"
                )
        stems = sorted(assignment)  # the split file is authoritative (missing wavs are reported)
    else:
        half = len(stems) // 2
        assignment = {s: ("train" if i < half else "test") for i, s in enumerate(stems)}
    col = _Collector(on_error)
    for stem in stems:
        if split != "all" and assignment[stem] != split:
            continue
        col.add(stem, wav_dir / f"{stem}.wav", yesno_transcript(stem), speaker="yesno")
    return col.result()


def _read_tsv_rows(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {', '.join(missing)} in the header")
        return list(reader)


# --------------------------------------------------------------------------------------------
# FSDD (isolated digits) and connected digits built from it


def _parse_fsdd_name(stem: str) -> tuple[int, str, int]:
    parts = stem.split("_")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
        raise DatasetError(f"{stem}: FSDD file name is not '<digit>_<speaker>_<index>'")
    return int(parts[0]), parts[1], int(parts[2])


def fsdd_recordings(roots: str | Path | Sequence[str | Path]) -> list[Path]:
    """The ``*.wav`` files of one extracted FSDD (a folder holding ``recordings/``, or that
    folder) or of several (the mirror's and extra speakers' downloads), each folder's sorted."""
    roots = [roots] if isinstance(roots, (str, Path)) else list(roots)
    return [p for root in roots for p in sorted(_find_dir(root, "recordings").glob("*.wav"))]


def load_fsdd(
    root: str | Path | Sequence[str | Path],
    split: str = "all",
    speakers: Sequence[str] | None = None,
    on_error: OnError = "stop",
) -> Utterances:
    """Free Spoken Digit Dataset, isolated digits; transcript = the digit's word ("seven").

    :param root: folder holding ``recordings/`` (or that folder itself), or several
    :param split: upstream rule: ``test`` = take index 0-4, ``train`` = 5-49; or ``all``
    :param speakers: keep only these speakers (``None``: all)
    """
    _check_split(split, ("train", "test", "all"))
    col = _Collector(on_error)
    for path in fsdd_recordings(root):
        try:
            digit, speaker, index = _parse_fsdd_name(path.stem)
        except DatasetError as e:
            col.problem(f"{path}: {e}")
            continue
        if speakers is not None and speaker not in speakers:
            continue
        if split == "test" and index >= 5 or split == "train" and index < 5:
            continue
        utt_id = f"{speaker}-{digit}-{index:02d}"
        col.add(utt_id, path, DIGIT_WORDS[digit], speaker=speaker)
    return col.result()


def build_connected_digits(
    fsdd_root: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    num_utts: dict[str, int],
    test_speakers: Sequence[str],
    valid_speakers: Sequence[str] = (),
    seed: int = 0,
    exclude_speakers: Sequence[str] = (),
    min_digits: int = 2,
    max_digits: int = 7,
    pause_ms: tuple[int, int] = (50, 300),
    noise_std: float = 3e-4,
    sample_rate: int = 8000,
    synthetic: dict[str, list[tuple[int, np.ndarray]]] | None = None,
    synthetic_utts: int = 0,
) -> dict[str, Utterances]:
    """Build a connected-digit corpus from FSDD recordings, deterministically.

    Each utterance concatenates 2-7 (``min_digits``-``max_digits``) recordings of ONE speaker,
    with a random pause (``pause_ms``, uniform) of very low Gaussian noise before, between and
    after the digits; its transcript is the digit words ("seven three one").

    Speakers: ``test`` uses ``test_speakers``, ``valid`` uses ``valid_speakers``, ``train``
    all other speakers but ``exclude_speakers`` (in no split) — no test (or valid) speaker is
    ever in training. If ``valid_speakers`` is empty, ``valid`` is drawn from the training
    speakers' takes 0-4 and ``train`` keeps takes 5-49 (recordings disjoint, speakers not).

    Same arguments => byte-identical wav files and identical lists (each split has its own
    random stream, seeded with ``(seed, split)``).

    :param fsdd_root: extracted FSDD (folder holding ``recordings/``), or several
    :param out_dir: wavs go to ``out_dir/<split>/<utt_id>.wav``; a ``<split>.tsv``
        (path, transcript, speaker) is written beside them
    :param num_utts: utterances per split, e.g. ``{"train": 2000, "valid": 200, "test": 200}``
    :param synthetic: more training speakers, ``{speaker: [(digit, wave (T,) at
        sample_rate), ...]}`` (:func:`seqpipe.data.synth.synthesize_digits`)
    :param synthetic_utts: utterances of those speakers added to ``train`` (after its own;
        wavs in ``out_dir/synthetic/``, their own random stream)
    :return: ``{split: Utterances}``
    """
    if not 1 <= min_digits <= max_digits:
        raise ValueError(f"need 1 <= min_digits <= max_digits, got {min_digits}, {max_digits}")
    unknown = set(num_utts) - {"train", "valid", "test"}
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; use train, valid, test")
    pools = _digit_pools(fsdd_root, num_utts, test_speakers, valid_speakers, exclude_speakers)
    pieces = _Pieces(sample_rate, pause_ms, noise_std, min_digits, max_digits)
    result: dict[str, Utterances] = {}
    extra = {"synthetic": (synthetic or {}, synthetic_utts)} if synthetic_utts > 0 else {}
    for split_index, split in enumerate(("train", "valid", "test", *extra)):
        if split in extra:
            pool, n = extra[split]
            by_speaker = {spk: list(recs) for spk, recs in sorted(pool.items())}
        else:
            n = int(num_utts.get(split, 0))
            by_speaker = {}
            for r in pools[split]:
                by_speaker.setdefault(r[2], []).append((r[1], r[0]))
        if n <= 0:
            continue
        if not by_speaker:
            raise ValueError(f"no recordings for split {split!r}")
        rng = np.random.default_rng([seed, split_index])
        split_dir = Path(out_dir) / split
        split_dir.mkdir(parents=True, exist_ok=True)
        speakers = sorted(by_speaker)
        utts = [pieces.utterance(rng, speakers, by_speaker, split_dir, i) for i in range(n)]
        write_tsv(utts, Path(out_dir) / f"{split}.tsv")
        result[split] = Utterances(utts)
    if "synthetic" in result:
        result["train"] = Utterances([*result["train"], *result.pop("synthetic")])
    return result


class _Pieces:
    """Concatenates one speaker's digit recordings, with pauses, into utterances."""

    def __init__(self, sr: int, pause_ms: tuple[int, int], noise_std: float, lo: int, hi: int):
        self.sr, self.pause_ms, self.noise_std, self.lo, self.hi = sr, pause_ms, noise_std, lo, hi
        self.cache: dict[Path, np.ndarray] = {}

    def wave(self, source: Path | np.ndarray) -> np.ndarray:
        """A recording's samples (T,): a file read once, or an array as it is."""
        if isinstance(source, np.ndarray):
            return source
        if source not in self.cache:
            self.cache[source] = read_audio(source, self.sr)[0]
        return self.cache[source]

    def utterance(
        self,
        rng: np.random.Generator,
        speakers: list[str],
        by_speaker: dict[str, list[tuple[int, Path | np.ndarray]]],
        split_dir: Path,
        i: int,
    ) -> Utterance:
        """Draw one of ``speakers`` (sorted) and 2-7 of its ``(digit, recording)``; write
        ``split_dir/<spk>-<split>-<i>.wav`` (the folder exists)."""
        spk = speakers[int(rng.integers(len(speakers)))]
        choices = by_speaker[spk]
        count = int(rng.integers(self.lo, self.hi + 1))
        picks = [choices[int(j)] for j in rng.integers(len(choices), size=count)]
        parts = []
        for _, source in picks:
            parts.append(_pause(rng, self.pause_ms, self.noise_std, self.sr))
            parts.append(self.wave(source))
        parts.append(_pause(rng, self.pause_ms, self.noise_std, self.sr))
        wave = np.concatenate(parts)
        path = split_dir / f"{spk}-{split_dir.name}-{i:05d}.wav"
        write_audio(path, wave, self.sr)
        text = " ".join(DIGIT_WORDS[digit] for digit, _ in picks)
        return Utterance(path.stem, str(path.resolve()), len(wave) / self.sr, text, spk)


def _digit_pools(
    fsdd_root: str | Path | Sequence[str | Path],
    num_utts: dict[str, int],
    test_speakers: Sequence[str],
    valid_speakers: Sequence[str],
    exclude_speakers: Sequence[str] = (),
) -> dict[str, list[tuple]]:
    """``{split: [(path, digit, speaker, take), ...]}`` of the FSDD recordings each split
    draws from (audio is read only when picked)."""
    overlap = set(test_speakers) & set(valid_speakers)
    if overlap:
        raise ValueError(f"speakers in both test and valid: {sorted(overlap)}")
    overlap = set(exclude_speakers) & {*test_speakers, *valid_speakers}
    if overlap:
        raise ValueError(f"excluded speakers also in test or valid: {sorted(overlap)}")
    all_recs = [(p, *_parse_fsdd_name(p.stem)) for p in fsdd_recordings(fsdd_root)]
    if not all_recs:
        raise DatasetError(f"{fsdd_root}: no FSDD recordings")
    all_speakers = sorted({r[2] for r in all_recs})
    for spk in [*test_speakers, *valid_speakers, *exclude_speakers]:
        if spk not in all_speakers:
            raise ValueError(f"unknown FSDD speaker {spk!r}; known: {', '.join(all_speakers)}")
    held = {*test_speakers, *valid_speakers, *exclude_speakers}
    train_speakers = [s for s in all_speakers if s not in held]
    if num_utts.get("train", 0) and not train_speakers:
        raise ValueError("no speakers left for training")
    pools: dict[str, list[tuple]] = {
        "test": [r for r in all_recs if r[2] in test_speakers],
        "valid": [r for r in all_recs if r[2] in valid_speakers],
        "train": [r for r in all_recs if r[2] in train_speakers],
    }
    if not valid_speakers:
        pools["valid"] = [r for r in pools["train"] if r[3] < 5]
        pools["train"] = [r for r in pools["train"] if r[3] >= 5]
    return pools


def _pause(
    rng: np.random.Generator, pause_ms: tuple[int, int], noise_std: float, sr: int
) -> np.ndarray:
    ms = int(rng.integers(pause_ms[0], pause_ms[1] + 1))
    n = ms * sr // 1000
    return (rng.standard_normal(n) * noise_std).astype(np.float32)


# --------------------------------------------------------------------------------------------
# AN4, LibriSpeech, Kaldi folders, TSV


def load_an4(root: str | Path, split: str = "train", on_error: OnError = "stop") -> Utterances:
    """The AN4 subset: ``an4_subset/wav/<utt_id>.wav`` and ``utterances.tsv``.

    Utterance ids are AN4's own (``an146-fclc-b``: utterance, speaker, session).

    ``utterances.tsv`` columns: utt_id, speaker, split, duration_s, transcript.

    :param root: folder holding ``an4_subset/`` (or that folder itself)
    :param split: ``train``, ``test`` or ``all``
    """
    _check_split(split, ("train", "test", "all"))
    base = _find_dir(root, "an4_subset", marker="utterances.tsv")
    tsv = base / "utterances.tsv"
    rows = _read_tsv_rows(tsv, ("utt_id", "speaker", "split", "transcript"))
    col = _Collector(on_error)
    for line, r in enumerate(rows, start=2):
        if split != "all" and r["split"] != split:
            continue
        col.add(
            r["utt_id"],
            base / "wav" / f"{r['utt_id']}.wav",
            r["transcript"] or "",
            r["speaker"],
            where=f"{tsv}:{line}",
        )
    return col.result()


def load_librispeech(root: str | Path, on_error: OnError = "stop") -> Utterances:
    """LibriSpeech layout: every ``*.trans.txt`` below ``root`` (``<utt_id> <TEXT>`` lines),
    audio ``<utt_id>.flac`` beside it; speaker = the first part of the utt id."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: folder not found")
    trans_files = sorted(root.rglob("*.trans.txt"))
    if not trans_files:
        raise DatasetError(f"{root}: no *.trans.txt files below this folder")
    col = _Collector(on_error)
    for trans in trans_files:
        for line_no, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            utt_id, _, text = line.strip().partition(" ")
            speaker = utt_id.split("-")[0]
            col.add(
                utt_id, trans.parent / f"{utt_id}.flac", text, speaker, where=f"{trans}:{line_no}"
            )
    return col.result()


def _read_kaldi_map(path: Path) -> dict[str, tuple[str, int]]:
    """``key rest-of-line`` -> {key: (rest, line_no)}."""
    out: dict[str, tuple[str, int]] = {}
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        key, _, rest = line.strip().partition(" ")
        if key in out:
            raise DatasetError(f"{path}:{line_no}: duplicate key {key!r}")
        out[key] = (rest.strip(), line_no)
    return out


def load_kaldi_dir(data_dir: str | Path, on_error: OnError = "stop") -> Utterances:
    """A Kaldi data folder: ``wav.scp`` (``utt path``), ``text`` (``utt words``) and optional
    ``utt2spk``. Relative paths in ``wav.scp`` are resolved against ``data_dir``; piped
    commands (``... |``) and ``segments`` are not supported."""
    data_dir = Path(data_dir)
    for name in ("wav.scp", "text"):
        if not (data_dir / name).is_file():
            raise DatasetError(f"{data_dir / name}: file not found")
    if (data_dir / "segments").exists():
        raise DatasetError(f"{data_dir / 'segments'}: segments files are not supported")
    wavs = _read_kaldi_map(data_dir / "wav.scp")
    texts = _read_kaldi_map(data_dir / "text")
    spk = _read_kaldi_map(data_dir / "utt2spk") if (data_dir / "utt2spk").is_file() else {}
    col = _Collector(on_error)
    for utt_id, (path_str, line_no) in wavs.items():
        where = f"{data_dir / 'wav.scp'}:{line_no}"
        if path_str.endswith("|"):
            col.problem(f"{where}: piped commands are not supported ({utt_id})")
            continue
        if utt_id not in texts:
            col.problem(f"{data_dir / 'text'}: no transcript for utterance {utt_id!r}")
            continue
        path = Path(path_str)
        if not path.is_absolute():
            path = data_dir / path
        text, text_line = texts[utt_id]
        col.add(
            utt_id,
            path,
            text,
            spk.get(utt_id, ("", 0))[0],
            where=f"{data_dir / 'text'}:{text_line}",
        )
    for utt_id, (_, line_no) in texts.items():
        if utt_id not in wavs:
            col.problem(f"{data_dir / 'text'}:{line_no}: utterance {utt_id!r} is not in wav.scp")
    return col.result()


def load_tsv(tsv: str | Path, on_error: OnError = "stop") -> Utterances:
    """``path<TAB>transcript[<TAB>speaker]`` lines; relative paths resolved against the
    TSV's folder; a first line ``path<TAB>transcript...`` is taken as a header. The utt id is
    the audio path relative to the TSV's folder, without extension, ``/`` replaced by ``-``."""
    tsv = Path(tsv)
    if not tsv.is_file():
        raise DatasetError(f"{tsv}: file not found")
    col = _Collector(on_error)
    lines = tsv.read_text(encoding="utf-8").splitlines()
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if line_no == 1 and fields[0].strip().lower() == "path":
            continue
        if len(fields) not in (2, 3):
            col.problem(
                f"{tsv}:{line_no}: expected path<TAB>transcript[<TAB>speaker], got {len(fields)} field(s)"
            )
            continue
        path = Path(fields[0].strip())
        resolved = path if path.is_absolute() else tsv.parent / path
        rel = path.with_suffix("") if not path.is_absolute() else Path(path.stem)
        utt_id = "-".join(p for p in rel.parts if p not in ("", ".", ".."))
        speaker = fields[2].strip() if len(fields) == 3 else ""
        col.add(utt_id, resolved, fields[1], speaker, where=f"{tsv}:{line_no}")
    return col.result()


def write_tsv(utts: Sequence[Utterance], tsv: str | Path) -> None:
    """Write ``path<TAB>transcript<TAB>speaker`` lines (paths relative to the TSV's folder
    where possible), readable by :func:`load_tsv`."""
    tsv = Path(tsv)
    base = tsv.parent.resolve()
    lines = ["path\ttranscript\tspeaker"]
    for u in utts:
        p = Path(u.path)
        try:
            p = p.relative_to(base)
        except ValueError:
            pass
        lines.append(f"{p.as_posix()}\t{u.text}\t{u.speaker}")
    tsv.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------
# manifests: the prepare stage's {split}.tsv


def write_manifest(path: Path, utts: list[Utterance], base: Path) -> None:
    """``utt_id path duration text speaker`` (tab-separated, with a header)."""
    base = base.resolve()
    lines = ["\t".join(MANIFEST_COLUMNS)]
    for u in utts:
        p = Path(u.path).resolve()
        rel = p.relative_to(base).as_posix() if p.is_relative_to(base) else str(p)
        for field in (u.utt_id, u.text, u.speaker):
            if "\t" in field or "\n" in field:
                raise InputError(
                    f"{u.path}: tab or newline in the id/transcript/speaker of {u.utt_id!r}"
                )
        lines.append(f"{u.utt_id}\t{rel}\t{u.duration:.4f}\t{u.text}\t{u.speaker}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_manifest(path: Path) -> list[Utterance]:
    """Read a ``{split}.tsv`` of a prepare artifact; relative paths resolve against its folder."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if not lines or tuple(lines[0].split("\t")) != MANIFEST_COLUMNS:
        raise InputError(f"{path}: not a prepare manifest (header {'/'.join(MANIFEST_COLUMNS)})")
    base = Path(path).parent
    out = []
    for line in lines[1:]:
        utt_id, p, dur, text, speaker = line.split("\t")
        audio = Path(p) if Path(p).is_absolute() else base / p
        out.append(Utterance(utt_id, str(audio), float(dur), text, speaker))
    return out


def manifest_splits(prep_dir: Path) -> list[str]:
    """Split names of a prepare artifact (train first, then the others sorted)."""
    names = sorted(p.name[: -len(".tsv")] for p in Path(prep_dir).glob("*.tsv"))
    return sorted(names, key=lambda s: (s != "train", s))
