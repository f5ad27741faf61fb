"""Test-time warp views: the first pass over several VTLN warps of the filterbank
(``decode.warps``).

Training copies have their filterbank warped (``features.vtlp``) and their speed changed, so a
model has heard each training voice's formants at several positions; an unheard voice's may
sit between them. With ``decode.warps: [0.95, 1.0, 1.05]`` the first pass computes every
utterance's features at each warp (Kaldi's VTLN warping of the mel bins, as
:func:`~seqpipe.asr.features.fbank` does for training copies), normalised as the split is;
every (member, warp) proposes its own CTC hypothesis and the candidate with the highest CTC
log-likelihood summed over all of them wins — test-time augmentation, rescored the way an
ensemble rescores its members' hypotheses. A member's own hypothesis (``adapt_targets:
agreed``) is chosen the same way over that member's outputs at the warps. Only the first pass
(the only one without ``decode.adapt``) sees the warps; adaptation trains and decodes on the
unwarped features.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from seqpipe.asr.features import fbank
from seqpipe.asr.transcribe import ctc_pass, rescore_candidates, speaker_normalized
from seqpipe.common.batching import decode_batches
from seqpipe.common.settings import DecodeSettings
from seqpipe.models.asr import CTCEnsemble, pad_features

VIEW_SEARCHES = ("ctc_greedy", "ctc_beam")

Loader = Callable[[int], np.ndarray]
NBest = list[list[tuple[list[int], float]]]


def warped_features(
    waves: Sequence[np.ndarray], speakers: Sequence[str], feats: dict[str, Any], warp: float
) -> list[np.ndarray]:
    """Normalised features (frames x bins, float32) of ``waves`` with the filterbank warped
    by ``warp``, stored-precision (float16) values normalised as the decode stage normalises a
    split (:func:`~seqpipe.asr.transcribe.speaker_normalized`; ``speakers``: "" = its own).

    :param feats: :func:`~seqpipe.asr.transcribe.feature_settings` of the model's features
    """
    sr, bins = feats["sample_rate"], feats["num_mel_bins"]
    raw = [fbank(w, sr, bins, warp).numpy().astype(np.float16).astype(np.float32) for w in waves]
    return speaker_normalized(
        raw, speakers, feats["cmvn"], feats["utterance_norm"], feats["speaker_cmn"]
    )


def transcribe_views(
    model: torch.nn.Module,
    lengths: np.ndarray,
    views: Sequence[Loader],
    settings: DecodeSettings,
    *,
    device: torch.device | str = "cpu",
) -> tuple[NBest, list[NBest], float]:
    """The first pass over several views of each utterance (module docstring).

    :param lengths: frames per utterance (the same in every view)
    :param views: per view ``i -> float32 frames x bins`` (normalised features)
    :param settings: a CTC search (:data:`VIEW_SEARCHES`); ``batch_tokens`` padded frames per
        batch and view
    :return: the model's n-best lists (one hypothesis each, scored by its summed CTC
        log-likelihood) in input order, each member's own (one model: itself), and seconds
    """
    if settings.search not in VIEW_SEARCHES:
        raise ValueError(f"decode.warps: needs a CTC search ({', '.join(VIEW_SEARCHES)})")
    members = list(model.members) if isinstance(model, CTCEnsemble) else [model]
    lengths = np.asarray(lengths, dtype=np.int64)
    out: NBest = [[] for _ in range(len(lengths))]
    own: list[NBest] = [[[] for _ in range(len(lengths))] for _ in members]
    t0 = time.perf_counter()
    with torch.inference_mode():
        for idx in decode_batches(lengths, max_tokens=settings.batch_tokens):
            # per member, per view: (log-probs, lengths, hypotheses)
            runs: list[list[tuple[Any, Any, list[list[int]]]]] = [[] for _ in members]
            for load in views:
                x, x_len = pad_features([load(int(i)) for i in idx], model.min_frames)
                for k, member in enumerate(members):
                    lp, enc_len, hyps, _ = ctc_pass(
                        member, x.to(device), x_len, settings.search, settings.beam_size
                    )
                    runs[k].append((lp, enc_len, hyps))
            _fill(out, idx, rescore_candidates([r for member_runs in runs for r in member_runs]))
            for k, member_runs in enumerate(runs):
                _fill(own[k], idx, rescore_candidates(member_runs))
    return out, own, time.perf_counter() - t0


def _fill(out: NBest, idx: np.ndarray, picked: tuple[list[list[int]], list[float]]) -> None:
    for i, h, sc in zip(idx, *picked, strict=True):
        out[int(i)] = [(list(h), float(sc))]


def warp_views(
    waves: Sequence[np.ndarray],
    speakers: Sequence[str],
    feats: dict[str, Any],
    warps: Sequence[float],
    unwarped: Loader,
) -> list[Loader] | None:
    """The first pass's views of ``waves`` (one per warp, in ``warps`` order; warp 1.0 is
    ``unwarped``, the features as they are), or ``None`` for ``warps == [1.0]`` (one plain
    pass). :param feats: as for :func:`warped_features`"""
    if list(warps) == [1.0]:
        return None
    return [
        unwarped if w == 1.0 else warped_features(waves, speakers, feats, w).__getitem__
        for w in warps
    ]
