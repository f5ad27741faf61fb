"""Token-based training batches (seqpipe.common.batching)."""

from __future__ import annotations

import numpy as np

from seqpipe.common.batching import decode_batches, train_batches


def lengths(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    src = rng.integers(1, 60, n)
    return src, np.maximum(1, src + rng.integers(-5, 6, n))


def batches(shortest_first: bool = False, epoch: int = 0, seed: int = 1) -> list[np.ndarray]:
    src, tgt = lengths()
    return train_batches(
        src,
        tgt,
        max_tokens=1500,
        max_sentences=64,
        seed=seed,
        epoch=epoch,
        shortest_first=shortest_first,
    )


def test_every_sentence_once_and_within_budgets() -> None:
    src, tgt = lengths()
    for shortest_first in (False, True):
        bs = batches(shortest_first)
        assert sorted(np.concatenate(bs).tolist()) == list(range(len(src)))
        for b in bs:
            assert len(b) <= 64
            assert len(b) == 1 or (src[b] + tgt[b] + 1).sum() <= 1500


def test_deterministic_in_seed_and_epoch() -> None:
    same = [a.tolist() for a in batches(epoch=3)] == [b.tolist() for b in batches(epoch=3)]
    other = [a.tolist() for a in batches(epoch=3)] == [b.tolist() for b in batches(epoch=4)]
    assert same and not other


def test_shuffled_batches_hold_similar_lengths() -> None:
    src, _ = lengths()
    spread = np.mean([src[b].max() - src[b].min() for b in batches()])
    assert spread < 5  # length-sorted pools: little padding
    firsts = [int(src[b].max()) for b in batches()]
    assert firsts != sorted(firsts)  # batch order shuffled


def test_shortest_first_orders_the_epoch_by_length() -> None:
    src, _ = lengths()
    bs = batches(shortest_first=True)
    longest = [int(src[b].max()) for b in bs]
    assert longest == sorted(longest)
    assert src[bs[0]].max() <= 2 and src[bs[-1]].min() >= 55
    # ties are broken by the epoch's shuffle, so the curriculum still varies with the seed
    assert [b.tolist() for b in bs] != [b.tolist() for b in batches(shortest_first=True, seed=2)]


def test_decode_batches_are_length_sorted() -> None:
    src, _ = lengths()
    bs = decode_batches(src, max_tokens=500)
    assert sorted(np.concatenate(bs).tolist()) == list(range(len(src)))
    assert all(len(b) * (src[b].max() + 1) <= 500 or len(b) == 1 for b in bs)  # padded
    longest = [int(src[b].max()) for b in bs]
    assert longest == sorted(longest, reverse=True)  # longest first
