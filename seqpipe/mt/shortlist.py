"""Lexical shortlists: decode over the target pieces a source sentence can plausibly need.

Most of a CPU decoding step is the output layer (hidden x vocabulary). Marian and CTranslate2
shrink it with a *lexical shortlist*: the target words allowed for a sentence are the most
frequent target words plus, for each of its source words, its likeliest translations. This
module builds that table from the training data alone, by sentence-level co-occurrence:

- ``c(s, t)``: training pairs whose source holds piece ``s`` and whose target holds ``t``;
  candidates of ``s`` ranked by the Dice coefficient ``2 c(s,t) / (c(s) + c(t))``;
- a sentence's allowed set: the ``frequent`` most frequent target pieces, the ``k`` best
  candidates of each of its source pieces (``k`` <= 100), and EOS (never PAD or BOS).

:func:`seqpipe.common.search.beam_search` / ``greedy_search`` take a :class:`VocabSubset`: the union
of the batch's allowed sets (the output layer is computed for those rows of its weight only)
and, per sentence, a mask that keeps every sentence to its own set, so a sentence's output
does not depend on the rest of its batch. With a shortlist, probabilities are normalised over
the sentence's allowed set.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from seqpipe.common.search import VocabSubset
from seqpipe.common.vocab import BOS_ID, EOS_ID, PAD_ID, IdArray


class LexicalShortlist:
    """Co-occurrence translation candidates per source piece (see the module docstring).

    ``starts``/``candidates``: the candidates of source piece ``s`` are
    ``candidates[starts[s]:starts[s + 1]]``, best first; ``by_frequency``: target ids seen in
    training, most frequent first. :meth:`subset` applies ``k`` and ``frequent``.
    """

    MAX_K = 100  # candidates kept per source piece (and the largest usable k)

    def __init__(
        self,
        starts: np.ndarray,
        candidates: np.ndarray,
        by_frequency: np.ndarray,
        tgt_vocab_size: int,
    ) -> None:
        self.starts = np.asarray(starts, dtype=np.int64)
        self.candidates = np.asarray(candidates, dtype=np.int64)
        self.by_frequency = np.asarray(by_frequency, dtype=np.int64)
        self.tgt_vocab_size = int(tgt_vocab_size)

    @classmethod
    def build(
        cls,
        src_seqs: Sequence[np.ndarray],
        tgt_seqs: Sequence[np.ndarray],
        src_vocab_size: int,
        tgt_vocab_size: int,
    ) -> LexicalShortlist:
        """Count co-occurrences over the training pairs (ids without BOS/EOS)."""
        if len(src_seqs) != len(tgt_seqs):
            raise ValueError(f"shortlist: {len(src_seqs)} sources but {len(tgt_seqs)} targets")
        vt = np.int64(tgt_vocab_size)
        c_src = np.zeros(src_vocab_size, dtype=np.int64)
        c_tgt = np.zeros(tgt_vocab_size, dtype=np.int64)
        pair_codes = [np.zeros(0, dtype=np.int64)]
        for s_ids, t_ids in zip(src_seqs, tgt_seqs, strict=True):
            s = np.unique(np.asarray(s_ids, dtype=np.int64))
            t = np.unique(np.asarray(t_ids, dtype=np.int64))
            c_src[s] += 1
            c_tgt[t] += 1
            pair_codes.append((s[:, None] * vt + t[None, :]).ravel())
        codes, counts = np.unique(np.concatenate(pair_codes), return_counts=True)
        src_of, tgt_of = codes // vt, codes % vt
        dice = 2.0 * counts / (c_src[src_of] + c_tgt[tgt_of])
        # per source piece, candidates by Dice (ties: the more frequent target first, then id)
        order = np.lexsort((tgt_of, -c_tgt[tgt_of], -dice, src_of))
        src_of, tgt_of = src_of[order], tgt_of[order]
        # keep the MAX_K best per source piece
        starts = np.searchsorted(src_of, np.arange(src_vocab_size + 1))
        rank = np.arange(len(src_of)) - starts[src_of]
        src_of, tgt_of = src_of[rank < cls.MAX_K], tgt_of[rank < cls.MAX_K]
        starts = np.searchsorted(src_of, np.arange(src_vocab_size + 1))
        by_frequency = np.lexsort((np.arange(tgt_vocab_size), -c_tgt))
        by_frequency = by_frequency[c_tgt[by_frequency] > 0]
        return cls(starts, tgt_of, by_frequency, tgt_vocab_size)

    @classmethod
    def from_tokenized(
        cls, tok_dir: Path, src_vocab_size: int, tgt_vocab_size: int
    ) -> LexicalShortlist:
        """Build from a tokenize artifact's training split (``train.src``/``train.tgt`` ids)."""
        src, tgt = IdArray(tok_dir, "train.src"), IdArray(tok_dir, "train.tgt")
        return cls.build(
            [src[i] for i in range(len(src))],
            [tgt[i] for i in range(len(tgt))],
            src_vocab_size,
            tgt_vocab_size,
        )

    def to_tensors(self) -> dict[str, Tensor]:
        """For an exported model file (int32)."""
        return {
            "starts": torch.from_numpy(self.starts.astype(np.int32)),
            "candidates": torch.from_numpy(self.candidates.astype(np.int32)),
            "by_frequency": torch.from_numpy(self.by_frequency.astype(np.int32)),
            "tgt_vocab_size": torch.tensor(self.tgt_vocab_size),
        }

    @classmethod
    def from_tensors(cls, d: dict[str, Tensor]) -> LexicalShortlist:
        return cls(
            d["starts"].numpy(),
            d["candidates"].numpy(),
            d["by_frequency"].numpy(),
            int(d["tgt_vocab_size"]),
        )

    def allowed(self, src_ids: np.ndarray, k: int, frequent: int) -> np.ndarray:
        """Sorted target ids allowed for one source sentence (EOS included)."""
        if not 0 <= k <= self.MAX_K or frequent < 0:
            raise ValueError(f"shortlist: need 0 <= k <= {self.MAX_K} and frequent >= 0")
        src = np.unique(np.asarray(src_ids, dtype=np.int64))
        src = src[(src >= 0) & (src < len(self.starts) - 1)]
        parts = [np.array([EOS_ID], dtype=np.int64), self.by_frequency[:frequent]]
        for s in src.tolist():
            a = self.starts[s]
            parts.append(self.candidates[a : min(a + k, self.starts[s + 1])])
        ids = np.unique(np.concatenate(parts))
        return ids[(ids != PAD_ID) & (ids != BOS_ID)]

    def subset(
        self,
        batch_src: Sequence[np.ndarray],
        k: int,
        frequent: int,
        device: torch.device | str = "cpu",
    ) -> VocabSubset:
        """The :class:`VocabSubset` of a batch (one row of ``bias`` per sentence, in order)."""
        per_sent = [self.allowed(s, k, frequent) for s in batch_src]
        union = np.unique(np.concatenate([np.array([EOS_ID], dtype=np.int64), *per_sent]))
        union = np.concatenate([[EOS_ID], union[union != EOS_ID]])  # EOS first
        column = np.full(self.tgt_vocab_size, -1, dtype=np.int64)
        column[union] = np.arange(len(union))
        bias = torch.full((len(per_sent), len(union)), float("-inf"))
        for row, ids in enumerate(per_sent):
            bias[row, torch.from_numpy(column[ids])] = 0.0
        return VocabSubset(torch.from_numpy(union).to(device), bias.to(device))
