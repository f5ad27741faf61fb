"""Transcribing features in length-sorted batches with any ASR search (the search names and
the archs they need: :mod:`seqpipe.common.settings`), and the feature normalisation that
training, the decode stage and the API share, so all give the same output for the same
settings."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqpipe.asr.ctc_search import ctc_greedy, ctc_prefix_beam_search, ctc_rescore
from seqpipe.asr.features import load_cmvn, speaker_mean_rows
from seqpipe.common.batching import decode_batches
from seqpipe.common.search import decode_batch
from seqpipe.common.settings import DecodeSettings
from seqpipe.models.asr import CTCEnsemble, pad_features
from seqpipe.models.ctc import CTCSearchScorer

NBest = list[tuple[list[int], float]]  # one utterance's hypotheses: (token ids, score)


def transcribe(
    model: torch.nn.Module,
    lengths: np.ndarray,
    load: Callable[[int], np.ndarray],
    settings: DecodeSettings | None = None,
    *,
    device: torch.device | str = "cpu",
    **overrides: Any,
) -> tuple[list[NBest], float]:
    """Transcribe utterances ``0 .. len(lengths) - 1``.

    :param lengths: frames per utterance
    :param load: ``i -> float32 frames x bins`` (normalised features of utterance ``i``)
    :param settings: how to decode (default: CTC greedy); ``auto`` resolves by the model's
        arch; ``settings.batch_tokens`` padded frames per batch (length-sorted, longest first)
    :param overrides: settings to change (:meth:`DecodeSettings.override`)
    :return: n-best lists ``[(token ids, score)]`` in input order (CTC searches: one
        hypothesis; greedy scores are 0), and the decoding wall time in seconds
    """
    nbest, _, secs = transcribe_members(model, lengths, load, settings, device=device, **overrides)
    return nbest, secs


def transcribe_members(
    model: torch.nn.Module,
    lengths: np.ndarray,
    load: Callable[[int], np.ndarray],
    settings: DecodeSettings | None = None,
    *,
    device: torch.device | str = "cpu",
    **overrides: Any,
) -> tuple[list[NBest], list[list[NBest]], float]:
    """:func:`transcribe`, and for a :class:`CTCEnsemble` also each member's own n-best lists
    (its own search's best hypothesis, as ``transcribe(member, ...)`` gives them), taken from
    the same pass: the ensemble's candidates are those hypotheses.

    :return: (the model's n-best lists, per member its n-best lists (``[]`` for a single
        model), the decoding wall time in seconds)
    """
    s = (settings or DecodeSettings(search="ctc_greedy")).override(**overrides)
    s = s.resolve("asr", model.arch)
    lengths = np.asarray(lengths, dtype=np.int64)
    out: list[NBest] = [[] for _ in range(len(lengths))]
    n_members = len(model.members) if isinstance(model, CTCEnsemble) else 0
    own: list[list[NBest]] = [[[] for _ in range(len(lengths))] for _ in range(n_members)]
    t0 = time.perf_counter()
    with torch.inference_mode():
        for idx in decode_batches(lengths, max_tokens=s.batch_tokens):
            x, x_len = pad_features([load(int(i)) for i in idx], model.min_frames)
            res, res_own = _search_batch(model, x.to(device), x_len, s)
            for dest, batch_res in zip([out, *own], [res, *res_own], strict=True):
                for i, r in zip(idx, batch_res, strict=True):
                    dest[int(i)] = [(list(h), float(sc)) for h, sc in r]
    return out, own, time.perf_counter() - t0


def _search_batch(
    model: Any, x: torch.Tensor, x_len: torch.Tensor, s: DecodeSettings
) -> tuple[list[NBest], list[list[NBest]]]:
    """One padded batch (batch x frames x bins) through the search ``s.search``: n-best lists
    per utterance, and an ensemble's members' own (``[]`` for a single model)."""
    if isinstance(model, CTCEnsemble):
        return _ensemble_search(model, x, x_len, s.search, s.beam_size)
    if s.search in ("ctc_greedy", "ctc_beam"):
        _, _, hyps, scores = _ctc_search(model, x, x_len, s.search, s.beam_size)
        return [[(h, sc)] for h, sc in zip(hyps, scores, strict=True)], []
    scorer = CTCSearchScorer(model.ctc_head) if s.search == "joint" else None
    return decode_batch(model, x, x_len, s, prefix_scorer=scorer), []


def _ctc_search(
    model: Any, x: torch.Tensor, x_len: torch.Tensor, search: str, beam_size: int
) -> tuple[torch.Tensor, torch.Tensor, list[list[int]], list[float]]:
    """One model's CTC pass: (log-probs, encoder lengths, best hypotheses, their scores;
    greedy scores are 0)."""
    enc = model.encode(x, x_len)
    lp = model.ctc_head(enc.outputs)
    if search == "ctc_greedy":
        hyps = ctc_greedy(lp, enc.lengths)
        return lp, enc.lengths, hyps, [0.0] * len(hyps)
    hyps, scores = ctc_prefix_beam_search(lp, enc.lengths, beam_size=beam_size, return_scores=True)
    return lp, enc.lengths, hyps, scores


def member_workers(members: int) -> int:
    """How many of ``members`` models to run at once, one thread each: as many as the cores
    allow at the current torch threads per model (each result is the same as alone)."""
    cores = (os.cpu_count() or 1) // max(torch.get_num_threads(), 1)
    return max(1, min(members, cores))


def _ensemble_search(
    model: Any, x: torch.Tensor, x_len: torch.Tensor, search: str, beam_size: int
) -> tuple[list[NBest], list[list[NBest]]]:
    """Each member's best hypothesis (its own CTC greedy or prefix beam search) is a
    candidate; the candidate with the highest CTC log-likelihood summed over all members wins.
    Scores are that sum. Members search side by side (:func:`member_workers` threads; torch
    releases the GIL in its kernels). :return: the winners, and each member's own hypotheses
    and scores"""

    def search_one(member: Any) -> tuple[torch.Tensor, torch.Tensor, list[list[int]], list[float]]:
        with torch.inference_mode():  # thread-local: a worker thread enters it itself
            return _ctc_search(member, x, x_len, search, beam_size)

    workers = member_workers(len(model.members))
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(search_one, model.members))
    else:
        results = [search_one(m) for m in model.members]
    candidates: list[list[list[int]]] = [[] for _ in range(x.shape[0])]
    for _, _, hyps, _ in results:
        for cands, h in zip(candidates, hyps, strict=True):
            if h not in cands:
                cands.append(h)
    best, scores = ctc_rescore([(lp, lengths) for lp, lengths, _, _ in results], candidates)
    own = [[[(h, sc)] for h, sc in zip(hyps, sc_, strict=True)] for _, _, hyps, sc_ in results]
    return [[(h, s)] for h, s in zip(best, scores, strict=True)], own


UTTERANCE_NORMS = ("none", "mean", "meanvar", "speaker")


def read_normalization(feat_dir: Path) -> tuple[tuple[np.ndarray, np.ndarray] | None, str]:
    """What a features artifact says about normalisation: (global CMVN mean/std or ``None``,
    per-utterance normalisation ``none`` | ``mean`` | ``meanvar`` | ``speaker``) from its
    ``cmvn.json`` and ``norm.json``."""
    feat_dir = Path(feat_dir)
    norm = (
        json.loads((feat_dir / "norm.json").read_text())
        if (feat_dir / "norm.json").is_file()
        else {}
    )
    cmvn = load_cmvn(feat_dir / "cmvn.json") if (feat_dir / "cmvn.json").is_file() else None
    utterance = (
        "speaker"
        if norm.get("speaker_cmn") == "all"
        else "meanvar"
        if norm.get("utterance_cvn")
        else "mean"
        if norm.get("utterance_cmn")
        else "none"
    )
    return cmvn, utterance


def feature_settings(feat_dir: Path) -> dict[str, Any]:
    """What decoding new audio needs of a features artifact: ``num_mel_bins``, ``sample_rate``,
    ``cmvn`` (mean, std or None), ``utterance_norm`` (:func:`read_normalization`) and
    ``speaker_cmn`` (``none`` | ``eval`` | ``all``: the speakers' means replace the
    utterance normalisation when speakers are known) and ``token_counts``
    (:func:`token_counts`)."""
    stats = json.loads((Path(feat_dir) / "stats.json").read_text("utf-8"))
    cmvn, utterance = read_normalization(feat_dir)
    norm_file = Path(feat_dir) / "norm.json"
    norm = json.loads(norm_file.read_text()) if norm_file.is_file() else {}
    return {
        "num_mel_bins": int(stats["num_mel_bins"]),
        "sample_rate": int(stats["sample_rate"]),
        "cmvn": cmvn,
        "utterance_norm": utterance,
        "speaker_cmn": str(norm.get("speaker_cmn") or "none"),
        "token_counts": token_counts(feat_dir),
    }


def token_counts(feat_dir: Path) -> np.ndarray | None:
    """How often each target token id occurs in the training transcripts of a features
    artifact (``train.tgt.ids.npy``; int64, one entry per id up to the largest seen), or
    ``None`` when the artifact holds none (the prior of ``decode.adapt_prior``)."""
    ids_file = Path(feat_dir) / "train.tgt.ids.npy"
    if not ids_file.is_file():
        return None
    return np.bincount(np.load(ids_file, allow_pickle=False).astype(np.int64))


def speaker_normalized(
    raw: list[np.ndarray],
    speakers: Sequence[str],
    cmvn: tuple[np.ndarray, np.ndarray] | None,
    utterance: str,
    speaker_cmn: str,
) -> list[np.ndarray]:
    """Normalised features of utterances whose speakers are known, as the decode stage
    normalises a split: with ``speaker_cmn`` (eval or all), global CMVN then each speaker's
    mean removed (:func:`~seqpipe.asr.features.speaker_mean_rows`; "" = its own speaker);
    else the utterance normalisation. :param raw: frames x bins each (float16 values)"""
    if speaker_cmn not in ("eval", "all"):
        normalize = make_normalizer(cmvn, utterance)
        return [normalize(f) for f in raw]
    keys = [(spk, 1.0) if spk else (f"utt:{i}", 1.0) for i, spk in enumerate(speakers)]
    bins = raw[0].shape[1] if raw else 0
    means = speaker_mean_rows(raw, keys, cmvn, bins)
    normalize = make_normalizer(cmvn, "none")
    return [normalize(f) - means[i] for i, f in enumerate(raw)]


def make_normalizer(
    cmvn: tuple[np.ndarray, np.ndarray] | None, utterance: str = "none"
) -> Callable[[np.ndarray], np.ndarray]:
    """``frames x bins -> float32``: global CMVN, then per utterance (``utterance``) nothing,
    its own mean subtracted, or its mean subtracted and its std divided out. The one
    normalisation used by training, the decode stage and the API. ``speaker`` (speaker CMN)
    here is ``mean``: a lone file is its own speaker; the splits of a features artifact
    subtract their speakers' stored means instead (:func:`split_loader`)."""
    if utterance not in UTTERANCE_NORMS:
        raise ValueError(f"utterance normalisation {utterance!r}; use one of {UTTERANCE_NORMS}")

    def normalize(f: np.ndarray) -> np.ndarray:
        f = f.astype(np.float32, copy=False)
        if cmvn is not None:
            f = ((f - cmvn[0]) / cmvn[1]).astype(np.float32, copy=False)
        if utterance != "none" and len(f):
            f = f - f.mean(axis=0, keepdims=True)
            if utterance == "meanvar":
                f = (f / np.maximum(f.std(axis=0, keepdims=True), 1e-5)).astype(np.float32)
        return f

    return normalize


def split_loader(feat_dir: Path, store: Any) -> Callable[[int], np.ndarray]:
    """``i -> normalised features of row i`` (float32) of one split's ``store`` of the features
    artifact ``feat_dir``: global CMVN, then its speaker's mean removed where the features
    stage stored speaker means for the split (``features.speaker_cmn``), else the utterance
    normalisation of :func:`read_normalization`. Training and the decode stage use it."""
    cmvn, utterance = read_normalization(feat_dir)
    if not store.has_speaker_means:
        normalize = make_normalizer(cmvn, utterance)
        return lambda i: normalize(store[i])
    normalize = make_normalizer(cmvn, "none")
    means = store.speaker_means()
    return lambda i: normalize(store[i]) - means[i]
