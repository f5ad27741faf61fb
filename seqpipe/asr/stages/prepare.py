"""prepare (task: asr): find the corpus, check every utterance, split, write manifests.

Datasets (``data.dataset``):

==================  ===========================================================================
``yesno``           Kaldi's 30/30 split (sorted names: first 30 train); valid = a seeded ``data.valid_fraction``
                    of the 30 training files (held out of train), test = the other 30
``fsdd_digits``     FSDD isolated digits: test = ``data.test_speakers`` (or upstream takes 0-4),
                    valid = ``data.valid_speakers`` (or a held-out fraction of train)
``fsdd_connected``  2-7 digit utterances built from FSDD (``build_connected_digits``): speakers
                    held out by ``data.test_speakers`` / ``data.valid_speakers`` (and
                    ``data.exclude_speakers`` in no split), counts
                    ``data.utterances``, seeded by ``seed``; the wavs live in this artifact
``an4``             the AN4 subset (train 60 / test 10); valid held out of train
``librispeech``     ``data.path`` (LibriSpeech layout) or the registry sample
``librispeech_100h`` OpenSLR's archives named by ``data.splits`` (train-clean-100, dev-clean, ...)
``kaldi``           ``data.path``: a Kaldi data folder (``wav.scp`` + ``text``)
``tsv``             ``data.path``: ``path<TAB>transcript[<TAB>speaker]`` lines
==================  ===========================================================================

``librispeech``/``kaldi``/``tsv``: if ``data.path`` holds one sub-folder (or ``<name>.tsv``)
per split named in ``data.splits`` (our name: theirs), those are the splits; otherwise the
one pool is split by utterance with ``data.valid_fraction`` / ``data.test_fraction``
(seeded). Every split but train is guaranteed non-empty.

Output, per split: ``{split}.tsv`` (header ``utt_id path duration text speaker``; a path is
relative to this artifact when the audio lives in it, else absolute — read it with
:func:`seqpipe.data.asr_datasets.read_manifest`), and ``stats.json`` (counts, hours, skipped files). Archives are
extracted once into ``<workspace>/cache/extract/<sha256 prefix>/``, never into the repo.
``data.on_error``: ``stop`` ends the stage at the first bad utterance (exit code 2, naming
the file); ``skip`` drops it and counts it in ``stats.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from seqpipe.core.stage import StageContext
from seqpipe.data import asr_datasets as ds
from seqpipe.data import speech_commands, synth
from seqpipe.data.registry import (
    _sha256,
    dataset_entry,
    extra_speaker_entry,
    extra_speaker_sources,
    fetch,
    fetch_extra_speaker,
    read_file_list,
    registry_name,
)
from seqpipe.errors import InputError

MAX_LISTED_SKIPS = 50


def run(ctx: StageContext) -> dict[str, Any]:
    d = ctx.recipe.data
    loader = {
        "yesno": _yesno,
        "fsdd_digits": _fsdd_digits,
        "fsdd_connected": _fsdd_connected,
        "an4": _an4,
        "librispeech": _librispeech,
        "librispeech_100h": _librispeech_100h,
        "kaldi": _kaldi,
        "tsv": _tsv,
    }[d.dataset]
    splits = loader(ctx)
    if not splits.get("train"):
        raise InputError(f"data: the train split of {d.dataset} is empty")
    for name, utts in splits.items():
        if not utts:
            raise InputError(f"data: split {name!r} of {d.dataset} is empty")
    stats: dict[str, Any] = {"dataset": d.dataset, "on_error": d.on_error, "splits": {}}
    total_skipped = 0
    for name, utts in splits.items():
        ds.write_manifest(ctx.out / f"{name}.tsv", utts, ctx.out)
        skipped = list(getattr(utts, "skipped", []))
        total_skipped += len(skipped)
        hours = sum(u.duration for u in utts) / 3600
        stats["splits"][name] = {
            "utterances": len(utts),
            "hours": round(hours, 4),
            "speakers": len({u.speaker for u in utts}),
            "skipped": len(skipped),
            "skipped_files": skipped[:MAX_LISTED_SKIPS],
        }
        ctx.log.info(
            "prepare  %-6s %6d utterances, %.2f h, %d speaker(s)%s",
            name,
            len(utts),
            hours,
            stats["splits"][name]["speakers"],
            f", {len(skipped)} skipped" if skipped else "",
        )
        for msg in skipped[:5]:
            ctx.log.warning("prepare  skipped: %s", msg)
    stats["skipped"] = total_skipped
    (ctx.out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return {
        "splits": {s: v["utterances"] for s, v in stats["splits"].items()},
        "skipped": total_skipped,
    }


# --------------------------------------------------------------------------------------------
# helpers


def _extract(ctx: StageContext, archive: Path) -> Path:
    """Extract a registry archive once per workspace, keyed by its checksum; a folder (the
    upstream files a mirror tarball was made of) is read in place."""
    if archive.is_dir():
        return archive
    return ds.extract_once(archive, ctx.workspace / "cache" / "extract" / _sha256(archive)[:16])


def _fetch(ctx: StageContext, dataset: str, suffix: str) -> Path:
    name = registry_name(dataset)
    for rel in dataset_entry(name)["files"]:
        if rel.endswith(suffix):
            return fetch(name, rel)
    raise InputError(f"dataset {name}: no *{suffix} file in the registry")


def _holdout(
    utts: ds.Utterances, fraction: float, seed: int, what: str
) -> tuple[ds.Utterances, ds.Utterances]:
    """Split off a seeded ``fraction`` (at least one utterance) of ``utts``: (rest, held out)."""
    if len(utts) < 2:
        raise InputError(f"data: only {len(utts)} utterance(s); cannot hold out a {what} split")
    n = min(len(utts) - 1, max(1, math.ceil(fraction * len(utts))))
    ids = sorted(u.utt_id for u in utts)
    rng = np.random.default_rng([seed, 1 if what == "valid" else 2])
    picked = {ids[i] for i in rng.permutation(len(ids))[:n]}
    rest = ds.Utterances([u for u in utts if u.utt_id not in picked], utts.skipped)
    held = ds.Utterances([u for u in utts if u.utt_id in picked])
    return rest, held


def _with_valid(
    ctx: StageContext, train: ds.Utterances, **others: ds.Utterances
) -> dict[str, ds.Utterances]:
    d = ctx.recipe.data
    fraction = d.valid_fraction if d.valid_fraction > 0 else 0.1
    train, valid = _holdout(train, fraction, ctx.recipe.seed, "valid")
    return {"train": train, "valid": valid, **others}


def _pool_splits(ctx: StageContext, pool: ds.Utterances) -> dict[str, ds.Utterances]:
    """One pool of utterances -> train / valid / test by seeded fractions."""
    d = ctx.recipe.data
    rest, test = _holdout(
        pool, d.test_fraction if d.test_fraction > 0 else 0.1, ctx.recipe.seed, "test"
    )
    return _with_valid(ctx, rest, test=test)


def _named_parts(ctx: StageContext, root: Path, suffix: str = "") -> dict[str, Path] | None:
    """``{our split: root/<theirs><suffix>}`` when every split in data.splits exists there."""
    parts = {ours: root / f"{theirs}{suffix}" for ours, theirs in ctx.recipe.data.splits.items()}
    if "train" in parts and all(p.exists() for p in parts.values()):
        return parts
    return None


def _local_path(ctx: StageContext) -> Path:
    d = ctx.recipe.data
    if not d.path:
        raise InputError(f"data.path: required for data.dataset: {d.dataset}")
    p = Path(d.path)
    if not p.exists():
        raise InputError(f"data.path: {p} not found")
    return p


# --------------------------------------------------------------------------------------------
# datasets


def _yesno(ctx: StageContext) -> dict[str, ds.Utterances]:
    d = ctx.recipe.data
    root = _extract(ctx, _fetch(ctx, "yesno", "waves_yesno.tar.gz"))
    train = ds.load_yesno(root, "train", on_error=d.on_error)  # the Kaldi rule
    test = ds.load_yesno(root, "test", on_error=d.on_error)
    return _with_valid(ctx, train, test=test)


def _fsdd_roots(ctx: StageContext) -> list[Path]:
    """The extracted FSDD, then each of ``data.extra_speakers``' downloaded recordings."""
    extra = [_extra_speaker_root(ctx, spk) for spk in ctx.recipe.data.extra_speakers]
    return [_extract(ctx, _fetch(ctx, "fsdd_digits", ".tar.gz")), *extra]


def _extra_speaker_root(ctx: StageContext, speaker: str) -> Path:
    """A folder holding extra speaker ``speaker``'s ``recordings/`` in FSDD's layout: its
    download, or for Speech Commands clips their conversion, written under the stage's output."""
    entry = extra_speaker_entry("fsdd", speaker)
    upstream = fetch_extra_speaker("fsdd", speaker)
    layout = entry.get("layout", "fsdd")
    if layout == "fsdd":
        return upstream
    if layout != "speech_commands":
        raise InputError(f"data/registry.yaml: fsdd extra speaker {speaker}: layout {layout!r}?")
    rels = [rel for src in extra_speaker_sources(entry) for _, rel in read_file_list(src["list"])]
    out = ctx.out / "extra_speakers" / speaker
    convert = speech_commands.Convert(**entry.get("convert", {}))
    kept = speech_commands.write_digit_recordings(upstream, rels, out, speaker, convert)
    ctx.log.info(f"prepare  {speaker}: {kept} of {len(rels)} Speech Commands digit clips")
    return out


def _fsdd_digits(ctx: StageContext) -> dict[str, ds.Utterances]:
    d = ctx.recipe.data
    everyone = ds.load_fsdd(_fsdd_roots(ctx), "all", on_error=d.on_error)
    known = sorted({u.speaker for u in everyone})
    for spk in d.test_speakers + d.valid_speakers + d.exclude_speakers:
        if spk not in known:
            raise InputError(
                f"data.*_speakers: unknown FSDD speaker {spk!r}; known: {', '.join(known)}"
            )
    if set(d.test_speakers) & set(d.valid_speakers):
        raise InputError("data.test_speakers and data.valid_speakers overlap")
    held = set(d.test_speakers) | set(d.valid_speakers)
    if set(d.exclude_speakers) & held:
        raise InputError("data.exclude_speakers: also in test_speakers or valid_speakers")
    everyone = ds.Utterances(
        [u for u in everyone if u.speaker not in d.exclude_speakers], everyone.skipped
    )
    if d.test_speakers:
        test = ds.Utterances([u for u in everyone if u.speaker in d.test_speakers])
        train = ds.Utterances([u for u in everyone if u.speaker not in held], everyone.skipped)
    else:  # upstream rule: takes 0-4 are test
        test = ds.Utterances(
            [u for u in everyone if int(u.utt_id.rsplit("-", 1)[1]) < 5 and u.speaker not in held]
        )
        train = ds.Utterances(
            [u for u in everyone if int(u.utt_id.rsplit("-", 1)[1]) >= 5 and u.speaker not in held],
            everyone.skipped,
        )
    if d.valid_speakers:
        valid = ds.Utterances([u for u in everyone if u.speaker in d.valid_speakers])
        return {"train": train, "valid": valid, "test": test}
    return _with_valid(ctx, train, test=test)


def _fsdd_connected(ctx: StageContext) -> dict[str, ds.Utterances]:
    d = ctx.recipe.data
    roots = _fsdd_roots(ctx)
    speakers = sorted({p.stem.split("_")[1] for p in ds.fsdd_recordings(roots)})
    if not d.test_speakers:
        raise InputError(
            f"data.test_speakers: required for fsdd_connected (held-out speakers); "
            f"FSDD speakers here: {', '.join(speakers)}"
        )
    for split in ("train", "valid", "test"):
        if d.utterances.get(split, 0) <= 0:
            raise InputError(f"data.utterances.{split}: must be > 0 for fsdd_connected")
    voices = synth.digit_voices(d.synthetic_voices)
    if voices:
        ctx.log.info(
            f"prepare  {len(voices)} eSpeak NG voices, {d.synthetic_takes} takes of each digit"
        )
    try:
        spoken = synth.synthesize_digits(
            voices, ds.DIGIT_WORDS, d.synthetic_takes, 8000, seed=ctx.recipe.seed
        )
        built = ds.build_connected_digits(
            roots,
            ctx.out / "audio",
            num_utts={s: n for s, n in d.utterances.items() if s != "synthetic"},
            test_speakers=d.test_speakers,
            valid_speakers=d.valid_speakers,
            exclude_speakers=d.exclude_speakers,
            seed=ctx.recipe.seed,
            sample_rate=8000,
            synthetic=spoken,
            synthetic_utts=d.utterances.get("synthetic", 0),
        )
    except ValueError as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"data (fsdd_connected): {e}") from None
    return {s: built[s] for s in ("train", "valid", "test")}


def _an4(ctx: StageContext) -> dict[str, ds.Utterances]:
    d = ctx.recipe.data
    root = _extract(ctx, _fetch(ctx, "an4", ".tar.gz"))
    train = ds.load_an4(root, "train", on_error=d.on_error)
    test = ds.load_an4(root, "test", on_error=d.on_error)
    return _with_valid(ctx, train, test=test)


def _librispeech(ctx: StageContext) -> dict[str, ds.Utterances]:
    d = ctx.recipe.data
    root = _local_path(ctx) if d.path else _extract(ctx, _fetch(ctx, "librispeech", ".tar.gz"))
    parts = _named_parts(ctx, root)
    if parts is not None:
        return {s: ds.load_librispeech(p, on_error=d.on_error) for s, p in parts.items()}
    return _pool_splits(ctx, ds.load_librispeech(root, on_error=d.on_error))


def _librispeech_100h(ctx: StageContext) -> dict[str, ds.Utterances]:
    """LibriSpeech from OpenSLR: each split of ``data.splits`` names a part (``train:
    train-clean-100``), whose archive is fetched (mirror, downloads, OpenSLR) and extracted."""
    d = ctx.recipe.data
    parts = {}
    for ours, theirs in d.splits.items():
        root = _extract(ctx, _fetch(ctx, "librispeech_100h", f"/{theirs}.tar.gz"))
        parts[ours] = ds.load_librispeech(_find_part(root, theirs), on_error=d.on_error)
    return parts


def _find_part(root: Path, part: str) -> Path:
    for cand in (root / "LibriSpeech" / part, root / part):
        if cand.is_dir():
            return cand
    raise InputError(f"{root}: no LibriSpeech/{part}/ in the archive")


def _kaldi(ctx: StageContext) -> dict[str, ds.Utterances]:
    d = ctx.recipe.data
    root = _local_path(ctx)
    parts = _named_parts(ctx, root)
    if parts is not None and not (root / "wav.scp").is_file():
        return {s: ds.load_kaldi_dir(p, on_error=d.on_error) for s, p in parts.items()}
    return _pool_splits(ctx, ds.load_kaldi_dir(root, on_error=d.on_error))


def _tsv(ctx: StageContext) -> dict[str, ds.Utterances]:
    d = ctx.recipe.data
    root = _local_path(ctx)
    if root.is_dir():
        parts = _named_parts(ctx, root, ".tsv")
        if parts is None:
            raise InputError(
                f"data.path: {root} is a folder but lacks "
                f"{', '.join(f'{t}.tsv' for t in d.splits.values())} (see data.splits)"
            )
        return {s: ds.load_tsv(p, on_error=d.on_error) for s, p in parts.items()}
    return _pool_splits(ctx, ds.load_tsv(root, on_error=d.on_error))
