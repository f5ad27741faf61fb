"""Synthetic digit voices from eSpeak NG: more training speakers for small digit corpora.

eSpeak NG is a formant synthesiser; its English accents (US, RP, Scottish, Caribbean, ...)
times its voice variants (``m1``-``m7``, ``f1``-``f5``, Klatt voices, named voices) give
hundreds of distinct, if robotic, speakers. Synthetic speech as extra training data is a
documented augmentation for ASR (e.g. Rosenberg et al. 2019, "Speech recognition with
augmented synthesized speech"); here it widens the four real voices of ``asr_small``.

The engine is the ``espeakng-loader`` wheel (libespeak-ng and its data, one pinned build, so
the same arguments give the same samples on any machine), driven through its C API
(``speak_lib.h``) with ``ctypes``: synchronous synthesis into a callback, no audio device.

:func:`digit_voices` names the voices; :func:`synthesize_digits` speaks each digit word in
several takes per voice (rate, pitch and pitch range drawn per take), trims the silence around
it and resamples to the corpus rate: a pool in the same shape as FSDD's recordings.
"""

from __future__ import annotations

import ctypes
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from importlib import metadata
from pathlib import Path

import numpy as np

from seqpipe.errors import InputError

ACCENTS = (
    "en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc",
    "en-gb-x-gbclan", "en-gb-x-gbcwmd",
)  # fmt: skip
# human-sounding variants (no whisper, croak or robot voices)
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
    "klatt3", "klatt4", "Alex", "Andy", "Annie", "belinda", "benjamin", "david", "ed",
    "edward", "grandma", "grandpa", "ian", "john", "linda", "max", "michel", "paul", "quincy",
    "rob", "robert", "shelby", "steph", "travis", "victor", "zac",
)  # fmt: skip
RATE_WPM = (120, 220)  # words per minute, drawn per take
PITCH = (20, 80)  # eSpeak's 0-100 base pitch
PITCH_RANGE = (20, 90)  # eSpeak's 0-100 pitch range (0 = monotone)

# speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4
VOLUME = 50  # eSpeak's 0-200 (100 clips some voices)
PEAK = 0.5  # each word's samples scaled to this peak
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


def engine_version() -> str:
    """The synthesiser build (part of the prepare key of corpora that use it)."""
    try:
        return f"espeakng-loader {metadata.version('espeakng-loader')}"
    except metadata.PackageNotFoundError:
        raise InputError(
            "data.synthetic_voices: needs eSpeak NG from the 'espeakng-loader' package "
            "(pip install espeakng-loader)"
        ) from None


def digit_voices(count: int) -> list[str]:
    """``count`` eSpeak voice names (``accent+variant``), the same list on every call: the
    8 × 40 combinations in a fixed shuffled order, so any prefix mixes accents and variants."""
    combos = [f"{a}+{v}" for a in ACCENTS for v in VARIANTS]
    if not 0 <= count <= len(combos):
        raise InputError(f"data.synthetic_voices: between 0 and {len(combos)}, got {count}")
    order = np.random.default_rng(0).permutation(len(combos))
    return [combos[i] for i in order[:count]]


def speaker_name(voice: str) -> str:
    """A speaker id for a voice: ``tts-en-gb-x-rp-m3`` (no ``_`` and no ``+``)."""
    return "tts-" + voice.replace("+", "-").replace("_", "-").lower()


class _Engine:
    """libespeak-ng in this process; :meth:`say` returns int16 samples. Its wave generator
    keeps state from one utterance to the next (and across re-initialisation), so
    :func:`synthesize_digits` runs it in a fresh process to repeat exactly."""

    def __init__(self) -> None:
        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.restype = ctypes.c_int
        data_parent = str(Path(espeakng_loader.get_data_path()).parent).encode()
        self.sample_rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_parent, 0)
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({self.sample_rate})")
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # kept alive with the engine
        self.lib.espeak_SetSynthCallback(self._callback)
        self.libc = ctypes.CDLL(None)  # the Klatt voices' noise also draws from libc's rand()

    def _collect(self, wav, n, _events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def say(
        self, text: str, voice: str, rate: int, pitch: int, pitch_range: int, noise_seed: int
    ) -> np.ndarray:
        """int16 samples (T,) at :attr:`sample_rate`; ``noise_seed`` seeds the synthesiser's
        random generators (aspiration, breath), so the same call gives the same samples."""
        self.lib.espeak_ng_SetRandSeed(ctypes.c_long(noise_seed))
        self.libc.srand(ctypes.c_uint(noise_seed))
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise InputError(f"data.synthetic_voices: eSpeak NG has no voice {voice!r}")
        for param, value in (
            (_RATE, rate),
            (_VOLUME, VOLUME),
            (_PITCH, pitch),
            (_RANGE, pitch_range),
        ):
            self.lib.espeak_SetParameter(param, int(value), 0)
        self._chunks = []
        data = text.encode()
        err = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, 0, None, None)
        self.lib.espeak_Synchronize()
        if err != 0 or not self._chunks:
            raise RuntimeError(f"eSpeak NG could not say {text!r} with {voice} (error {err})")
        return np.concatenate(self._chunks)


def trim_silence(wave: np.ndarray, sr: int, floor_db: float = -40.0, margin_s: float = 0.02):
    """``wave`` (T,) without the leading/trailing 10 ms frames quieter than ``floor_db`` below
    its loudest frame, keeping ``margin_s`` of context on each side."""
    hop = max(1, sr // 100)
    n = len(wave) // hop
    if n == 0:
        return wave
    rms = np.sqrt((wave[: n * hop].astype(np.float64).reshape(n, hop) ** 2).mean(axis=1) + 1e-12)
    loud = np.nonzero(20 * np.log10(rms / rms.max()) > floor_db)[0]
    margin = int(margin_s * sr)
    start = max(0, loud[0] * hop - margin)
    end = min(len(wave), (loud[-1] + 1) * hop + margin)
    return wave[start:end]


def synthesize_digits(
    voices: Sequence[str], words: Sequence[str], takes: int, sample_rate: int, seed: int
) -> dict[str, list[tuple[int, np.ndarray]]]:
    """Each voice says each word ``takes`` times (in a fresh process: the same arguments give
    the same samples).

    :param words: the words, index = label (``DIGIT_WORDS``)
    :param seed: draws each take's rate, pitch and range (per voice: ``(seed, voice index)``)
    :return: ``{speaker_name(voice): [(word index, float32 wave (T,) at sample_rate), ...]}``
    """
    if not voices:
        return {}
    engine_version()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        sr, spoken = pool.submit(_speak, list(voices), list(words), takes, seed).result()
    out: dict[str, list[tuple[int, np.ndarray]]] = {}
    for voice, recs in zip(voices, spoken, strict=True):
        out[speaker_name(voice)] = [(label, _word(pcm, sr, sample_rate)) for label, pcm in recs]
    return out


def _word(pcm: np.ndarray, sr: int, sample_rate: int) -> np.ndarray:
    """int16 samples (T,) at ``sr`` → trimmed float32 (T',) at ``sample_rate``, peak ``PEAK``."""
    from seqpipe.data.audio import resample  # torch: not at import (recipes import this module)

    wave = resample(trim_silence(pcm.astype(np.float32), sr), sr, sample_rate)
    return (wave * (PEAK / max(float(np.abs(wave).max()), 1e-9))).astype(np.float32)


def _speak(
    voices: list[str], words: list[str], takes: int, seed: int
) -> tuple[int, list[list[tuple[int, np.ndarray]]]]:
    """(engine rate, per voice ``[(word index, int16 samples (T,)), ...]``)."""
    engine = _Engine()
    spoken = []
    for v, voice in enumerate(voices):
        rng = np.random.default_rng([seed, v])
        recs = []
        for _ in range(takes):
            rate, pitch, pitch_range = (
                int(rng.integers(lo, hi + 1)) for lo, hi in (RATE_WPM, PITCH, PITCH_RANGE)
            )
            for label, word in enumerate(words):
                noise_seed = int(rng.integers(2**31))
                recs.append((label, engine.say(word, voice, rate, pitch, pitch_range, noise_seed)))
        spoken.append(recs)
    return engine.sample_rate, spoken
