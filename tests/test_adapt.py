"""Speaker adaptation at decoding time (decode.adapt: lin): the input transform, its training
and the two-pass decoding, on tiny random models (the pipeline runs it in
test_asr_pipeline.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from seqpipe.asr.adapt import (
    InputTransform,
    adapt_and_transcribe,
    mean_entropy,
    prior_loss,
    train_transform,
)
from seqpipe.asr.transcribe import transcribe, transcribe_members
from seqpipe.models.asr import build_asr_model, model_spec

BINS, VOCAB = 12, 9


def _model(arch: str = "ctc", seed: int = 0, layers: int = 1) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = dict(
        arch=arch, subsampling="conv2d", conv_channels=4, frontend_norm=False, emb_size=16,
        cell="gru", hidden_size=16, enc_layers=layers, dec_layers=layers, bidirectional=True,
        attention="bahdanau", dropout=0.2,
    )  # fmt: skip
    return build_asr_model(model_spec(cfg, BINS, VOCAB)).eval()


def _feats(n: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        rng.standard_normal((int(rng.integers(30, 90)), BINS)).astype(np.float32) for _ in range(n)
    ]


def test_input_transform_starts_as_identity_and_keeps_padding_zero():
    from seqpipe.models.asr import pad_features

    model = _model()
    feats = _feats(4)
    x, x_len = pad_features(feats, model.min_frames)
    with torch.no_grad():
        plain = model.ctc_head(model.encode(x, x_len).outputs)
        model.input_transform = InputTransform(BINS)
        same = model.ctc_head(model.encode(x, x_len).outputs)
        torch.testing.assert_close(plain, same)
        # a real transform: padded frames stay zero, so a batch decodes as one at a time
        model.input_transform.weight.add_(0.3 * torch.randn(BINS, BINS))
        model.input_transform.bias.add_(1.0)
        y = model.input_transform(x, x_len)
        assert int(x_len.min()) < x.shape[1]
        assert all(float(y[i, int(n) :].abs().sum()) == 0 for i, n in enumerate(x_len))
        assert float(y[0, : int(x_len[0])].abs().sum()) > 0
    lengths = np.array([len(f) for f in feats])
    together, _ = transcribe(model, lengths, lambda i: feats[i], batch_frames=10**6)
    alone, _ = transcribe(model, lengths, lambda i: feats[i], batch_frames=1)
    assert together == alone
    model.input_transform = None
    with torch.no_grad():
        torch.testing.assert_close(model.ctc_head(model.encode(x, x_len).outputs), plain)


@pytest.mark.parametrize("arch", ["ctc", "attention", "ctc_attention"])
def test_train_transform_fits_the_targets_and_leaves_the_model_alone(arch: str):
    model = _model(arch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    feats = _feats(20)
    rng = np.random.default_rng(3)
    targets = [list(rng.integers(3, VOCAB, size=int(rng.integers(1, 4)))) for _ in feats]
    targets[0] = []  # an empty transcript trains nothing
    transform, losses = train_transform(
        model, feats, targets, epochs=8, lr=0.02, seed=0, ctc_weight=0.5
    )
    assert len(losses) == 8 and losses[-1] < losses[0]
    assert model.input_transform is transform and not model.training
    for k, v in model.state_dict().items():
        if not k.startswith("input_transform."):
            torch.testing.assert_close(v, before[k])
    assert all(p.requires_grad for n, p in model.named_parameters())
    assert not torch.equal(transform.weight.detach(), torch.eye(BINS))
    # the same seed trains the same transform
    model.input_transform = None
    again, losses2 = train_transform(
        model, feats, targets, epochs=8, lr=0.02, seed=0, ctc_weight=0.5
    )
    assert losses2 == losses and torch.equal(again.weight, transform.weight)


def test_adaptation_runs_the_rnns_in_training_mode_computing_what_eval_mode_does(monkeypatch):
    """cuDNN runs backward only through RNNs in training mode: adaptation puts them there,
    with their dropout off, and trains the same transform as with the model in eval mode."""
    import seqpipe.asr.adapt as adapt

    feats = _feats(12)
    rng = np.random.default_rng(3)
    targets = [list(rng.integers(3, VOCAB, size=int(rng.integers(1, 4)))) for _ in feats]
    model = _model("ctc_attention", layers=2)  # 2-layer GRUs: dropout between their layers
    rnns = [m for m in model.modules() if isinstance(m, torch.nn.RNNBase)]
    assert rnns and all(m.dropout == 0.2 for m in rnns)
    seen: list[tuple[bool, float]] = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: seen.append((m.training, m.dropout))) for m in rnns
    ]
    kw = dict(epochs=3, lr=0.02, seed=0, ctc_weight=0.5)
    transform, losses = train_transform(model, feats, targets, **kw)
    for h in hooks:
        h.remove()
    assert seen and all(mode == (True, 0.0) for mode in seen)
    assert not model.training and all(m.dropout == 0.2 and not m.training for m in rnns)
    model.input_transform = None

    def all_eval(m: torch.nn.Module) -> dict:
        m.eval()
        return {}

    monkeypatch.setattr(adapt, "rnns_in_training_mode", all_eval)
    reference, ref_losses = train_transform(model, feats, targets, **kw)
    assert losses == ref_losses and torch.equal(transform.weight, reference.weight)


def test_adapt_and_transcribe_first_pass_is_the_plain_decode_and_groups_speakers():
    model = _model()
    feats = _feats(7)
    lengths = np.array([len(f) for f in feats])
    plain, _ = transcribe(model, lengths, lambda i: feats[i])
    speakers = ["a", "a", "b", "a", "b", "", ""]
    out = adapt_and_transcribe(
        model, lengths, lambda i: feats[i], speakers, epochs=2, lr=0.01, rounds=2
    )
    assert out["first_pass"] == plain
    assert out["speakers"] == 4  # a, b and two utterances without a speaker id
    assert len(out["nbest"]) == 7 and all(len(h) == 1 for h in out["nbest"])
    assert all(len(m) == 2 for m in out["losses"]["a"])  # one member, two rounds
    assert len(out["rounds"]) == 2 and out["rounds"][-1] == [h[0][0] for h in out["nbest"]]
    one = adapt_and_transcribe(model, lengths, lambda i: feats[i], speakers, epochs=2, lr=0.01)
    assert out["rounds"][0] == one["rounds"][0]  # round 1 of 2 is the one-round run
    assert model.input_transform is None  # nothing left behind
    with pytest.raises(ValueError, match="2 speaker ids for 7 utterances"):
        adapt_and_transcribe(model, lengths, lambda i: feats[i], ["a", "b"], epochs=1, lr=0.01)


def test_an_ensemble_adapts_on_the_utterances_its_members_agree_on():
    from seqpipe.models.asr import CTCEnsemble

    ens = CTCEnsemble([_model(seed=0), _model(seed=0)]).eval()
    torch.manual_seed(1)
    for p in ens.members[1].parameters():  # member 1: member 0 nudged, agreeing on some
        p.data.add_(0.05 * torch.randn_like(p))
    feats = _feats(12, seed=4)
    lengths = np.array([len(f) for f in feats])
    speakers = ["s"] * 12

    def run(targets: str) -> dict:
        return adapt_and_transcribe(
            ens, lengths, feats.__getitem__, speakers, epochs=1, lr=0.01, targets=targets
        )

    best = [h[0][0] for h in transcribe(ens, lengths, feats.__getitem__)[0]]
    own = [[h[0][0] for h in transcribe(m, lengths, feats.__getitem__)[0]] for m in ens.members]
    agreed = sum(1 for i, h in enumerate(best) if h and all(o[i] == h for o in own))
    assert 0 < agreed < sum(1 for h in best if h)  # a real test: some agree, some do not
    assert run("agreed")["trained"] == {"s": [agreed]}
    assert run("all")["trained"] == {"s": [sum(1 for h in best if h)]}
    out = run("agreed")
    assert len(out["losses"]["s"]) == 2  # one transform per member
    assert all(m.input_transform is None for m in ens.members)
    # members adapt side by side (threads) exactly as each would alone
    tgts = [h if all(o[i] == h for o in own) else [] for i, h in enumerate(best)]
    for k, member in enumerate(ens.members):
        _, alone = train_transform(
            member, feats, tgts, epochs=1, lr=0.01, seed=[0, 0, 0, k], ctc_weight=0.3
        )
        member.input_transform = None
        assert out["losses"]["s"][k] == [alone]


@pytest.mark.parametrize("search", ["ctc_greedy", "ctc_beam"])
@pytest.mark.parametrize("threads", [1, 2])
def test_an_ensembles_pass_gives_each_members_own_transcripts(search: str, threads: int):
    """The adaptation rounds take the members' own hypotheses from the ensemble's pass instead
    of decoding each member again: they must be what each member alone gives, whether the
    members search side by side (1 torch thread each on 2+ cores) or one after the other."""
    from seqpipe.asr.transcribe import member_workers
    from seqpipe.common.settings import DecodeSettings
    from seqpipe.models.asr import CTCEnsemble

    ens = CTCEnsemble([_model(seed=0), _model(seed=3)]).eval()
    feats = _feats(10, seed=5)
    lengths = np.array([len(f) for f in feats])
    s = DecodeSettings(search=search, beam_size=3, batch_tokens=200)  # several batches
    alone = [transcribe(m, lengths, feats.__getitem__, s)[0] for m in ens.members]
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        side_by_side = member_workers(2) == 2
        nbest, own, _ = transcribe_members(ens, lengths, feats.__getitem__, s)
    finally:
        torch.set_num_threads(saved)
    if threads == 1 and (os.cpu_count() or 1) >= 2:
        assert side_by_side
    assert nbest == transcribe(ens, lengths, feats.__getitem__, s)[0]
    assert own == alone
    assert own[0] != own[1]  # a real test: the members differ
    assert transcribe_members(ens.members[0], lengths, feats.__getitem__, s)[1] == []


def test_prior_loss_is_the_kl_from_the_prior_to_the_tokens_share_of_the_posterior_mass():
    # two utterances, 3 and 2 real frames, vocab: blank + 3 tokens
    probs = torch.tensor(
        [
            [[0.5, 0.5, 0.0, 0.0], [0.5, 0.0, 0.5, 0.0], [1.0, 0.0, 0.0, 0.0]],
            [[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]],  # frame 3: padding
        ]
    )
    log_probs, lengths = probs.clamp_min(1e-30).log(), torch.tensor([3, 2])
    share = torch.tensor([0.5, 1.5, 1.0]) / 3.0  # tokens' mass 0.5, 1.5, 1.0: padding left out
    prior = torch.tensor([0.0, 0.2, 0.5, 0.3])
    want = float((prior[1:] * (prior[1:] / share).log()).sum())
    assert float(prior_loss(log_probs, lengths, prior)) == pytest.approx(want, rel=1e-5)
    assert float(prior_loss(log_probs, lengths, torch.cat([torch.zeros(1), share]))) == (
        pytest.approx(0.0, abs=1e-6)
    )
    # tokens the prior never saw (a shorter prior: ids past its end) count only in the share
    short = prior_loss(log_probs, lengths, torch.tensor([0.0, 0.4, 0.6]))
    assert float(short) == pytest.approx(
        0.4 * np.log(0.4 / float(share[0])) + 0.6 * np.log(0.6 / float(share[1]))
    )


def test_the_token_prior_term_pulls_the_speakers_tokens_towards_the_training_distribution():
    """Pseudo-labels that all say one token (a voice whose every word the model mishears as
    the same one), training transcripts with two other tokens: the prior term moves the
    posterior mass off the pseudo-label towards them. (A tiny random model hears its input
    faintly: the weight is large so that the term shows.)"""
    from seqpipe.models.asr import pad_features

    feats = _feats(24)
    targets = [[5] for _ in feats]
    counts = np.array([0, 0, 0, 30, 0, 0, 0, 0, 30])
    prior = torch.tensor(counts / counts.sum(), dtype=torch.float32)
    kl, share = {}, {}
    for weight in (0.0, 1000.0):
        model = _model(seed=4)
        train_transform(
            model, feats, targets, epochs=20, lr=0.05, seed=0, ctc_weight=0.5,
            prior=prior, prior_weight=weight,
        )  # fmt: skip
        x, x_len = pad_features(feats, model.min_frames)
        with torch.no_grad():
            out = model(x, x_len)
        kl[weight] = float(prior_loss(out.ctc_log_probs, out.enc.lengths, prior))
        share[weight] = out.ctc_log_probs.exp().mean((0, 1))
    assert kl[1000.0] < kl[0.0] - 0.05, kl
    assert share[1000.0][5] < share[0.0][5] - 0.01 and share[1000.0][3] > share[0.0][3]
    lengths = np.array([len(f) for f in feats])
    with pytest.raises(ValueError, match="needs the training targets' token counts"):
        adapt_and_transcribe(
            _model(), lengths, lambda i: feats[i], ["a"] * len(feats), epochs=1, lr=0.01,
            prior_weight=1.0,
        )  # fmt: skip


@pytest.mark.parametrize("arch", ["attention", "ctc_attention"])
def test_the_token_prior_term_reaches_every_arch(arch: str):
    """No CTC head: the prior term reads the attention decoder's target positions."""
    feats = _feats(12)
    targets = [[5] for _ in feats]
    prior = torch.tensor([0, 0, 0, 0.5, 0, 0, 0, 0, 0.5])
    weights = {}
    for weight in (0.0, 1000.0):
        transform, losses = train_transform(
            _model(arch), feats, targets, epochs=3, lr=0.05, seed=0, ctc_weight=0.5,
            prior=prior, prior_weight=weight,
        )  # fmt: skip
        assert all(np.isfinite(losses))
        weights[weight] = transform.weight.detach()
    assert not torch.allclose(weights[0.0], weights[1000.0])


def test_mean_entropy_averages_over_the_real_positions_only():
    probs = torch.tensor(
        [
            [[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]],
            [[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]],  # position 2: padding
        ]
    )
    got = mean_entropy(probs.clamp_min(1e-30).log(), torch.tensor([2, 1]))
    assert float(got) == pytest.approx((np.log(4) + 0.0 + np.log(2)) / 3, rel=1e-5)


def test_the_confidence_penalty_keeps_the_model_less_sure_of_the_pseudo_labels():
    """The same pseudo-labels with and without the penalty: with it, the adapted CTC posteriors
    keep a higher entropy. (A sure model: its CTC head scaled up, so that what the transform
    does to the input shows in the posteriors.)"""
    from seqpipe.models.asr import pad_features

    feats = _feats(16)
    entropy = {}
    for penalty in (0.0, 10.0):
        model = _model(seed=4)
        with torch.no_grad():
            model.ctc_head.proj.weight.mul_(30)
        train_transform(
            model, feats, [[5, 6] for _ in feats], epochs=10, lr=0.05, seed=0, ctc_weight=0.5,
            confidence_penalty=penalty,
        )  # fmt: skip
        x, x_len = pad_features(feats, model.min_frames)
        with torch.no_grad():
            out = model(x, x_len)
        entropy[penalty] = float(mean_entropy(out.ctc_log_probs, out.enc.lengths))
    assert entropy[10.0] > entropy[0.0] + 0.1, entropy


@pytest.mark.parametrize("arch", ["attention", "ctc_attention"])
def test_the_confidence_penalty_reaches_every_arch(arch: str):
    feats = _feats(12)
    weights = {}
    for penalty in (0.0, 10.0):
        transform, losses = train_transform(
            _model(arch), feats, [[5] for _ in feats], epochs=3, lr=0.05, seed=0,
            ctc_weight=0.5, confidence_penalty=penalty,
        )  # fmt: skip
        assert all(np.isfinite(losses))
        weights[penalty] = transform.weight.detach()
    assert not torch.allclose(weights[0.0], weights[10.0])


def test_majority_targets_need_more_than_half_of_the_members():
    from seqpipe.models.asr import CTCEnsemble

    ens = CTCEnsemble([_model(seed=0), _model(seed=0), _model(seed=0)]).eval()
    torch.manual_seed(1)
    for m in ens.members[1:]:  # members 1 and 2: member 0 nudged two ways
        for p in m.parameters():
            p.data.add_(0.05 * torch.randn_like(p))
    feats = _feats(12, seed=4)
    lengths = np.array([len(f) for f in feats])
    best = [h[0][0] for h in transcribe(ens, lengths, feats.__getitem__)[0]]
    own = [[h[0][0] for h in transcribe(m, lengths, feats.__getitem__)[0]] for m in ens.members]
    votes = [sum(o[i] == h for o in own) if h else 0 for i, h in enumerate(best)]
    unanimous, most = sum(v == 3 for v in votes), sum(v >= 2 for v in votes)
    assert unanimous < most  # a real test: majority trains on more than unanimity

    def trained(targets: str, model: CTCEnsemble = ens) -> list[int]:
        out = adapt_and_transcribe(
            model, lengths, feats.__getitem__, ["s"] * 12, epochs=1, lr=0.01, targets=targets
        )
        return out["trained"]["s"]

    assert trained("agreed") == [unanimous]
    assert trained("majority") == [most]
    pair = CTCEnsemble(list(ens.members[:2])).eval()  # two members: majority is agreement
    assert trained("majority", pair) == trained("agreed", pair)
