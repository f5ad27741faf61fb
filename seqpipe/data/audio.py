"""Reading audio files into mono float32 waveforms.

Audio is read with ``soundfile`` (libsndfile: wav, flac, ogg, ...), never with
``torchaudio.load`` (which needs FFmpeg/torchcodec on these machines). When the
file's sample rate differs from the requested one, the waveform is resampled
with ``torchaudio.functional.resample``.

Every failure — missing file, unreadable or corrupt file, empty audio — raises
:class:`AudioError`, a ``ValueError`` whose message is one line naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from seqpipe.errors import InputError

__all__ = ["AudioError", "read_audio", "resample", "write_audio", "audio_info"]


class AudioError(InputError):
    """An audio file that cannot be used; ``str(err)`` is one line naming it.

    A ``ValueError`` (through :class:`seqpipe.errors.InputError`, exit code 2).

    :param path: the offending file
    :param reason: short human-readable cause (e.g. ``"file not found"``)
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = " ".join(str(reason).split())  # keep the message on one line
        super().__init__(f"{self.path}: {self.reason}")

    def __reduce__(self):  # picklable across multiprocessing workers
        return (AudioError, (self.path, self.reason))


def resample(wave: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a mono waveform.

    :param wave: float32 waveform, shape ``[num_samples]``
    :return: float32 waveform at ``target_sr``, shape ``[num_samples * target_sr / orig_sr]``
    """
    if orig_sr == target_sr:
        return wave
    out = torchaudio.functional.resample(
        torch.from_numpy(np.ascontiguousarray(wave)), orig_sr, target_sr
    )
    return out.numpy().astype(np.float32, copy=False)


def read_audio(path: str | Path, target_sr: int | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file as a mono float32 waveform in [-1, 1].

    Multi-channel audio is averaged to mono.

    :param path: audio file (any format libsndfile reads: wav, flac, ...)
    :param target_sr: sample rate wanted; ``None`` keeps the file's rate
    :return: ``(wave, sr)`` with ``wave`` of shape ``[num_samples]`` (float32)
    :raises AudioError: file missing, unreadable, corrupt or without samples
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(path, "file not found")
    if not path.is_file():
        raise AudioError(path, "not a regular file")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError/TypeError...
        raise AudioError(path, f"cannot read audio ({type(e).__name__}: {e})") from e
    if data.shape[0] == 0:
        raise AudioError(path, "audio has no samples")
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    wave = np.ascontiguousarray(wave, dtype=np.float32)
    if not np.all(np.isfinite(wave)):
        raise AudioError(path, "audio contains NaN or infinite samples")
    if target_sr is not None and target_sr != sr:
        wave = resample(wave, int(sr), int(target_sr))
        sr = int(target_sr)
    return wave, int(sr)


def audio_info(path: str | Path) -> tuple[int, int]:
    """Number of frames and sample rate of an audio file, without decoding it.

    :return: ``(num_frames, sample_rate)``
    :raises AudioError: file missing or unreadable
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "file not found")
    try:
        info = sf.info(str(path))
    except Exception as e:
        raise AudioError(path, f"cannot read audio header ({type(e).__name__}: {e})") from e
    return int(info.frames), int(info.samplerate)


def write_audio(path: str | Path, wave: np.ndarray, sr: int) -> None:
    """Write a mono float waveform as 16-bit PCM WAV (deterministic bytes).

    :param wave: float waveform in [-1, 1], shape ``[num_samples]``
    """
    wave = np.clip(np.asarray(wave, dtype=np.float32), -1.0, 1.0)
    sf.write(str(path), wave, int(sr), subtype="PCM_16", format="WAV")
