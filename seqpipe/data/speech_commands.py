"""Speech Commands' digit words as FSDD-style recordings: many more voices for digit recipes.

Speech Commands (Warden 2018, CC BY 4.0) holds one-second clips of single words, each from one
of thousands of speakers, ten of its words the digits. The registry's ``speechcommands`` extra
speaker (``data.extra_speakers``) is the digit clips of two public copies of its subsets, 340
clips from 137 voices; this module turns them into what the FSDD loaders read: each clip
trimmed of its silence, resampled, peak-normalised and written as
``recordings/<digit>_<speaker>_<index>.wav``. All voices share one speaker name, so a
connected-digit utterance built from them mixes voices and the pool is drawn like one speaker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from seqpipe.data.asr_datasets import DIGIT_WORDS, DatasetError
from seqpipe.data.audio import read_audio, resample, write_audio
from seqpipe.data.synth import trim_silence

log = logging.getLogger("seqpipe")


@dataclass(frozen=True)
class Convert:
    """How clips become recordings (the registry entry's ``convert``, in the cache key)."""

    trim_db: float = 35.0  # frames this far below the clip's loudest frame are silence
    margin_ms: int = 50  # kept either side of the speech
    min_peak: float = 0.01  # a quieter clip holds no word (one of the 340) and is left out
    peak: float = 0.5  # each clip is scaled to this peak (FSDD's recordings peak near it)


def clip_digit(rel: str) -> int:
    """The digit a clip speaks, from its path: its folder (``.../seven/<id>.wav``, the dataset's
    own layout) or its name's first word (``.../_unknown_/seven_<id>.wav``)."""
    path = PurePosixPath(rel)
    for word in (path.parent.name, path.name.split("_", 1)[0]):
        if word in DIGIT_WORDS:
            return DIGIT_WORDS.index(word)
    raise DatasetError(f"{rel}: a Speech Commands clip that is not a digit word")


def write_digit_recordings(
    upstream: Path,
    rels: list[str],
    out: Path,
    speaker: str,
    convert: Convert = Convert(),
    sample_rate: int = 8000,
) -> int:
    """Write the clips ``upstream/<rel>`` as ``out/recordings/<digit>_<speaker>_<k>.wav``
    (``k`` counts the kept clips in the order of ``sorted(rels)``), each trimmed, resampled to
    ``sample_rate`` and scaled to ``convert.peak``; clips quieter than ``convert.min_peak``
    are left out.

    Same inputs => byte-identical files. :return: the number of clips written
    """
    folder = out / "recordings"
    folder.mkdir(parents=True, exist_ok=True)
    kept = 0
    for rel in sorted(rels):
        digit = clip_digit(rel)
        wave, sr = read_audio(upstream / rel)
        if np.abs(wave).max() < convert.min_peak:
            log.info("prepare  %s: silent (peak < %s), left out", rel, convert.min_peak)
            continue
        wave = trim_silence(wave, sr, -convert.trim_db, convert.margin_ms / 1000)
        wave = resample(wave, sr, sample_rate)
        wave = wave / max(1e-4, float(np.abs(wave).max())) * convert.peak
        write_audio(folder / f"{digit}_{speaker}_{kept}.wav", wave, sample_rate)
        kept += 1
    return kept
