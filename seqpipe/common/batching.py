"""Token-based batching.

Training batches hold at most ``max_tokens`` *real* tokens (source + target, no padding) and
``max_sentences`` sentences. Sentences are shuffled per epoch with ``seed + epoch``, sorted by
length inside large pools (so a batch holds similar lengths and little padding), cut into
batches, and the batches shuffled. The order is a pure function of (seed, epoch), so a resumed
run continues at the same position with the same batches.

Decoding batches are length-sorted by source tokens; callers restore input order.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import torch

from seqpipe.common.vocab import PAD_ID


def _cut(
    order: np.ndarray, cost: np.ndarray, max_tokens: int, max_sentences: int
) -> list[np.ndarray]:
    batches: list[np.ndarray] = []
    start, tokens = 0, 0
    for i, idx in enumerate(order):
        c = int(cost[idx])
        n = i - start
        if n > 0 and (tokens + c > max_tokens or n >= max_sentences):
            batches.append(order[start:i])
            start, tokens = i, 0
        tokens += c
    if start < len(order):
        batches.append(order[start:])
    return batches


def train_batches(
    src_len: np.ndarray,
    tgt_len: np.ndarray,
    *,
    max_tokens: int,
    max_sentences: int,
    seed: int,
    epoch: int,
    pool_batches: int = 100,
    shortest_first: bool = False,
) -> list[np.ndarray]:
    """Batches of sentence indices for one epoch (deterministic in seed and epoch).

    ``shortest_first`` (a curriculum, SortaGrad of Deep Speech 2): the whole epoch sorted by
    length and its batches taken shortest first instead of shuffled.
    """
    n = len(src_len)
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(n)
    cost = src_len.astype(np.int64) + tgt_len.astype(np.int64) + 1  # + EOS
    if shortest_first:
        key = src_len[perm].astype(np.int64) * 4096 + tgt_len[perm]
        return _cut(perm[np.argsort(key, kind="stable")], cost, max_tokens, max_sentences)
    mean = max(1.0, float(cost.mean())) if n else 1.0
    pool = max(1, int(pool_batches * max_tokens / mean))
    batches: list[np.ndarray] = []
    for start in range(0, n, pool):
        chunk = perm[start : start + pool]
        # sort by (src, tgt) length inside the pool: stable, so ties keep the shuffled order
        key = src_len[chunk].astype(np.int64) * 4096 + tgt_len[chunk]
        chunk = chunk[np.argsort(key, kind="stable")]
        batches.extend(_cut(chunk, cost, max_tokens, max_sentences))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def decode_batches(
    src_len: np.ndarray, max_tokens: int, max_sentences: int = 1024
) -> list[np.ndarray]:
    """Length-sorted batches of indices (longest first) holding at most ``max_tokens`` padded
    source tokens each."""
    order = np.argsort(-src_len.astype(np.int64), kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    longest = 0
    for i, idx in enumerate(order):
        length = max(1, int(src_len[idx]) + 1)
        n = i - start
        if n == 0:
            longest = length
        elif (n + 1) * longest > max_tokens or n >= max_sentences:
            batches.append(order[start:i])
            start, longest = i, length
    if start < len(order):
        batches.append(order[start:])
    return batches


def pad_batch(
    seqs: list[np.ndarray], prefix: int | None = None, suffix: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad id sequences into batch x max_len (int64) with optional BOS/EOS; also lengths."""
    extra = (prefix is not None) + (suffix is not None)
    lens = np.fromiter((len(s) + extra for s in seqs), dtype=np.int64, count=len(seqs))
    out = np.full((len(seqs), int(lens.max(initial=1))), PAD_ID, dtype=np.int64)
    start = 1 if prefix is not None else 0
    for i, s in enumerate(seqs):
        if prefix is not None:
            out[i, 0] = prefix
        out[i, start : start + len(s)] = s
        if suffix is not None:
            out[i, start + len(s)] = suffix
    return torch.from_numpy(out), torch.from_numpy(lens)


def recipe_train_batches(
    src_len: np.ndarray, tgt_len: np.ndarray, recipe: Any, epoch: int
) -> list[np.ndarray]:
    """One epoch's batches under the recipe's train: keys (token budget, sentence cap, seed,
    sortagrad curriculum); source lengths are tokens (MT) or feature frames (ASR)."""
    cfg = recipe.train
    return train_batches(
        src_len,
        tgt_len,
        max_tokens=cfg.max_tokens,
        max_sentences=cfg.max_sentences,
        seed=recipe.train_seed(),
        epoch=epoch,
        shortest_first=epoch < cfg.sortagrad,  # epoch counts from 0
    )


class DeviceBatch:
    """Mixin of a training batch dataclass: its tensors move to the device together, except
    ``HOST_FIELDS`` (lengths that packing and CTC read on the host). ``pin_memory`` is what a
    ``torch.utils.data.DataLoader`` calls to pin a batch (a non-blocking copy then follows)."""

    HOST_FIELDS: ClassVar[tuple[str, ...]] = ()

    def _map(self, fn: Any) -> Any:
        changes = {
            f.name: fn(getattr(self, f.name))
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if isinstance(getattr(self, f.name), torch.Tensor) and f.name not in self.HOST_FIELDS
        }
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def pin_memory(self) -> Any:
        return self._map(lambda t: t.pin_memory())

    def to(self, device: torch.device) -> Any:
        return self._map(lambda t: t.to(device, non_blocking=True))
