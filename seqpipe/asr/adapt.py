"""Unsupervised speaker adaptation at decoding time (``decode.adapt: lin``).

Kaldi decodes an unseen speaker twice: a first pass, then fMLLR (an affine feature transform
per speaker, estimated on the first pass's alignments) and a second pass through it. ``lin``
does the same for our neural models with a *linear input network* (Neto et al., 1995):

1. the split is decoded as usual (the first pass);
2. for each speaker of the split, ``features @ A + b`` (``A`` starting as the identity, ``b``
   as zero: at first it changes nothing) is put in front of the model and trained for
   ``adapt_epochs`` passes over that speaker's utterances with Adam (``adapt_lr``), on the
   first pass's transcripts as targets, with the model's own training loss (CTC, attention or
   both; no label smoothing). The model itself is frozen and in eval mode (no dropout, no
   SpecAugment); updates take :data:`ADAPT_BATCH` utterances in a seeded random order;
3. the speaker's utterances are decoded again through the transform.

With ``adapt_prior`` > 0 each update also pulls the speaker's token distribution towards the
training transcripts': the transform's loss gains ``adapt_prior`` times the KL divergence from
the training targets' token frequencies to the tokens' share of the posterior mass over the
batch (CTC heads: over its frames, blank left out; arch attention: the decoder's over the
target positions, EOS's left out) — class-balanced self-training (Zou et al., 2018; the
diversity term of SHOT, Liang et al., 2020). Self-training alone reinforces an accent's
systematic confusions (an unheard voice whose "two" the model hears as "three": its first pass
says "three" twice as often as "two", and adapting to it makes that worse); the prior term
makes the transform resolve them towards the distribution every training voice had.

With ``adapt_confidence_penalty`` > 0 each update also *rewards* the entropy of the posteriors
(the loss loses that weight times their mean entropy over the real frames, or target positions
without a CTC head): the confidence penalty of Pereyra et al. (2017). The pseudo-labels hold
the first pass's errors, and a transform trained to make the model sure of them makes it sure
of those errors too (minimising the entropy instead — SUTA's test-time adaptation, Lin et al.,
2022 — made an unheard voice's adapted WER worse); the penalty keeps its doubts open for the
prior term and the next round to resolve.

``adapt_rounds`` > 1 repeats 2-3 with the newest transcripts, each round from the identity
again (not from the last round's transform, so errors are not compounded). An ensemble's
members (``train.members``) each get their own transform (trained side by side in threads, as
many as the cores allow at the decode stage's torch threads), trained on the ensemble's
transcripts; with ``adapt_targets: agreed`` (the default) only on the utterances where every
member's own hypothesis equals the ensemble's (on the unseen FSDD speaker, 55 % of the
utterances at about 2 % WER, against 5 % for all of them); with ``majority`` where more than
half of them do (unanimity leaves a larger ensemble few utterances). Only the speaker's audio
is used, never a reference. An utterance whose transcript is empty (or too long for its frames
under CTC) does not train the transform, but is decoded again like the others; a batch whose
loss is not finite makes no update. Utterances without a speaker id are each their own
speaker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from seqpipe.asr.task import make_asr_batch, output_loss, trainable
from seqpipe.asr.transcribe import member_workers, transcribe_members
from seqpipe.common.settings import DecodeSettings
from seqpipe.models.asr import CTCEnsemble

ADAPT_BATCH = 16  # utterances per update
ADAPT_TARGETS = ("agreed", "majority", "all")


def prior_loss(log_probs: Tensor, lengths: Tensor, prior: Tensor) -> Tensor:
    """KL(prior || share): how far the tokens' share of the posterior mass over a batch's
    real positions (id 0, CTC's blank, left out) is from ``prior``.

    :param log_probs: batch x positions x vocab (CTC: frames; attention: target positions)
    :param lengths: batch (real positions)
    :param prior: the training targets' token frequencies (summing to 1; ids past its end 0)
    """
    vocab = log_probs.shape[-1]
    q = torch.zeros(vocab, dtype=log_probs.dtype, device=log_probs.device)
    q[: len(prior)] = prior[:vocab].to(q)
    real = _real_positions(log_probs, lengths)
    mass = (log_probs.exp() * real[..., None]).sum((0, 1))[1:]
    share = (mass / mass.sum().clamp_min(1e-12)).clamp_min(1e-12)
    q = q[1:]
    seen = q > 0
    return (q[seen] * (q[seen].log() - share[seen].log())).sum()


def mean_entropy(log_probs: Tensor, lengths: Tensor) -> Tensor:
    """The posteriors' mean entropy (nats) over a batch's real positions.

    :param log_probs: batch x positions x vocab; :param lengths: batch (real positions)
    """
    real = _real_positions(log_probs, lengths)
    entropy = -(log_probs.exp() * log_probs).sum(-1)  # batch x positions
    return (entropy * real).sum() / real.sum().clamp_min(1)


def _real_positions(log_probs: Tensor, lengths: Tensor) -> Tensor:
    """batch x positions: 1 at the real positions of ``log_probs``, 0 at the padding."""
    pos = torch.arange(log_probs.shape[1], device=log_probs.device)[None, :]
    return (pos < lengths.to(log_probs.device)[:, None]).to(log_probs.dtype)


def _output_posteriors(out: Any, batch: Any) -> tuple[Tensor, Tensor]:
    """A model output's posteriors and real lengths that the prior and the confidence penalty
    read: the CTC head's frames, or without one the attention decoder's target positions (the
    EOS position left out)."""
    if out.ctc_log_probs is not None:
        return out.ctc_log_probs, out.enc.lengths
    return out.att_logits.log_softmax(-1), batch.target_lengths


def _with_terms(
    objective: Tensor, out: Any, batch: Any, terms: tuple[Tensor | None, float, float]
) -> Tensor:
    """``objective`` + ``prior_weight *`` :func:`prior_loss` − ``confidence_penalty *``
    :func:`mean_entropy` of the output's posteriors (``terms``: prior, prior_weight,
    confidence_penalty; a term with weight 0 is left out)."""
    prior, prior_weight, confidence_penalty = terms
    if prior_weight <= 0 and confidence_penalty <= 0:
        return objective
    posteriors = _output_posteriors(out, batch)
    if prior_weight > 0:
        assert prior is not None
        objective = objective + prior_weight * prior_loss(*posteriors, prior)
    if confidence_penalty > 0:
        objective = objective - confidence_penalty * mean_entropy(*posteriors)
    return objective


class InputTransform(nn.Module):
    """``x @ weight + bias`` on every real frame (padding stays zero, so batched decoding still
    equals one utterance at a time); starts as the identity."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.eye(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """batch x frames x dim -> same"""
        real = torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(x.device)[:, None]
        return (x @ self.weight + self.bias) * real[..., None].to(x.dtype)


def model_members(model: nn.Module) -> list[nn.Module]:
    """The models that take a transform: an ensemble's members, or the model itself."""
    return list(model.members) if isinstance(model, CTCEnsemble) else [model]


def train_transform(
    model: nn.Module,
    feats: list[np.ndarray],
    targets: list[list[int]],
    *,
    epochs: int,
    lr: float,
    seed: Any,
    ctc_weight: float,
    device: torch.device | str = "cpu",
    prior: Tensor | None = None,
    prior_weight: float = 0.0,
    confidence_penalty: float = 0.0,
) -> tuple[InputTransform, list[float]]:
    """Train an :class:`InputTransform` in front of the frozen ``model`` (an :class:`ASRModel`)
    on ``feats`` (normalised, one speaker) with ``targets`` (token ids), and leave it set as
    ``model.input_transform``.

    :param prior, prior_weight: with a weight > 0, the loss per target token gains
        ``prior_weight *`` :func:`prior_loss` (``prior``: the training token frequencies)
    :param confidence_penalty: with a weight > 0, the loss loses ``confidence_penalty *``
        :func:`mean_entropy` of the posteriors (module docstring)
    :return: the transform and the mean loss per target token of each epoch (the model's own
        loss, without the prior and the penalty terms)
    """
    if prior_weight > 0 and prior is None:
        raise ValueError("adapting with a token prior needs the prior")
    arch = model.arch
    tgts = [np.asarray(t, dtype=np.int64) for t in targets]
    usable = np.nonzero(trainable(model, arch, np.array([len(f) for f in feats]), tgts))[0]
    params = list(model.parameters())  # the model's own, before the transform joins them
    flags = [p.requires_grad for p in params]
    was_training = model.training
    for p in params:
        p.requires_grad_(False)
    transform = InputTransform(feats[0].shape[1]).to(device)
    model.input_transform = transform
    rnn_dropout = rnns_in_training_mode(model)
    opt = torch.optim.Adam(transform.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    terms = (prior, prior_weight, confidence_penalty)
    losses: list[float] = []
    try:
        with torch.enable_grad():
            for _ in range(epochs if len(usable) else 0):
                total, n_tok = 0.0, 0
                order = rng.permutation(usable)
                for start in range(0, len(order), ADAPT_BATCH):
                    idx = order[start : start + ADAPT_BATCH]
                    batch = make_asr_batch(
                        [feats[i] for i in idx],
                        [tgts[i] for i in idx],
                        model.min_frames,
                        arch,
                        device,
                    )
                    out = model(batch.feats, batch.lengths, None if arch == "ctc" else batch.tgt_in)
                    loss = output_loss(out, batch, arch, ctc_weight, 0.0)
                    objective = loss / max(batch.n_targets, 1)
                    objective = _with_terms(objective, out, batch, terms)
                    if not torch.isfinite(objective):  # no update from a NaN/inf batch
                        continue
                    opt.zero_grad(set_to_none=True)
                    objective.backward()
                    opt.step()
                    total += float(loss.detach())
                    n_tok += batch.n_targets
                losses.append(total / max(n_tok, 1))
    finally:
        model.train(was_training)
        for rnn, p in rnn_dropout.items():
            rnn.dropout = p
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
    return transform, losses


def rnns_in_training_mode(model: nn.Module) -> dict[nn.RNNBase, float]:
    """``model`` in eval mode except its RNN layers: in training mode with their dropout
    off, so that they compute what eval mode computes and cuDNN can run backward through them
    (it refuses RNNs in eval mode). :return: each RNN's dropout, to restore."""
    model.eval()
    saved = {}
    for m in model.modules():
        if isinstance(m, nn.RNNBase):
            saved[m] = m.dropout
            m.dropout = 0.0
            m.train()
    return saved


def adapt_and_transcribe(
    model: nn.Module,
    lengths: np.ndarray,
    load: Callable[[int], np.ndarray],
    speakers: list[str],
    *,
    epochs: int,
    lr: float,
    rounds: int = 1,
    targets: str = "agreed",
    seed: int = 0,
    loss_ctc_weight: float = 0.3,
    settings: DecodeSettings | None = None,
    device: torch.device | str = "cpu",
    log: Any = None,
    prior_weight: float = 0.0,
    token_counts: np.ndarray | None = None,
    confidence_penalty: float = 0.0,
) -> dict[str, Any]:
    """First pass, then ``rounds`` of per-speaker adaptation and decoding (module docstring).

    :param lengths, load: as for :func:`seqpipe.asr.transcribe.transcribe`
    :param speakers: one speaker id per utterance ("" = its own speaker)
    :param targets: ``agreed``: an ensemble trains on the utterances where every member's own
        hypothesis equals the ensemble's (a single model: all); ``majority``: where more than
        half of them do (two members: as agreed); ``all``: every utterance
    :param loss_ctc_weight: the training loss's CTC weight (arch ctc_attention)
    :param settings: how every pass decodes (default: CTC greedy)
    :param prior_weight: the weight of the token prior term (module docstring; 0: none)
    :param token_counts: vocab; how often each token id occurs in the training targets (the
        prior; needed when ``prior_weight`` > 0)
    :param confidence_penalty: the weight of the entropy bonus (module docstring; 0: none)
    :return: ``nbest`` (final), ``rounds`` (each round's best token ids per utterance: how
        the transcripts moved, the last one ``nbest``'s), ``first_pass`` (n-best lists),
        ``first_pass_seconds``, ``adapt_seconds`` (adaptation and the later passes),
        ``speakers`` (count), ``trained`` (``{speaker: utterances trained on, per round}``)
        and ``losses`` (``{speaker: [per member: [per round: epoch losses]]}``)
    """
    if targets not in ADAPT_TARGETS:
        raise ValueError(f"adapt targets {targets!r}; use one of {ADAPT_TARGETS}")
    prior = _prior(prior_weight, token_counts)
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(speakers) != len(lengths):
        raise ValueError(f"{len(speakers)} speaker ids for {len(lengths)} utterances")
    s = settings or DecodeSettings(search="ctc_greedy")
    first, own, first_secs = transcribe_members(model, lengths, load, s, device=device)
    t0 = time.perf_counter()
    groups: dict[str, list[int]] = {}
    for i, spk in enumerate(speakers):
        groups.setdefault(spk or f"(utterance {i})", []).append(i)
    terms = (prior, prior_weight, confidence_penalty)
    run = _Adaptation(model, s, epochs, lr, seed, loss_ctc_weight, device, terms)
    # each member's own hypotheses of the last pass (agreed, majority: their votes choose the
    # targets; need = how many must equal the ensemble's transcript)
    agree = targets != "all" and len(run.members) > 1
    own = own if agree else []
    need = 0 if not own else len(own) if targets == "agreed" else len(own) // 2 + 1
    book = _Book(groups, len(run.members), rounds, log)
    current, passes = first, []
    for rnd in range(rounds):
        current, own = _adapt_round(
            run, groups, load, lengths, (current, own), seed, rnd, book, need=need
        )
        passes.append([_best(h) for h in current])
    return {
        "nbest": current,
        "rounds": passes,
        "first_pass": first,
        "first_pass_seconds": first_secs,
        "adapt_seconds": time.perf_counter() - t0,
        "speakers": len(groups),
        "trained": book.trained,
        "losses": book.losses,
    }


class _Book:
    """What the rounds did per speaker: utterances trained on and each member's epoch losses
    per round (logged as they come when ``log`` is given)."""

    def __init__(self, groups: dict[str, list[int]], members: int, rounds: int, log: Any) -> None:
        self.trained: dict[str, list[int]] = {k: [] for k in groups}
        self.losses: dict[str, list[list[list[float]]]] = {
            k: [[] for _ in range(members)] for k in groups
        }
        self.rounds, self.log = rounds, log

    def add(self, spk: str, n: int, trained: int, fitted: list[list[float]], rnd: int) -> None:
        self.trained[spk].append(trained)
        for k, ep_losses in enumerate(fitted):
            self.losses[spk][k].append(ep_losses)
        if self.log is not None:
            _log_speaker(self.log, spk, n, trained, rnd, self.rounds, self.losses[spk])


def _adapt_round(
    run: _Adaptation,
    groups: dict[str, list[int]],
    load: Callable[[int], np.ndarray],
    lengths: np.ndarray,
    last: tuple[list[Any], list[list[Any]]],
    seed: int,
    rnd: int,
    book: _Book,
    *,
    need: int,
) -> tuple[list[Any], list[list[Any]]]:
    """Round ``rnd``: per speaker, targets from the ``last`` pass (the model's n-best lists, its
    members' own: an utterance is a target where ``need`` of them equal the model's), the
    transforms trained on them and the speaker decoded again through them.
    :return: this round's pass, as ``last``"""
    current, own = last
    nxt: list[Any] = [None] * len(lengths)
    own_next: list[list[Any]] = [[None] * len(lengths) for _ in own]
    for g, (spk, idx) in enumerate(groups.items()):
        tgts = [_target(current[i], [o[i] for o in own], need) for i in idx]
        feats = [load(i) for i in idx]
        nb, mine, fitted = run.speaker(feats, tgts, lengths[idx], [seed, rnd, g])
        book.add(spk, len(idx), sum(1 for t in tgts if t), fitted, rnd)
        for j, i in enumerate(idx):
            nxt[i] = nb[j]
            for k in range(len(own)):
                own_next[k][i] = mine[k][j]
    return nxt, own_next


def _prior(weight: float, token_counts: np.ndarray | None) -> Tensor | None:
    """The training targets' token frequencies (vocab, summing to 1) when the prior term is on."""
    if weight <= 0:
        return None
    if token_counts is None or not np.sum(token_counts):
        raise ValueError("decode.adapt_prior needs the training targets' token counts")
    counts = np.asarray(token_counts, dtype=np.float64)
    return torch.tensor(counts / counts.sum(), dtype=torch.float32)


class _Adaptation:
    """Adapting a model's (or each ensemble member's) input transform to one speaker at a
    time and decoding that speaker through it."""

    def __init__(
        self,
        model: nn.Module,
        settings: DecodeSettings,
        epochs: int,
        lr: float,
        seed: int,
        ctc_weight: float,
        device: torch.device | str,
        terms: tuple[Tensor | None, float, float] = (None, 0.0, 0.0),
    ) -> None:
        """:param terms: the loss's extra terms: (prior, prior_weight, confidence_penalty) as
        for :func:`train_transform`"""
        self.model, self.settings, self.device = model, settings, device
        prior, prior_weight, confidence_penalty = terms
        self.train_kw: dict[str, Any] = dict(
            epochs=epochs,
            lr=lr,
            ctc_weight=ctc_weight,
            device=device,
            prior=prior,
            prior_weight=prior_weight,
            confidence_penalty=confidence_penalty,
        )
        self.members = model_members(model)
        self.workers = member_workers(len(self.members))

    def speaker(
        self,
        feats: list[np.ndarray],
        tgts: list[list[int]],
        lengths: np.ndarray,
        seed: list[int],
    ) -> tuple[list[Any], list[list[Any]], list[list[float]]]:
        """Train each member's transform on ``tgts``, then decode ``feats`` through them: (the
        model's n-best lists, an ensemble's members' own from that pass (``[]`` for a single
        model), each member's losses)."""
        try:
            # members train side by side (threads: torch releases the GIL in its kernels;
            # each member's result is the same as alone)
            jobs = [
                dict(model=m, feats=feats, targets=tgts, seed=seed + [k], **self.train_kw)
                for k, m in enumerate(self.members)
            ]
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                fitted = list(pool.map(lambda job: train_transform(**job)[1], jobs))
            s, dev = self.settings, self.device
            nb, mine, _ = transcribe_members(self.model, lengths, feats.__getitem__, s, device=dev)
        finally:
            for member in self.members:
                member.input_transform = None
        return nb, mine, fitted


def _target(nbest: list[tuple[list[int], float]], own: list[Any], need: int) -> list[int]:
    """The last pass's transcript, or nothing when fewer than ``need`` of the members' own
    hypotheses (``own``) equal it."""
    hyp = _best(nbest)
    return hyp if sum(_best(o) == hyp for o in own) >= need else []


def _log_speaker(
    log: Any, spk: str, n: int, trained: int, rnd: int, rounds: int, losses: list[list[Any]]
) -> None:
    last = [m[-1] for m in losses if m and m[-1]]
    log.info(
        "adapt    %s: %d utterances (%d trained on), round %d/%d, loss per token %s",
        spk,
        n,
        trained,
        rnd + 1,
        rounds,
        ", ".join(f"{m[0]:.3f} -> {m[-1]:.3f}" for m in last) or "(no targets)",
    )


def _best(nbest: list[tuple[list[int], float]]) -> list[int]:
    return list(nbest[0][0]) if nbest else []


def adapt_as_configured(
    model: nn.Module,
    lengths: np.ndarray,
    load: Callable[[int], np.ndarray],
    speakers: list[str],
    cfg: Any,
    *,
    seed: int,
    loss_ctc_weight: float,
    settings: DecodeSettings,
    device: torch.device | str,
    log: Any,
    token_counts: np.ndarray | None = None,
) -> dict[str, Any]:
    """:func:`adapt_and_transcribe` with a recipe's ``decode.adapt_*`` settings (``cfg``): the
    decode stage and ``transcribe`` with speakers both adapt through it."""
    return adapt_and_transcribe(
        model,
        lengths,
        load,
        speakers,
        epochs=cfg.adapt_epochs,
        lr=cfg.adapt_lr,
        rounds=cfg.adapt_rounds,
        targets=cfg.adapt_targets,
        seed=seed,
        loss_ctc_weight=loss_ctc_weight,
        settings=settings,
        device=device,
        log=log,
        prior_weight=cfg.adapt_prior,
        token_counts=token_counts,
        confidence_penalty=cfg.adapt_confidence_penalty,
    )
