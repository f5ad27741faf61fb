"""Decoding CTC outputs: greedy (best path) and prefix beam search, both batched, and the
rescoring of whole hypotheses by several models (ensembles).

Both take ``log_probs`` batch x time x vocab and ``lengths`` (frames per utterance); frames
beyond an utterance's length are ignored, so batched results equal one-at-a-time results.
The blank is ``PAD_ID`` (0). Hypotheses are lists of token ids (no blanks, no BOS/EOS).
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqpipe.common.vocab import PAD_ID

__all__ = ["ctc_greedy", "ctc_prefix_beam_search", "ctc_log_likelihood", "ctc_rescore"]

NEG_INF = float("-inf")


def ctc_greedy(log_probs: Tensor, lengths: Tensor, blank_id: int = PAD_ID) -> list[list[int]]:
    """Best path decoding: argmax per frame, collapse repeats, drop blanks.

    :param log_probs: batch x time x vocab
    :param lengths: batch
    :return: one token list per utterance
    """
    best = log_probs.argmax(dim=-1)  # batch x time
    prev = torch.nn.functional.pad(best[:, :-1], (1, 0), value=blank_id)  # batch x time
    inside = torch.arange(best.size(1), device=best.device)[None] < lengths.to(best.device)[:, None]
    keep = (best != prev) & (best != blank_id) & inside  # batch x time
    return [row[k].tolist() for row, k in zip(best.cpu(), keep.cpu(), strict=True)]


def ctc_prefix_beam_search(
    log_probs: Tensor,
    lengths: Tensor,
    beam_size: int = 10,
    blank_id: int = PAD_ID,
    return_scores: bool = False,
) -> list[list[int]] | tuple[list[list[int]], list[float]]:
    """CTC prefix beam search (Hannun et al., 2014), vectorised over batch x beam x vocab.

    Each hypothesis is a label prefix with two log-probabilities over the frames so far:
    ending in blank (``pb``) and ending in its last label (``pnb``). Per frame, every
    hypothesis either stays (blank, or a repeat of its last label) or grows by one label;
    candidates that reach the same prefix are merged (their probabilities summed), and the
    ``beam_size`` best prefixes by ``logaddexp(pb, pnb)`` survive. The Python loop is over
    frames only.

    Note: beam 1 keeps the best *prefix* (summing its paths), which is greedy's answer when
    frames are peaked but can differ from (and beat) the single best path otherwise.

    :param log_probs: batch x time x vocab log-probabilities
    :param lengths: batch
    :param beam_size: prefixes kept per utterance
    :param return_scores: also return each best prefix's total log-probability
    :return: best prefix per utterance (and scores)
    """
    batch, t_max, vocab = log_probs.shape
    dev = log_probs.device
    lp = log_probs.detach().float()
    lengths = lengths.to(dev)
    k = beam_size
    ninf = torch.tensor(NEG_INF, device=dev)
    pb = torch.full((batch, k), NEG_INF, device=dev)  # batch x beam
    pnb = torch.full((batch, k), NEG_INF, device=dev)
    pb[:, 0] = 0.0  # the empty prefix; other slots are dead
    tokens = torch.zeros(batch, k, max(t_max, 1), dtype=torch.long, device=dev)  # prefixes
    plen = torch.zeros(batch, k, dtype=torch.long, device=dev)  # prefix lengths
    last = torch.full((batch, k), -1, dtype=torch.long, device=dev)  # -1: empty prefix
    phash = torch.zeros(batch, k, dtype=torch.long, device=dev)  # hash of each prefix
    vocab_ids = torch.arange(vocab, device=dev)
    b_idx = torch.arange(batch, device=dev)[:, None]  # batch x 1

    for t in range(t_max):
        x = lp[:, t]  # batch x vocab
        total = torch.logaddexp(pb, pnb)  # batch x beam
        # stay: same prefix, emitting blank or repeating the last label
        x_last = torch.where(last >= 0, torch.gather(x, 1, last.clamp(min=0)), ninf)
        stay_pb = total + x[:, blank_id : blank_id + 1]
        stay_pnb = pnb + x_last
        # grow: prefix + v (after a blank only, when v repeats the last label)
        is_last = vocab_ids[None, None, :] == last[:, :, None]  # batch x beam x vocab
        grow = torch.where(is_last, pb[:, :, None], total[:, :, None]) + x[:, None, :]
        grow[:, :, blank_id] = NEG_INF
        # merge: grow(k, v) reaches prefix j when j = prefix(k) + v and j is alive. Pairs are
        # found by prefix hash, then checked token by token (so a hash collision is harmless).
        child = (
            (phash[:, None, :] == _extend_hash(phash[:, :, None], last[:, None, :]))
            & (plen[:, None, :] == plen[:, :, None] + 1)
            & (total > NEG_INF)[:, None, :]
        )  # batch x parent x child
        child = _verify_children(child, tokens, plen)
        to_child = torch.gather(
            grow, 2, last.clamp(min=0)[:, None, :].expand(batch, k, k)
        )  # b x par x ch
        merged = torch.where(child, to_child, ninf).logsumexp(dim=1)  # batch x child
        stay_pnb = torch.logaddexp(stay_pnb, merged)
        # the merged grow candidates are gone
        grow = grow.masked_fill(_labels_of_children(child, last, vocab), NEG_INF)

        cand = torch.cat(
            [torch.logaddexp(stay_pb, stay_pnb), grow.reshape(batch, k * vocab)], dim=1
        )
        order = torch.sort(cand, dim=1, descending=True, stable=True).indices[:, :k]  # batch x k
        is_stay = order < k
        grow_flat = (order - k).clamp(min=0)
        src = torch.where(is_stay, order, grow_flat // vocab)  # parent slot
        v = grow_flat % vocab  # the new label (grow candidates)
        new_pb = torch.where(is_stay, stay_pb.gather(1, src), ninf)
        new_pnb = torch.where(
            is_stay, stay_pnb.gather(1, src), grow.reshape(batch, -1).gather(1, grow_flat)
        )
        new_tokens = tokens[b_idx, src]  # batch x k x T
        new_plen = plen.gather(1, src)
        # write v at position len(parent) for grow candidates (stay: rewrite what is there)
        pos = new_plen.clamp(max=tokens.size(2) - 1)[:, :, None]
        there = new_tokens.gather(2, pos)[:, :, 0]
        new_tokens.scatter_(2, pos, torch.where(is_stay, there, v)[:, :, None])
        new_plen = new_plen + (~is_stay).long()
        new_last = torch.where(is_stay, last.gather(1, src), v)
        src_hash = phash.gather(1, src)
        new_hash = torch.where(is_stay, src_hash, _extend_hash(src_hash, v))
        # utterances that already ended keep their state
        active = (t < lengths)[:, None]  # batch x 1
        pb = torch.where(active, new_pb, pb)
        pnb = torch.where(active, new_pnb, pnb)
        plen = torch.where(active, new_plen, plen)
        last = torch.where(active, new_last, last)
        tokens = torch.where(active[:, :, None], new_tokens, tokens)
        phash = torch.where(active, new_hash, phash)

    total = torch.logaddexp(pb, pnb)
    best = total.argmax(dim=1)  # first maximum
    hyps = [tokens[b, best[b], : plen[b, best[b]]].tolist() for b in range(batch)]
    if return_scores:
        return hyps, total[torch.arange(batch), best].tolist()
    return hyps


_HASH_MULT = 1_000_003


def _extend_hash(prefix_hash: Tensor, label: Tensor) -> Tensor:
    """Hash of ``prefix + [label]`` (int64, wrapping): ``h * P + label + 1``."""
    return prefix_hash * _HASH_MULT + label + 1


def _verify_children(child: Tensor, tokens: Tensor, plen: Tensor) -> Tensor:
    """Drop (parent, child) pairs whose prefixes differ (hash collisions).

    :param child: batch x parent x child bool (candidate pairs, few)
    :param tokens: batch x beam x T prefixes; plen: batch x beam
    """
    pairs = child.nonzero()  # P x 3: (b, parent, child)
    if pairs.numel() == 0:
        return child
    b, par, ch = pairs.unbind(1)
    cur = int(plen.max())
    if cur == 0:
        return child
    pos = torch.arange(cur, device=tokens.device)[None]
    same = (tokens[b, par, :cur] == tokens[b, ch, :cur]) | (pos >= plen[b, par][:, None])
    child = child.clone()
    child[b, par, ch] = same.all(dim=1)
    return child


def _labels_of_children(child: Tensor, last: Tensor, vocab: int) -> Tensor:
    """Mark, for each parent k, the labels v = last[j] of its children j.

    :param child: batch x parent x child bool
    :param last: batch x child (last label of each child)
    :return: batch x parent x vocab bool
    """
    batch, k, _ = child.shape
    out = torch.zeros(batch, k, vocab, dtype=torch.long, device=child.device)
    out.scatter_add_(2, last.clamp(min=0)[:, None, :].expand(batch, k, k), child.long())
    return out > 0


def ctc_log_likelihood(
    log_probs: Tensor, lengths: Tensor, hyps: list[list[int]], blank_id: int = PAD_ID
) -> Tensor:
    """``log p(hyp | input)`` under CTC (all alignments summed) for one hypothesis per row.

    :param log_probs: batch x time x vocab log-probabilities
    :param lengths: batch
    :param hyps: one token list per row (may be empty)
    :return: batch float tensor; ``-inf`` where a hypothesis cannot fit the frames
    """
    lp = log_probs.detach().float()
    tlens = torch.tensor([len(h) for h in hyps], dtype=torch.long)
    targets = torch.full((len(hyps), max(1, int(tlens.max()) if len(hyps) else 1)), blank_id)
    for i, h in enumerate(hyps):
        targets[i, : len(h)] = torch.tensor(h, dtype=torch.long)
    nll = torch.nn.functional.ctc_loss(
        lp.transpose(0, 1),
        targets.to(lp.device),
        lengths.to(torch.long).cpu(),
        tlens,
        blank=blank_id,
        reduction="none",
        zero_infinity=False,
    )
    return -nll


def ctc_rescore(
    outputs: list[tuple[Tensor, Tensor]], candidates: list[list[list[int]]]
) -> tuple[list[list[int]], list[float]]:
    """Pick, per utterance, the candidate with the highest summed CTC log-likelihood over
    several models (ties: the earliest candidate).

    :param outputs: per model ``(log_probs batch x time x vocab, lengths)``, same utterances
    :param candidates: per utterance its candidate hypotheses (at least one)
    :return: best hypothesis per utterance and its summed log-likelihood
    """
    rows = [u for u, cands in enumerate(candidates) for _ in cands]
    flat = [h for cands in candidates for h in cands]
    index = torch.tensor(rows, dtype=torch.long)
    total = torch.zeros(len(flat))
    for lp, lengths in outputs:
        total += ctc_log_likelihood(lp[index.to(lp.device)], lengths.cpu()[index], flat).cpu()
    best: list[list[int]] = []
    scores: list[float] = []
    start = 0
    for cands in candidates:
        part = total[start : start + len(cands)]
        j = int(torch.argmax(part))  # the first maximum
        best.append(cands[j])
        scores.append(float(part[j]))
        start += len(cands)
    return best, scores
