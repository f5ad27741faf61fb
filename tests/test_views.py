"""The warped first pass (decode.warps): every (member, view) proposes, the summed CTC
log-likelihood over all of them chooses; on tiny random models (the pipeline and transcribe
run it in test_asr_pipeline.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqpipe.asr.adapt import adapt_and_transcribe
from seqpipe.asr.ctc_search import ctc_log_likelihood
from seqpipe.asr.transcribe import ctc_pass, transcribe
from seqpipe.asr.views import transcribe_views, warp_views, warped_features
from seqpipe.common.settings import DecodeSettings
from seqpipe.models.asr import CTCEnsemble, pad_features

from .test_adapt import _feats, _model

GREEDY = DecodeSettings(search="ctc_greedy")


def _ensemble() -> CTCEnsemble:
    ens = CTCEnsemble([_model(seed=0), _model(seed=0)]).eval()
    torch.manual_seed(1)
    for p in ens.members[1].parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    return ens


def test_the_views_hypothesis_is_the_best_candidate_over_all_members_and_views():
    ens = _ensemble()
    plain = _feats(10, seed=4)
    rng = np.random.default_rng(7)
    shifted = [3 * f[:, ::-1] + rng.standard_normal(f.shape).astype(np.float32) for f in plain]
    views = [plain.__getitem__, shifted.__getitem__]
    lengths = np.array([len(f) for f in plain])
    nb, own, secs = transcribe_views(ens, lengths, views, GREEDY)
    assert secs > 0 and len(nb) == 10 and len(own) == 2
    with torch.inference_mode():
        for i in range(10):
            passes = []  # (member, view): log-probs, lengths, its greedy hypothesis
            for view in (plain, shifted):
                x, x_len = pad_features([view[i]], ens.min_frames)
                passes += [(k, ctc_pass(m, x, x_len, "ctc_greedy", 1)) for k, m in enumerate(ens.members)]  # fmt: skip

            def best(chosen: list) -> tuple[list[int], float]:
                cands = []
                for _, (_, _, hyps, _) in chosen:
                    cands += [hyps[0]] if hyps[0] not in cands else []
                scores = [
                    sum(float(ctc_log_likelihood(lp, n, [c])[0]) for _, (lp, n, _, _) in chosen)
                    for c in cands
                ]
                j = int(np.argmax(scores))
                return cands[j], scores[j]

            hyp, score = best(passes)
            assert nb[i][0][0] == hyp and nb[i][0][1] == pytest.approx(score, abs=1e-3)
            for k in range(2):
                assert own[k][i][0][0] == best([p for p in passes if p[0] == k])[0]
    # a real test: the views disagree somewhere, and the choice is not always view 1's
    first = transcribe(ens, lengths, plain.__getitem__)[0]
    second = transcribe(ens, lengths, shifted.__getitem__)[0]
    assert [h[0][0] for h in first] != [h[0][0] for h in second]
    # one view: the ensemble's own search
    alone, _, _ = transcribe_views(ens, lengths, views[:1], GREEDY)
    assert [h[0][0] for h in alone] == [h[0][0] for h in first]
    with pytest.raises(ValueError, match="decode.warps: needs a CTC search"):
        transcribe_views(ens, lengths, views, DecodeSettings(search="beam"))


def test_adaptation_starts_from_the_views_first_pass():
    ens = _ensemble()
    plain = _feats(8, seed=5)
    shifted = [f[:, ::-1].copy() for f in plain]  # bins reversed: another "voice"
    lengths = np.array([len(f) for f in plain])
    views = [plain.__getitem__, shifted.__getitem__]
    out = adapt_and_transcribe(
        ens, lengths, plain.__getitem__, ["s"] * 8, epochs=1, lr=0.01, views=views
    )
    nb, own, _ = transcribe_views(ens, lengths, views, GREEDY)
    assert out["first_pass"] == nb
    best = [h[0][0] for h in nb]
    agreed = sum(1 for i, h in enumerate(best) if h and all(o[i][0][0] == h for o in own))
    assert out["trained"] == {"s": [agreed]}


def test_warp_views_one_per_warp_and_none_for_the_plain_pass():
    sr = 8000
    t = np.arange(sr // 2) / sr
    waves = [np.sin(2 * np.pi * f * t).astype(np.float32) * 0.1 for f in (300.0, 700.0)]
    feats = {"sample_rate": sr, "num_mel_bins": 20, "cmvn": None, "utterance_norm": "mean"}
    feats["speaker_cmn"] = "eval"
    plain = warped_features(waves, ["a", "a"], feats, 1.0)
    assert warp_views(waves, ["a", "a"], feats, [1.0], plain.__getitem__) is None
    views = warp_views(waves, ["a", "a"], feats, [0.9, 1.0], plain.__getitem__)
    assert views is not None and len(views) == 2 and views[1] == plain.__getitem__
    assert views[0](0).shape == plain[0].shape and not np.allclose(views[0](0), plain[0])
    np.testing.assert_allclose(views[0](0).mean(0) + views[0](1).mean(0), 0, atol=1e-4)
