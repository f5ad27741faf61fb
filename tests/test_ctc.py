"""CTC head, loss, greedy and prefix beam search, and the CTC prefix scorer.

The scorer's anchor: the prefix score of a full sequence followed by EOS equals
``-ctc_loss`` of that sequence, computed by torch independently.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from seqpipe.asr.ctc_search import (
    ctc_greedy,
    ctc_log_likelihood,
    ctc_prefix_beam_search,
    ctc_rescore,
)
from seqpipe.models.ctc import CTCHead, CTCPrefixScorer, ctc_loss

try:
    from seqpipe.models import BOS_ID, EOS_ID, PAD_ID
except ImportError:  # pragma: no cover - until seqpipe.models exists
    PAD_ID, BOS_ID, EOS_ID = 0, 2, 3

torch.set_num_threads(1)
BLANK = PAD_ID


def seq_logprob(log_probs: Tensor, length: int, seq: list[int]) -> float:
    """log p_ctc(seq | x) for one utterance (log_probs time x vocab), via torch's CTC loss."""
    return -ctc_loss(
        log_probs[None, :length],
        torch.tensor([length]),
        torch.tensor([seq or [1]]),
        torch.tensor([len(seq)]),
    ).item()


def random_log_probs(gen: torch.Generator, b: int, t: int, v: int, sharp: float = 1.0) -> Tensor:
    logits = torch.randn(b, t, v, generator=gen, dtype=torch.float64) * sharp
    logits[:, :, BOS_ID] = -1e4  # BOS/EOS are never CTC labels
    logits[:, :, EOS_ID] = -1e4
    return logits.log_softmax(-1).float()


# ------------------------------------------------------------------------------- head, loss


def test_ctc_head_and_loss() -> None:
    torch.manual_seed(0)
    head = CTCHead(encoder_size=6, vocab_size=9)
    lp = head(torch.randn(2, 5, 6))
    assert lp.shape == (2, 5, 9)
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(2, 5))
    targets = torch.tensor([[4, 5, 4], [6, PAD_ID, PAD_ID]])
    loss = ctc_loss(lp, torch.tensor([5, 3]), targets, torch.tensor([3, 1]))
    ref = F.ctc_loss(
        lp.transpose(0, 1),
        targets,
        torch.tensor([5, 3]),
        torch.tensor([3, 1]),
        blank=0,
        reduction="none",
    )
    torch.testing.assert_close(loss, ref.sum())
    # impossible (target longer than the input): 0, not inf
    impossible = ctc_loss(
        lp[:1, :2], torch.tensor([2]), torch.tensor([[4, 4, 4]]), torch.tensor([3])
    )
    assert impossible.item() == 0.0


# ------------------------------------------------------------------------------- search


def test_greedy_on_hand_made_log_probs() -> None:
    a, b = 4, 5
    # best path; the last two frames are padding in row 1
    frames = [a, a, BLANK, a, b, b, BLANK, b, a, a]  # fmt: skip
    lp = torch.full((2, len(frames), 7), -5.0)
    for t, tok in enumerate(frames):
        lp[:, t, tok] = -0.1
    assert ctc_greedy(lp, torch.tensor([10, 8])) == [[a, a, b, b, a], [a, a, b, b]]
    assert ctc_greedy(lp, torch.tensor([0, 1])) == [[], [a]]


def test_beam_one_equals_greedy_on_peaked_posteriors() -> None:
    gen = torch.Generator().manual_seed(1)
    lp = random_log_probs(gen, 6, 40, 12, sharp=8.0)
    lengths = torch.tensor([40, 33, 17, 40, 5, 1])
    assert ctc_prefix_beam_search(lp, lengths, beam_size=1) == ctc_greedy(lp, lengths)


def test_batched_equals_one_at_a_time() -> None:
    gen = torch.Generator().manual_seed(2)
    lp = random_log_probs(gen, 5, 30, 9)
    lengths = torch.tensor([30, 12, 25, 3, 18])
    for beam in (1, 4):
        batched, scores = ctc_prefix_beam_search(lp, lengths, beam_size=beam, return_scores=True)
        for i in range(5):
            n = int(lengths[i])
            alone, s = ctc_prefix_beam_search(
                lp[i : i + 1, :n], lengths[i : i + 1], beam, return_scores=True
            )
            assert alone[0] == batched[i]
            assert abs(s[0] - scores[i]) < 1e-4
    # garbage in padded frames changes nothing
    noisy = lp.clone()
    for i, n in enumerate(lengths.tolist()):
        noisy[i, n:] = random_log_probs(gen, 1, 30 - n, 9)[0] if n < 30 else noisy[i, n:]
    assert ctc_prefix_beam_search(noisy, lengths, 4) == ctc_prefix_beam_search(lp, lengths, 4)


def test_prefix_beam_beats_greedy_where_greedy_is_wrong() -> None:
    # two frames, p(blank) = 0.6, p(a) = 0.4: best path "" (0.36), best labelling "a" (0.64)
    a = 4
    probs = torch.full((1, 2, 6), 1e-6)
    probs[0, :, BLANK], probs[0, :, a] = 0.6, 0.4
    lp = (probs / probs.sum(-1, keepdim=True)).log()
    lengths = torch.tensor([2])
    greedy = ctc_greedy(lp, lengths)[0]
    beam, score = ctc_prefix_beam_search(lp, lengths, beam_size=3, return_scores=True)
    assert greedy == [] and beam[0] == [a]
    assert seq_logprob(lp[0], 2, beam[0]) > seq_logprob(lp[0], 2, greedy) + 0.5
    assert abs(score[0] - seq_logprob(lp[0], 2, [a])) < 1e-4


def test_wide_beam_is_exact_on_a_small_problem() -> None:
    """With a beam wider than the number of prefixes nothing is pruned: the result is the
    most probable labelling (brute force over all of them) with its exact probability."""
    gen = torch.Generator().manual_seed(3)
    t = 5
    lp = random_log_probs(gen, 1, t, 6)  # labels 1, 4, 5 (0 blank; 2, 3 impossible)
    labels = [1, 4, 5]
    all_seqs = [list(s) for n in range(t + 1) for s in itertools.product(labels, repeat=n)]
    scored = [(seq_logprob(lp[0], t, s), s) for s in all_seqs if _feasible(s, t)]
    best_score, best_seq = max(scored)
    hyp, score = ctc_prefix_beam_search(
        lp, torch.tensor([t]), beam_size=len(all_seqs), return_scores=True
    )
    assert hyp[0] == best_seq and abs(score[0] - best_score) < 1e-4


def _brute_force_log_likelihood(lp: Tensor, seq: list[int]) -> float:
    """log of the summed probability of every frame labelling that collapses to ``seq``."""
    t, v = lp.shape
    total = 0.0
    for path in itertools.product(range(v), repeat=t):
        out = [c for i, c in enumerate(path) if c != BLANK and (i == 0 or path[i - 1] != c)]
        if out == seq:
            total += float(torch.exp(sum(lp[i, c].double() for i, c in enumerate(path))))
    return float(torch.log(torch.tensor(total, dtype=torch.float64))) if total else float("-inf")


def test_ctc_log_likelihood_sums_every_alignment() -> None:
    gen = torch.Generator().manual_seed(5)
    lp = random_log_probs(gen, 4, 4, 6)[:, :, [0, 1, 4, 5]].log_softmax(-1)  # 4 symbols
    lengths = torch.tensor([4, 3, 4, 2])
    hyps = [[1, 2], [3], [], [1, 1, 2]]  # the last cannot fit 2 frames
    got = ctc_log_likelihood(lp, lengths, hyps)
    for i, h in enumerate(hyps):
        want = _brute_force_log_likelihood(lp[i, : lengths[i]], h)
        if want == float("-inf"):
            assert got[i] == float("-inf")
        else:
            assert abs(float(got[i]) - want) < 1e-4, (h, float(got[i]), want)


def test_rescoring_picks_the_best_summed_likelihood() -> None:
    """Model A mildly prefers [1], model B strongly prefers [2]: together they pick [2], with
    the sum of both models' log-likelihoods as its score; ties keep the first candidate."""
    edge = [0.9, 0.05, 0.05]  # frames 0 and 2: blank
    a = torch.tensor([[edge, [0.1, 0.6, 0.3], edge]]).log()  # 1 x 3 frames x 3 symbols
    b = torch.tensor([[edge, [0.05, 0.05, 0.9], edge]]).log()
    lengths = torch.tensor([3])
    outputs = [(a, lengths), (b, lengths)]
    best, score = ctc_rescore(outputs, [[[1], [2]]])
    la, lb = (ctc_log_likelihood(x.expand(2, 3, 3), lengths.expand(2), [[1], [2]]) for x in (a, b))
    assert la[0] > la[1] and (la + lb)[1] > (la + lb)[0]
    assert best == [[2]] and abs(score[0] - float(la[1] + lb[1])) < 1e-5
    assert ctc_rescore([(a, lengths), (a, lengths)], [[[1], [1]]])[0] == [[1]]
    # two utterances with different numbers of candidates, batched
    two = [(torch.cat([a, b]), torch.tensor([3, 3]))]
    assert ctc_rescore(two, [[[2], [1]], [[2]]])[0] == [[1], [2]]


def _feasible(seq: list[int], t: int) -> bool:
    repeats = sum(1 for x, y in zip(seq, seq[1:], strict=False) if x == y)
    return len(seq) + repeats <= t


# ------------------------------------------------------------------------------- prefix scorer


def test_prefix_score_of_full_sequence_equals_minus_ctc_loss() -> None:
    """Drive three hypotheses (mixed lengths) token by token, in one batch, then EOS."""
    gen = torch.Generator().manual_seed(4)
    lengths = torch.tensor([14, 9, 6])
    lp = random_log_probs(gen, 3, 14, 9)
    targets = [[4, 5, 5, 6, 4], [7, 7, 8], [6]]
    scorer = CTCPrefixScorer(eos_id=EOS_ID)
    state = scorer.init(lp, lengths)
    last = torch.full((3,), BOS_ID)
    delta_sum = torch.zeros(3)
    done = [False] * 3
    finals = [0.0] * 3
    for step in range(max(map(len, targets)) + 1):
        # candidates: the next target token (or EOS at the end) first, then distractors
        nxt = [targets[i][step] if step < len(targets[i]) else EOS_ID for i in range(3)]
        cands = torch.tensor([[n, EOS_ID if n != EOS_ID else 8, 5, BLANK] for n in nxt])
        scores, cand_state = scorer.score(state, last, cands)
        assert scores.shape == (3, 4) and torch.isinf(scores[:, 3]).all()  # blank: -inf
        delta_sum += torch.where(torch.tensor(done), 0.0, scores[:, 0] - state.prefix_scores)
        for i in range(3):
            if nxt[i] == EOS_ID and not done[i]:
                finals[i], done[i] = scores[i, 0].item(), True
        state = scorer.select(cand_state, torch.arange(3), torch.zeros(3, dtype=torch.long))
        last = cands[:, 0]
    for i in range(3):
        expected = seq_logprob(lp[i], int(lengths[i]), targets[i])
        assert abs(finals[i] - expected) < 1e-4, (i, finals[i], expected)
        assert abs(delta_sum[i].item() - expected) < 1e-4  # the deltas telescope


def test_prefix_scores_are_consistent_and_select_reorders() -> None:
    """psi(g) = p(g exactly) + sum_c psi(g + c); and beam expansion/reordering with select."""
    gen = torch.Generator().manual_seed(5)
    v = 8
    lp = random_log_probs(gen, 2, 10, v, sharp=2.0)
    lengths = torch.tensor([10, 7])
    scorer = CTCPrefixScorer(eos_id=EOS_ID)
    state = scorer.init(lp, lengths)
    # expand to 2 hypotheses per utterance: rows (0, 0, 1, 1)
    state = scorer.select(state, torch.tensor([0, 0, 1, 1]))
    g = torch.tensor([[4], [6], [4], [5]])
    scores, cand = scorer.score(state, torch.full((4,), BOS_ID), g)
    state = scorer.select(cand, torch.arange(4), torch.zeros(4, dtype=torch.long))
    labels = [c for c in range(v) if c not in (BLANK, BOS_ID, EOS_ID)]
    all_c = torch.tensor([[EOS_ID] + labels] * 4)
    ext, _ = scorer.score(state, g[:, 0], all_c)
    torch.testing.assert_close(ext.logsumexp(dim=1), state.prefix_scores, atol=1e-4, rtol=0)
    # reversing the rows reverses the scores
    rev = scorer.select(state, torch.tensor([3, 2, 1, 0]))
    ext_rev, _ = scorer.score(rev, g.flip(0)[:, 0], all_c)
    torch.testing.assert_close(ext_rev, ext.flip(0))
    # the empty prefix has probability 1
    torch.testing.assert_close(scorer.init(lp, lengths).prefix_scores, torch.zeros(2))
    with pytest.raises(ValueError, match="last_tokens"):
        scorer.score(state, torch.full((4,), 7), all_c)


def test_joint_decoding_with_ctc_weight_one_scores_log_p_ctc() -> None:
    """Through ``seqpipe.common.search.beam_search``: with ``ctc_weight=1`` and no length penalty a
    finished hypothesis' score is the sum of CTC deltas, i.e. ``log p_ctc(y | x)``."""
    search = pytest.importorskip("seqpipe.common.search")
    from seqpipe.models import build_model
    from seqpipe.models.ctc import CTCSearchScorer
    from seqpipe.models.frontends import Conv2dSubsampling

    torch.manual_seed(0)
    vocab = 8
    model = build_model(
        cell="gru",
        emb_size=8,
        hidden_size=8,
        dropout=0.0,
        tgt_vocab_size=vocab,
        frontend=Conv2dSubsampling(input_size=20, channels=4, output_size=12),
    ).eval()
    head = CTCHead(model.encoder.output_size, vocab).eval()
    feats = torch.randn(3, 60, 20)
    lengths = torch.tensor([60, 41, 23])
    with torch.no_grad():
        hyps = search.beam_search(
            model,
            feats,
            lengths,
            beam_size=3,
            nbest=3,
            alpha=0.0,
            max_len_b=4,
            prefix_scorer=CTCSearchScorer(head),
            ctc_weight=1.0,
        )
        enc = model.encode(feats, lengths)
        lp = head(enc.outputs)
    for i, nbest in enumerate(hyps):
        for tokens, score in nbest:
            n = int(enc.lengths[i])
            expected = -F.ctc_loss(
                lp[i : i + 1, :n].transpose(0, 1),
                torch.tensor([tokens or [1]]),
                torch.tensor([n]),
                torch.tensor([len(tokens)]),
                blank=BLANK,
                reduction="sum",
            ).item()
            assert abs(score - expected) < 1e-3, (i, tokens, score, expected)
