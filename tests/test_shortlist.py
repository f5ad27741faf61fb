"""Lexical shortlists (seqpipe.mt.shortlist) and search over a vocabulary subset.

Uses the tiny reverse-task model of test_search.py: there a source symbol's translation is the
symbol itself, so a co-occurrence table must rank it first.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqpipe.common.search import beam_search, greedy_search
from seqpipe.models import BOS_ID, EOS_ID, PAD_ID
from seqpipe.mt.shortlist import LexicalShortlist
from tests.test_search import VOCAB, mixed_sources, reverse_batch, trained, trained64  # noqa: F401


def reverse_table(n: int = 500) -> LexicalShortlist:
    src, lengths, _, tgt_out = reverse_batch(torch.Generator().manual_seed(9), n)
    srcs = [src[i, :m].numpy() for i, m in enumerate(lengths.tolist())]
    tgts = [tgt_out[i, :m].numpy() for i, m in enumerate(lengths.tolist())]
    return LexicalShortlist.build(srcs, tgts, VOCAB, VOCAB)


def rows(src: torch.Tensor, lengths: torch.Tensor) -> list[np.ndarray]:
    return [src[i, :m].numpy() for i, m in enumerate(lengths.tolist())]


def test_dice_ranking_golden() -> None:
    # "a"=4 always with "x"=10 (3 pairs); "b"=5 twice with "y"=11, once with "x"
    srcs = [np.array([4, 5]), np.array([4]), np.array([4, 5]), np.array([6])]
    tgts = [np.array([10, 11]), np.array([10]), np.array([10, 11]), np.array([12, 10])]
    table = LexicalShortlist.build(srcs, tgts, 8, 14)
    cand = lambda s: table.candidates[table.starts[s] : table.starts[s + 1]].tolist()  # noqa: E731
    # Dice(4,10) = 2*3/(3+4) = .857 > Dice(4,11) = 2*2/(3+2) = .8
    assert cand(4) == [10, 11]
    # Dice(5,11) = 1 > Dice(5,10) = 2*2/(2+4) = .667
    assert cand(5) == [11, 10]
    # Dice(6,12) = 1 > Dice(6,10) = 2/5
    assert cand(6) == [12, 10]
    assert cand(7) == []
    assert table.by_frequency.tolist() == [10, 11, 12]  # by count, then id
    assert table.allowed(np.array([5, 6]), k=1, frequent=0).tolist() == [EOS_ID, 11, 12]
    allowed = table.allowed(np.array([7]), k=5, frequent=1)
    assert allowed.tolist() == [EOS_ID, 10]
    sub = table.subset([np.array([4]), np.array([6])], k=1, frequent=0)
    assert sub.ids.tolist() == [EOS_ID, 10, 12]  # EOS first, then the union
    assert torch.isinf(sub.bias).tolist() == [[False, False, True], [False, True, False]]


def test_reverse_table_ranks_the_symbol_itself_first() -> None:
    table = reverse_table()
    for s in range(4, VOCAB):
        assert table.candidates[table.starts[s]] == s
    for s in (PAD_ID, BOS_ID, EOS_ID):
        assert table.starts[s] == table.starts[s + 1]  # specials never occur in training ids


def test_full_shortlist_greedy_equals_full_vocabulary(trained64) -> None:  # noqa: F811
    src, lengths = mixed_sources(32, seed=7)
    table = reverse_table()
    vocab = table.subset(rows(src, lengths), k=100, frequent=VOCAB)
    assert sorted(vocab.ids.tolist()) == [EOS_ID, *range(4, VOCAB)]
    assert greedy_search(trained64, src, lengths, vocab=vocab) == greedy_search(
        trained64, src, lengths
    )


def test_shortlist_keeps_each_sentence_to_its_own_set(trained) -> None:  # noqa: F811
    src, lengths, _, _ = reverse_batch(torch.Generator().manual_seed(123), 100)
    table = reverse_table()
    vocab = table.subset(rows(src, lengths), k=1, frequent=0)  # own symbols + EOS
    refs = [src[i, :n].flip(0).tolist() for i, n in enumerate(lengths.tolist())]
    greedy = greedy_search(trained, src, lengths, vocab=vocab)
    beams = beam_search(trained, src, lengths, beam_size=4, nbest=4, vocab=vocab)
    for i, n in enumerate(lengths.tolist()):
        own = set(src[i, :n].tolist())
        assert set(greedy[i]) <= own
        for hyp, _ in beams[i]:
            assert set(hyp) <= own, (i, hyp, own)
    # greedy: the right symbol is always allowed, so a sentence right without the shortlist
    # stays right with it
    full = greedy_search(trained, src, lengths)
    right = [i for i, r in enumerate(refs) if full[i] == r]
    assert len(right) >= 90
    assert all(greedy[i] == refs[i] for i in right)


@pytest.mark.parametrize("k", [1, 3])
def test_shortlist_beam_batched_equals_alone(trained64, k: int) -> None:  # noqa: F811
    src, lengths = mixed_sources(64, seed=1)
    table = reverse_table()
    batched = beam_search(
        trained64,
        src,
        lengths,
        beam_size=5,
        nbest=5,
        vocab=table.subset(rows(src, lengths), k=k, frequent=2),
    )
    for i, n in enumerate(lengths.tolist()):
        one = src[i : i + 1, :n]
        alone = beam_search(
            trained64,
            one,
            lengths[i : i + 1],
            beam_size=5,
            nbest=5,
            vocab=table.subset([one[0].numpy()], k=k, frequent=2),
        )[0]
        assert [h for h, _ in batched[i]] == [h for h, _ in alone], i
        torch.testing.assert_close(
            torch.tensor([s for _, s in batched[i]]), torch.tensor([s for _, s in alone])
        )


def test_tensors_round_trip() -> None:
    table = reverse_table()
    back = LexicalShortlist.from_tensors(table.to_tensors())
    src = np.array([4, 7, 9])
    assert back.allowed(src, 3, 2).tolist() == table.allowed(src, 3, 2).tolist()


def test_bad_settings() -> None:
    table = reverse_table()
    with pytest.raises(ValueError, match="k <= 100"):
        table.allowed(np.array([4]), k=101, frequent=0)
