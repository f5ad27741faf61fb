"""Acoustic features: Kaldi-compatible log-mel filterbanks, speed perturbation, a feature
store on disk (one memory-mapped float16 array + an index), global CMVN, and SpecAugment.

On-disk layout written by :func:`compute_features_parallel` (read by :class:`FeatureStore`)::

    out_dir/feats.npy    float16, total_frames x num_mel_bins (all utterances, back to back)
    out_dir/index.json   {"utt_ids": [...], "offsets": [...], "lengths": [...], "speeds": [...],
                          "num_mel_bins": 80, "sample_rate": 16000, ...}
    out_dir/cmvn.json    {"mean": [...], "std": [...], "num_frames": N}  (global CMVN, optional)

The stage (``seqpipe/asr/stages/features.py``) decides which utterances and settings;
this module only computes and stores.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import os
import sys
from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torchaudio
from torch import Tensor, nn
from tqdm import tqdm

from seqpipe.data.asr_datasets import Utterance
from seqpipe.data.audio import audio_info, read_audio, resample

FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0
FEATS_FILE = "feats.npy"
INDEX_FILE = "index.json"
CMVN_FILE = "cmvn.json"
SPEAKER_MEANS_FILE = "speaker_means.npy"
INDEX_VERSION = 1


# --------------------------------------------------------------------------------------------
# single-utterance computation


def fbank(wave: np.ndarray | Tensor, sr: int, num_mel_bins: int = 80, warp: float = 1.0) -> Tensor:
    """Kaldi log-mel filterbank (25 ms windows, 10 ms shift, povey window, no dither).

    The waveform in [-1, 1] is scaled to the 16-bit range first, as Kaldi reads integers,
    so the values match ``compute-fbank-feats`` (with ``--dither=0``).
    ``warp`` != 1 warps the mel bins' frequencies as Kaldi's VTLN does (piecewise linear
    between 100 Hz and 500 Hz below Nyquist): VTLP augmentation (Jaitly & Hinton, 2013).

    :param wave: float waveform, shape ``[num_samples]``
    :param sr: its sample rate
    :return: float32 features, shape ``[num_frames, num_mel_bins]`` with
        ``num_frames = num_fbank_frames(num_samples, sr)`` (0 if shorter than one window)
    """
    x = torch.as_tensor(wave, dtype=torch.float32).reshape(1, -1)
    frames = num_fbank_frames(x.shape[1], sr)
    if frames == 0:
        return torch.zeros(0, num_mel_bins)
    return torchaudio.compliance.kaldi.fbank(
        x * 32768.0,
        num_mel_bins=num_mel_bins,
        frame_length=FRAME_LENGTH_MS,
        frame_shift=FRAME_SHIFT_MS,
        dither=0.0,
        energy_floor=0.0,
        sample_frequency=float(sr),
        vtln_warp=float(warp),
    )


def num_fbank_frames(num_samples: int, sr: int) -> int:
    """Frames :func:`fbank` gives for ``num_samples`` samples (Kaldi ``snip_edges=true``)."""
    window = int(sr * FRAME_LENGTH_MS * 0.001)
    shift = int(sr * FRAME_SHIFT_MS * 0.001)
    return 0 if num_samples < window else 1 + (num_samples - window) // shift


def speed_perturb(wave: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """Change speed (and pitch) by ``factor`` through resampling, Kaldi-style.

    ``factor`` 1.1 makes the utterance 10 % shorter: the signal is taken as sampled at
    ``sr * factor`` and resampled to ``sr``.

    :param wave: shape ``[num_samples]``
    :return: shape ``[ceil(num_samples / factor)]`` (approximately)
    """
    if factor == 1.0:
        return wave
    return resample(wave, int(round(sr * factor)), sr)


def load_wave(path: str | Path, sample_rate: int, speed: float = 1.0) -> np.ndarray:
    """Read ``path``, speed-perturb by ``speed`` and resample to ``sample_rate`` in ONE
    resampling step (file rate ``r`` is treated as ``r * speed``).

    :return: float32 waveform ``[num_samples]`` at ``sample_rate``
    """
    wave, file_sr = read_audio(path)
    virtual_sr = int(round(file_sr * speed))
    return resample(wave, virtual_sr, sample_rate)


def _num_samples_after(num_samples: int, file_sr: int, sample_rate: int, speed: float) -> int:
    """Length :func:`load_wave` returns, computed as ``torchaudio.functional.resample`` does."""
    orig = int(round(file_sr * speed))
    if orig == sample_rate:
        return num_samples
    g = math.gcd(orig, sample_rate)
    orig, new = orig // g, sample_rate // g
    return int(torch.ceil(torch.as_tensor(new * num_samples / orig)).long())


# --------------------------------------------------------------------------------------------
# feature store


def _speed_prefix(utt_id: str, speed: float) -> str:
    return utt_id if speed == 1.0 else f"sp{speed:g}-{utt_id}"


def _copy_uniform(utt_id: str, seed: int, salt: str = "") -> float:
    """A number in [0, 1) that is a pure function of (seed, copy id, salt): augmentation
    draws that a recomputation (or a resumed run) reproduces exactly."""
    digest = hashlib.sha256(f"{seed}:{salt}{utt_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def vtlp_factor(utt_id: str, seed: int, max_warp: float) -> float:
    """The VTLP warp factor of the copy ``utt_id``: uniform in ``[1 - max_warp, 1 + max_warp]``,
    a pure function of (seed, id) so a recomputation gives the same features."""
    if max_warp <= 0:
        return 1.0
    return round(1.0 - max_warp + 2.0 * max_warp * _copy_uniform(utt_id, seed), 4)


def noise_snr_db(utt_id: str, seed: int, snr_range: Sequence[float] | None) -> float | None:
    """The noise level of the copy ``utt_id`` in dB below its loudest 25 ms frame, uniform in
    ``snr_range`` (a pure function of (seed, id)); None when noise augmentation is off."""
    if not snr_range:
        return None
    lo, hi = float(snr_range[0]), float(snr_range[1])
    return round(lo + (hi - lo) * _copy_uniform(utt_id, seed, "noise:"), 2)


def add_noise(wave: np.ndarray, sr: int, snr_db: float, rng_key: str) -> np.ndarray:
    """Add white Gaussian noise ``snr_db`` below the power of the loudest 25 ms frame
    (hop 10 ms) of ``wave``: a background floor whose level relative to the speech varies
    from copy to copy, as it does from one recording set-up to another. The noise is drawn
    from a generator seeded by ``rng_key``, so the result is reproducible."""
    n, hop = int(sr * FRAME_LENGTH_MS / 1000), int(sr * FRAME_SHIFT_MS / 1000)
    x = wave.astype(np.float64)
    if len(x) < n:
        peak = float(np.mean(x * x)) if len(x) else 0.0
    else:
        csum = np.concatenate([[0.0], np.cumsum(x * x)])
        starts = np.arange(0, len(x) - n + 1, hop)
        peak = float(((csum[starts + n] - csum[starts]) / n).max())
    if peak <= 0.0:
        return wave
    seed = int.from_bytes(hashlib.sha256(rng_key.encode()).digest()[:8], "big")
    noise = np.random.default_rng(seed).standard_normal(len(x))
    return (x + noise * np.sqrt(peak * 10.0 ** (-snr_db / 10.0))).astype(np.float32)


_WORKER_FEATS: np.memmap | None = None
_Row = tuple[str, float, float, float | None, int]  # (path, speed, warp, noise snr, frames)


def _worker_init(feats_path: str) -> None:
    global _WORKER_FEATS
    torch.set_num_threads(1)
    _WORKER_FEATS = np.load(feats_path, mmap_mode="r+")


def _worker_compute(job: tuple) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Compute one (utterance, speed) and write it into the shared memmap.

    :return: (job index, frames written, per-bin sum, per-bin sum of squares) (float64)
    """
    index, path, speed, warp, snr, noise_key, offset, expected, sample_rate, num_mel_bins = job
    wave = load_wave(path, sample_rate, speed)
    if snr is not None:
        wave = add_noise(wave, sample_rate, snr, noise_key)
    feats = fbank(wave, sample_rate, num_mel_bins, warp).numpy()
    if feats.shape[0] != expected:
        raise RuntimeError(f"{path}: {feats.shape[0]} frames, {expected} predicted from the header")
    assert _WORKER_FEATS is not None
    _WORKER_FEATS[offset : offset + expected] = feats.astype(np.float16)
    f64 = feats.astype(np.float64)
    return index, expected, f64.sum(axis=0), (f64 * f64).sum(axis=0)


def compute_features_parallel(
    utterances: Sequence[Utterance],
    out_dir: str | Path,
    num_workers: int = 2,
    sample_rate: int = 16000,
    num_mel_bins: int = 80,
    speeds: Sequence[float] = (1.0,),
    compute_cmvn: bool = True,
    progress: bool = True,
    desc: str = "fbank",
    mp_context: str | None = None,
    vtlp: float = 0.0,
    seed: int = 0,
    noise_snr: Sequence[float] | None = None,
) -> FeatureStore:
    """Compute fbank features for all utterances into one float16 memory-mapped array.

    Frame counts are predicted from the audio headers, the array is allocated once, and
    ``num_workers`` processes write their utterances straight into it. Each
    utterance appears once per speed in ``speeds``; perturbed copies get ids
    ``sp0.9-<utt_id>`` (Kaldi convention). Utterances shorter than one window get 0 frames
    (kept in the index; filter them with ``store.lengths``).

    :param utterances: what to compute (audio resampled to ``sample_rate`` when needed)
    :param out_dir: created; gets ``feats.npy``, ``index.json`` and (``compute_cmvn``)
        ``cmvn.json`` with global mean/std over all frames written — compute the store of
        the training split with it, and apply those stats to every split
    :param num_workers: 0 or 1 computes in this process
    :param mp_context: multiprocessing start method; default ``fork`` where available
        (workers use one torch thread, as DataLoader workers do), else ``spawn`` (which
        needs the ``if __name__ == "__main__":`` guard in the calling script)
    :param progress: tqdm progress bar on stderr
    :param vtlp: > 0 warps each copy's filterbank by its own factor in ``[1-vtlp, 1+vtlp]``
        (:func:`vtlp_factor` of ``seed`` and the copy's id; recorded in the index as ``warps``)
    :param noise_snr: ``[lo, hi]`` dB: each copy gets white noise at its own level in that
        range below its loudest frame (:func:`add_noise`; recorded as ``noise_snrs``)
    :return: the :class:`FeatureStore` reading ``out_dir``
    :raises AudioError: an audio file is missing or unreadable (names the file)
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    utt_ids, jobs_meta = _plan_rows(utterances, sample_rate, speeds, vtlp, seed, noise_snr)
    lengths = np.array([m[4] for m in jobs_meta], dtype=np.int64)
    offsets = np.zeros(len(lengths), dtype=np.int64)
    if len(lengths) > 1:
        offsets[1:] = np.cumsum(lengths)[:-1]
    total = int(lengths.sum())

    feats_path = out_dir / FEATS_FILE
    np.lib.format.open_memmap(
        feats_path, mode="w+", dtype=np.float16, shape=(total, num_mel_bins)
    ).flush()
    jobs = [
        (
            i,
            path,
            speed,
            warp,
            snr,
            f"{seed}:{utt_ids[i]}",
            int(offsets[i]),
            int(lengths[i]),
            sample_rate,
            num_mel_bins,
        )
        for i, (path, speed, warp, snr, _) in enumerate(jobs_meta)
    ]
    total_sum, total_sq = _run_jobs(
        jobs, feats_path, num_mel_bins, num_workers, mp_context, progress, desc
    )
    if compute_cmvn:
        _save_global_cmvn(out_dir, total_sum, total_sq, total)
    _write_index(out_dir, utt_ids, jobs_meta, offsets, lengths, sample_rate, num_mel_bins)
    return FeatureStore(out_dir)


def _plan_rows(
    utterances: Sequence[Utterance],
    sample_rate: int,
    speeds: Sequence[float],
    vtlp: float,
    seed: int,
    noise_snr: Sequence[float] | None,
) -> tuple[list[str], list[_Row]]:
    """Row ids and (path, speed, warp, noise snr, frames) per row, frames from the headers."""
    utt_ids: list[str] = []
    jobs_meta: list[_Row] = []
    for u in utterances:
        num_samples, file_sr = audio_info(u.path)
        for speed in speeds:
            n = _num_samples_after(num_samples, file_sr, sample_rate, float(speed))
            utt_ids.append(_speed_prefix(u.utt_id, float(speed)))
            warp = vtlp_factor(utt_ids[-1], seed, vtlp)
            snr = noise_snr_db(utt_ids[-1], seed, noise_snr)
            jobs_meta.append((u.path, float(speed), warp, snr, num_fbank_frames(n, sample_rate)))
    if len(set(utt_ids)) != len(utt_ids):
        raise ValueError("compute_features_parallel: duplicate utterance ids")
    return utt_ids, jobs_meta


def _run_jobs(
    jobs: list[tuple],
    feats_path: Path,
    num_mel_bins: int,
    num_workers: int,
    mp_context: str | None,
    progress: bool,
    desc: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the jobs here or in a worker pool; :return: per-bin sum and sum of squares."""
    bar = tqdm(total=len(jobs), desc=desc, unit="utt", file=sys.stderr, disable=not progress)
    try:
        if num_workers <= 1:
            _worker_init(str(feats_path))
            return _accumulate(map(_worker_compute, jobs), num_mel_bins, bar)
        method = mp_context or ("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        ctx = mp.get_context(method)
        chunk = max(1, min(64, len(jobs) // (num_workers * 8)))
        with ctx.Pool(num_workers, initializer=_worker_init, initargs=(str(feats_path),)) as pool:
            results = pool.imap_unordered(_worker_compute, jobs, chunksize=chunk)
            return _accumulate(results, num_mel_bins, bar)
    finally:
        bar.close()
        global _WORKER_FEATS
        if _WORKER_FEATS is not None:
            _WORKER_FEATS.flush()
            _WORKER_FEATS = None


def _accumulate(
    results: Iterable[tuple[int, int, np.ndarray, np.ndarray]], num_mel_bins: int, bar: tqdm
) -> tuple[np.ndarray, np.ndarray]:
    """Sum the jobs' per-bin sums and sums of squares in arrival order, ticking ``bar``."""
    total_sum = np.zeros(num_mel_bins)
    total_sq = np.zeros(num_mel_bins)
    for _, _, s, sq in results:
        total_sum += s
        total_sq += sq
        bar.update(1)
    return total_sum, total_sq


def _save_global_cmvn(
    out_dir: Path, total_sum: np.ndarray, total_sq: np.ndarray, total: int
) -> None:
    """Write ``cmvn.json`` (mean/std over all ``total`` frames) from the per-bin sums."""
    if total == 0:
        raise ValueError("compute_features_parallel: no frames, cannot compute CMVN")
    mean = total_sum / total
    std = np.sqrt(np.maximum(total_sq / total - mean * mean, 1e-10))
    save_cmvn(out_dir / CMVN_FILE, mean, std, total)


def _write_index(
    out_dir: Path,
    utt_ids: list[str],
    jobs_meta: list[_Row],
    offsets: np.ndarray,
    lengths: np.ndarray,
    sample_rate: int,
    num_mel_bins: int,
) -> None:
    """Write ``index.json`` (atomically): the rows' ids, offsets, lengths and settings."""
    index = {
        "version": INDEX_VERSION,
        "num_mel_bins": num_mel_bins,
        "sample_rate": sample_rate,
        "dtype": "float16",
        "frame_shift_ms": FRAME_SHIFT_MS,
        "frame_length_ms": FRAME_LENGTH_MS,
        "utt_ids": utt_ids,
        "offsets": offsets.tolist(),
        "lengths": lengths.tolist(),
        "speeds": [m[1] for m in jobs_meta],
        "warps": [m[2] for m in jobs_meta],
        "noise_snrs": [m[3] for m in jobs_meta],
    }
    tmp = out_dir / (INDEX_FILE + ".tmp")
    tmp.write_text(json.dumps(index))
    os.replace(tmp, out_dir / INDEX_FILE)


class FeatureStore:
    """Read-only access to features written by :func:`compute_features_parallel`.

    ``store[i]`` is utterance ``i`` as float32 ``[num_frames, num_mel_bins]`` (a copy);
    ``store.raw(i)`` the float16 memory-mapped view. Picklable (for DataLoader workers):
    the memmap is reopened lazily after unpickling.
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.dir = Path(out_dir)
        index_path = self.dir / INDEX_FILE
        if not index_path.is_file():
            raise FileNotFoundError(f"{index_path}: feature index not found")
        index = json.loads(index_path.read_text())
        self.utt_ids: list[str] = index["utt_ids"]
        self.offsets = np.asarray(index["offsets"], dtype=np.int64)
        self.lengths = np.asarray(index["lengths"], dtype=np.int64)
        self.speeds: list[float] = index.get("speeds", [1.0] * len(self.utt_ids))
        self.num_mel_bins: int = index["num_mel_bins"]
        self.sample_rate: int = index["sample_rate"]
        self._pos = {u: i for i, u in enumerate(self.utt_ids)}
        self._feats: np.ndarray | None = None

    @property
    def feats(self) -> np.ndarray:
        """The whole memory-mapped array, ``[total_frames, num_mel_bins]`` float16."""
        if self._feats is None:
            self._feats = np.load(self.dir / FEATS_FILE, mmap_mode="r")
        return self._feats

    def __len__(self) -> int:
        return len(self.utt_ids)

    def raw(self, i: int) -> np.ndarray:
        """Utterance ``i``, float16 memmap view ``[num_frames, num_mel_bins]``."""
        o, n = int(self.offsets[i]), int(self.lengths[i])
        return self.feats[o : o + n]

    def __getitem__(self, i: int) -> np.ndarray:
        """Utterance ``i`` as float32 ``[num_frames, num_mel_bins]``."""
        return self.raw(i).astype(np.float32)

    def index_of(self, utt_id: str) -> int:
        return self._pos[utt_id]

    @property
    def has_speaker_means(self) -> bool:
        return (self.dir / SPEAKER_MEANS_FILE).is_file()

    def speaker_means(self) -> np.ndarray:
        """Per row, its speaker's mean frame (after global CMVN), ``rows x bins`` float32,
        from ``speaker_means.npy`` (``features.speaker_cmn``)."""
        path = self.dir / SPEAKER_MEANS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no per-speaker means (features.speaker_cmn)")
        return np.load(path)

    @property
    def cmvn(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(mean, std)`` saved beside the features, or ``None``."""
        path = self.dir / CMVN_FILE
        return load_cmvn(path) if path.is_file() else None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_feats"] = None
        return state


# --------------------------------------------------------------------------------------------
# CMVN


def save_speaker_means(
    store: FeatureStore,
    speakers: Sequence[str],
    cmvn: tuple[np.ndarray, np.ndarray] | None,
) -> int:
    """Write each row's speaker mean (``features.speaker_cmn``) beside ``store``'s features.

    A speaker is a (speaker id, speed) pair, so each speed-perturbed copy of a voice is its
    own speaker (as in Kaldi's ``sp0.9-`` speakers); an utterance with no speaker id is its
    own speaker (per-utterance CMN). Means are of globally normalised frames when ``cmvn``.

    :param speakers: one speaker id per row of ``store`` ("" = unknown)
    :return: the number of speakers
    """
    if len(speakers) != len(store):
        raise ValueError(f"{len(speakers)} speaker ids for {len(store)} feature rows")
    keys = [
        (spk, speed) if spk else (f"utt:{utt}", speed)
        for spk, speed, utt in zip(speakers, store.speeds, store.utt_ids, strict=True)
    ]
    rows = speaker_mean_rows(
        (store.raw(i) for i in range(len(store))), keys, cmvn, store.num_mel_bins
    )
    np.save(store.dir / SPEAKER_MEANS_FILE, rows)
    return len(set(keys))


def speaker_mean_rows(
    frames: Iterable[np.ndarray],
    keys: Sequence[Hashable],
    cmvn: tuple[np.ndarray, np.ndarray] | None,
    bins: int,
) -> np.ndarray:
    """Each utterance's speaker mean: ``rows x bins`` float32, the mean over all frames of the
    utterances with its key (float64 sums of the stored float16 frames), globally normalised
    when ``cmvn``. The decode stage's splits and ``transcribe`` with speakers share it.

    :param frames: per utterance, ``frames x bins`` (float16 values)
    :param keys: per utterance, its speaker key
    """
    sums: dict[Hashable, np.ndarray] = {}
    counts: dict[Hashable, int] = {}
    for key, f in zip(keys, frames, strict=True):
        sums[key] = sums.get(key, np.zeros(bins)) + f.astype(np.float64).sum(axis=0)
        counts[key] = counts.get(key, 0) + len(f)
    means = {k: sums[k] / max(counts[k], 1) for k in sums}
    if cmvn is not None:
        means = {k: (m - cmvn[0]) / cmvn[1] for k, m in means.items()}
    rows = np.stack([means[k] for k in keys]) if len(keys) else np.zeros((0, bins))
    return rows.astype(np.float32)


def save_cmvn(path: str | Path, mean: np.ndarray, std: np.ndarray, num_frames: int) -> None:
    """Write global CMVN statistics (per-bin mean and standard deviation) as JSON."""
    data = {
        "mean": [float(x) for x in mean],
        "std": [float(x) for x in std],
        "num_frames": int(num_frames),
    }
    Path(path).write_text(json.dumps(data, indent=1))


def load_cmvn(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """:return: ``(mean, std)``, float32 ``[num_mel_bins]`` each."""
    data = json.loads(Path(path).read_text())
    return np.asarray(data["mean"], dtype=np.float32), np.asarray(data["std"], dtype=np.float32)


def apply_cmvn(feats: np.ndarray | Tensor, mean: np.ndarray, std: np.ndarray):
    """``(feats - mean) / std`` (broadcast over frames); same type as ``feats``."""
    if isinstance(feats, Tensor):
        m = torch.as_tensor(mean, dtype=feats.dtype, device=feats.device)
        s = torch.as_tensor(std, dtype=feats.dtype, device=feats.device)
        return (feats - m) / s
    return (feats - mean) / std


# --------------------------------------------------------------------------------------------
# SpecAugment


class SpecAugment(nn.Module):
    """SpecAugment (Park et al., 2019) without time warping, applied on the fly to a batch.

    Each utterance gets ``freq_masks`` bands of width ~ U[0, freq_width] bins and
    ``time_masks`` spans of width ~ U[0, W] frames set to ``mask_value``, where
    ``W = time_width`` (int, frames) or ``time_width * length`` (float < 1, a fraction of the
    utterance). Time masks stay inside each utterance's real length, so padding is untouched
    and a masked batch equals its utterances masked alone (given the same random draws).
    Active only in training mode.
    """

    def __init__(
        self,
        freq_masks: int = 2,
        freq_width: int = 27,
        time_masks: int = 2,
        time_width: float = 0.05,
        mask_value: float = 0.0,
    ) -> None:
        super().__init__()
        self.freq_masks = freq_masks
        self.freq_width = freq_width
        self.time_masks = time_masks
        self.time_width = time_width
        self.mask_value = mask_value

    @staticmethod
    def _band(size: int | Tensor, max_width: Tensor, num: int, axis_len: int, gen) -> Tensor:
        """Union of ``num`` random bands per row. :return: batch x axis_len bool."""
        batch = max_width.shape[0]
        pos = torch.arange(axis_len, device=max_width.device)
        mask = torch.zeros(batch, axis_len, dtype=torch.bool, device=max_width.device)
        size_t = torch.as_tensor(size, device=max_width.device).expand(batch)
        for _ in range(num):
            u = torch.rand(batch, 2, generator=gen, device=max_width.device)
            width = torch.minimum((u[:, 0] * (max_width + 1)).floor().long(), size_t)
            start = (u[:, 1] * (size_t - width + 1)).floor().long()
            mask |= (pos[None] >= start[:, None]) & (pos[None] < (start + width)[:, None])
        return mask

    def forward(
        self, x: Tensor, lengths: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """
        :param x: batch x time x feats
        :param lengths: batch (real number of frames)
        :return: masked copy, batch x time x feats (``x`` itself in eval mode)
        """
        if not self.training or (self.freq_masks == 0 and self.time_masks == 0):
            return x
        batch, time, feats = x.shape
        lengths = lengths.to(x.device)
        fmax = torch.full((batch,), self.freq_width, device=x.device)
        fmask = self._band(feats, fmax, self.freq_masks, feats, generator)  # batch x feats
        if isinstance(self.time_width, float) and self.time_width < 1:
            tmax = (lengths.float() * self.time_width).floor().long()
        else:
            tmax = torch.full((batch,), int(self.time_width), device=x.device)
        tmask = self._band(lengths, tmax, self.time_masks, time, generator)  # batch x time
        valid = torch.arange(time, device=x.device)[None] < lengths[:, None]  # batch x time
        mask = (fmask[:, None, :] | tmask[:, :, None]) & valid[:, :, None]
        return x.masked_fill(mask, self.mask_value)
