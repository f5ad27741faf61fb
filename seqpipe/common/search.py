"""Greedy and batched beam search for attention encoder-decoders (MT and ASR).

Search relies only on this model interface (see :mod:`seqpipe.models`):

- ``model.encode(src, src_len) -> EncoderOutput``
- ``model.decoder.prepare_cache(enc)`` / ``reorder_cache(cache, index)``; beam search keeps one
  cache row per sentence, so ``step_logits`` gets ``beam_size`` consecutive rows per cache row
- ``model.decoder.init_state(enc)`` / ``reorder_state(state, index)``
- ``model.decoder.step_logits(prev_tokens, state, cache) -> (logits, state, attn_weights)``
  (greedy search takes their argmax, beam search their log-softmax); with a vocabulary
  subset, a fourth argument ``(projection, bias)`` from ``model.decoder.subset_projection(ids)``

Guarantees:

- sentences are independent: a hypothesis is the same whatever else is in the batch (for
  float models: an int8 model from ``decode.quantize`` quantizes activations per batch);
- finished sentences leave the batch (rows are shrunk with ``index_select``), so the cost of a
  step follows the number of unfinished sentences;
- ``beam_search(beam_size=1)`` gives the same tokens as :func:`greedy_search`;
- with a ``vocab`` subset (:mod:`seqpipe.mt.shortlist`), the output layer is computed for the
  subset's ids only and each sentence keeps to its own allowed ids (still batch-independent);
- the maximum output length is ``floor(max_len_a * source_length + max_len_b)`` tokens (EOS not
  counted), capped by ``max_len``; at that length EOS is forced. The source length is the
  encoder output length (== ``src_len`` for text; after subsampling for audio).

The caller puts the model in ``eval()`` mode; search runs under ``torch.no_grad()``. A model
wrapped in ``DistributedDataParallel`` is unwrapped.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor, nn

from seqpipe.common.vocab import BOS_ID, EOS_ID, PAD_ID
from seqpipe.models.encoders import EncoderOutput

Hypothesis = tuple[list[int], float]  # (token ids without BOS/EOS, score)


class VocabSubset(NamedTuple):
    """What search may emit. ``ids[0]`` is EOS; PAD and BOS are never in ``ids``."""

    ids: Tensor  # V' target ids (long)
    bias: Tensor  # sentences x V' (0 = allowed, -inf = not in the sentence's shortlist)


class PrefixScorer(Protocol):
    """A second scorer over prefixes, combined with the decoder in :func:`beam_search`.

    Used for joint CTC/attention decoding (the CTC prefix scorer lives in
    ``seqpipe.models.ctc``). The joint score of candidate ``c`` after prefix ``g`` is
    ``(1 - ctc_weight) * log p_att(c | g) + ctc_weight * score(g, c)``, where ``score`` is the
    scorer's *incremental* log-score (e.g. ``log p_ctc(g + c) - log p_ctc(g)``; for ``c = EOS``
    the full-sequence score ``log p_ctc(g) - log p_ctc(g ...)`` as the scorer defines it).
    Only the ``pre_beam_size`` best tokens per row under the decoder are scored.

    States are opaque to search; it only passes them back and selects rows with :meth:`select`.
    """

    def init(self, enc: EncoderOutput) -> Any:
        """State for each of the batch's sentences (one row per sentence)."""
        ...

    def score(self, prefixes: Tensor, state: Any, candidate_ids: Tensor) -> tuple[Tensor, Any]:
        """Score candidate continuations.

        :param prefixes: rows x t, tokens generated so far (no BOS)
        :param state: state of each row
        :param candidate_ids: rows x K, candidate next tokens (may include EOS)
        :return: scores rows x K (incremental log-scores), and the new states, one per
            (row, candidate) in row-major order, i.e. row ``r * K + k`` of a state over
            ``rows * K`` rows
        """
        ...

    def select(self, state: Any, index: Tensor) -> Any:
        """Rows ``index`` of ``state`` (select, repeat, reorder). :param index: new_rows"""
        ...


def max_output_lengths(
    src_lengths: Tensor, max_len_a: float, max_len_b: float, max_len: int | None = None
) -> Tensor:
    """Per-sentence maximum number of output tokens (EOS not counted).

    :param src_lengths: batch -> batch (long)
    """
    limits = torch.floor(src_lengths.double() * max_len_a + max_len_b).long().clamp(min=0)
    if max_len is not None:
        limits = limits.clamp(max=max_len)
    return limits


def _constrain(log_probs: Tensor, force_eos: Tensor, subset: bool = False) -> Tensor:
    """Never predict PAD or BOS; rows in ``force_eos`` may only predict EOS.

    :param log_probs: rows x vocab (modified in place and returned); with ``subset`` the
        columns of a :class:`~seqpipe.common.search.VocabSubset` (EOS is column 0, no PAD/BOS)
    :param force_eos: rows, bool
    """
    eos_col = 0 if subset else EOS_ID
    if not subset:
        log_probs[:, PAD_ID] = float("-inf")
        log_probs[:, BOS_ID] = float("-inf")
    if bool(force_eos.any()):
        eos = log_probs[:, eos_col].clone()
        log_probs[force_eos] = float("-inf")
        log_probs[:, eos_col] = eos
    return log_probs


def _subset_projection(decoder: nn.Module, vocab: VocabSubset | None) -> Any:
    """The output layer for a vocabulary subset (built once per batch)."""
    return None if vocab is None else decoder.subset_projection(vocab.ids)


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel``/``DataParallel`` wrapper."""
    return (
        model.module
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel))
        else model
    )


def _length_penalty(length: int, alpha: float) -> float:
    """GNMT length penalty ``((5 + length) / 6) ** alpha`` (1 when alpha is 0)."""
    return ((5.0 + length) / 6.0) ** alpha


@torch.no_grad()
def greedy_search(
    model: nn.Module,
    src: Tensor,
    src_len: Tensor,
    max_len_a: float = 1.5,
    max_len_b: float = 5,
    max_len: int | None = None,
    vocab: VocabSubset | None = None,
    attention: list[list[Tensor]] | None = None,
) -> list[list[int]]:
    """Batched greedy decoding.

    :param src: batch x src_len (ids) or batch x frames x feats
    :param src_len: batch
    :param vocab: optional lexical shortlist of the batch (``bias`` has one row per sentence)
    :param attention: if a list is given, it is filled with one ``[weights]`` per sentence:
        output tokens x encoder positions (the sentence's own length), the attention that
        produced each token
    :return: per input sentence, in input order, the output ids without BOS/EOS
    """
    model = _unwrap(model)
    decoder = model.decoder
    enc = model.encode(src, src_len)
    cache = decoder.prepare_cache(enc)
    state = decoder.init_state(enc)
    batch = enc.lengths.size(0)
    device = enc.outputs.device
    limits = max_output_lengths(enc.lengths, max_len_a, max_len_b, max_len)  # active
    sent_ids = torch.arange(batch, device=device)  # original sentence of each active row
    tokens = torch.empty(batch, 0, dtype=torch.long, device=device)  # active x t
    prev = torch.full((batch,), BOS_ID, dtype=torch.long, device=device)
    results: list[list[int]] = [[] for _ in range(batch)]
    out_proj = _subset_projection(decoder, vocab)
    bias = None if vocab is None else vocab.bias  # active x V'
    keep_att = attention is not None
    att_hist = enc.outputs.new_zeros(batch, 0, enc.outputs.size(1))  # active x t x S
    att_out: list[Tensor] = [att_hist[0]] * batch
    t = 0
    while sent_ids.numel() > 0:
        # argmax of the logits == argmax of the log-probs: no softmax over the vocabulary
        if vocab is None:
            logits, state, att = decoder.step_logits(prev, state, cache)  # active x vocab
        else:
            logits, state, att = decoder.step_logits(prev, state, cache, (out_proj, bias))
        logits = _constrain(logits, limits <= t, vocab is not None)
        prev = logits.argmax(dim=-1)  # active
        if vocab is not None:
            prev = vocab.ids[prev]
        done = prev == EOS_ID
        if bool(done.any()):
            rows = done.nonzero().squeeze(1)
            for sent, hyp in zip(
                sent_ids[rows].tolist(), tokens.index_select(0, rows).tolist(), strict=True
            ):
                results[sent] = hyp
            if keep_att:
                for r, sent in zip(rows.tolist(), sent_ids[rows].tolist(), strict=True):
                    att_out[sent] = att_hist[r, :, : int(enc.lengths[sent])]
            keep = (~done).nonzero().squeeze(1)
            sent_ids, limits, prev = sent_ids[keep], limits[keep], prev[keep]
            tokens = tokens[keep]
            att_hist, att = att_hist[keep], att[keep]
            state = decoder.reorder_state(state, keep)
            cache = decoder.reorder_cache(cache, keep)
            if bias is not None:
                bias = bias.index_select(0, keep)
        tokens = torch.cat([tokens, prev.unsqueeze(1)], dim=1)
        if keep_att:
            att_hist = torch.cat([att_hist, att.unsqueeze(1).to(att_hist.dtype)], dim=1)
        t += 1
    if attention is not None:
        attention.extend([a] for a in att_out)
    return results


@torch.no_grad()
def beam_search(
    model: nn.Module,
    src: Tensor,
    src_len: Tensor,
    beam_size: int = 5,
    alpha: float = 1.0,
    max_len_a: float = 1.5,
    max_len_b: float = 5,
    nbest: int = 1,
    max_len: int | None = None,
    prefix_scorer: PrefixScorer | None = None,
    ctc_weight: float = 0.0,
    pre_beam_size: int | None = None,
    vocab: VocabSubset | None = None,
    attention: list[list[Tensor]] | None = None,
) -> list[list[Hypothesis]]:
    """Batched beam search: all sentences x beams in one tensor, finished sentences removed.

    Each step takes the ``2 * beam_size`` best continuations per sentence; EOS among the first
    ``beam_size`` finish a hypothesis (score = log-prob / ``((5 + len) / 6) ** alpha``, ``len``
    counting EOS), the first ``beam_size`` non-EOS ones stay in the beam. A sentence is done
    when it has ``beam_size`` finished hypotheses or reaches its maximum length.

    :param src: batch x src_len (ids) or batch x frames x feats
    :param src_len: batch
    :param beam_size: beams per sentence
    :param alpha: GNMT length-penalty exponent (0 = raw log-probability)
    :param nbest: hypotheses returned per sentence (<= beam_size)
    :param max_len: global cap on the output length
    :param prefix_scorer: optional :class:`PrefixScorer` (joint CTC/attention decoding)
    :param ctc_weight: weight of the prefix scorer in the joint score
    :param pre_beam_size: tokens per row scored by the prefix scorer
        (default ``ceil(1.5 * beam_size)``)
    :param vocab: optional lexical shortlist of the batch (``bias`` has one row per sentence)
    :param attention: if a list is given, it is filled with one list per sentence: for each
        returned hypothesis, output tokens x encoder positions, the attention of its own path
    :return: per input sentence, in input order, up to ``nbest`` (ids, score), best first
    """
    if beam_size < 1 or not 1 <= nbest <= beam_size:
        raise ValueError(
            f"need beam_size >= 1 and 1 <= nbest <= beam_size, got {beam_size}, {nbest}"
        )
    k = beam_size
    model = _unwrap(model)
    decoder = model.decoder
    enc = model.encode(src, src_len)
    batch = enc.lengths.size(0)
    device = enc.outputs.device
    expand = torch.arange(batch, device=device).repeat_interleave(k)  # batch*k
    # keys projected once; one cache row per sentence, shared by its k beams (rows i*k..i*k+k-1)
    cache = decoder.prepare_cache(enc)
    state = decoder.reorder_state(decoder.init_state(enc), expand)
    out_proj = _subset_projection(decoder, vocab)
    bias = None if vocab is None else vocab.bias.index_select(0, expand)  # active*k x V'
    scorer_state = None
    if prefix_scorer is not None:
        scorer_state = prefix_scorer.select(prefix_scorer.init(enc), expand)
        if pre_beam_size is None:
            pre_beam_size = -(-3 * k // 2)
        pre_beam_size = max(2, pre_beam_size)

    limits = max_output_lengths(enc.lengths, max_len_a, max_len_b, max_len)  # active
    sent_ids = torch.arange(batch, device=device)  # original id of each active sentence
    score_dtype = torch.float64 if enc.outputs.dtype == torch.float64 else torch.float32
    scores = torch.zeros(batch, k, dtype=score_dtype, device=device)  # active x k
    scores[:, 1:] = float("-inf")  # all beams start identical: expand beam 0 only
    n_finished = torch.zeros(batch, dtype=torch.long, device=device)  # active
    tokens = torch.empty(batch * k, 0, dtype=torch.long, device=device)  # active*k x t
    prev = torch.full((batch * k,), BOS_ID, dtype=torch.long, device=device)
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    keep_att = attention is not None
    att_hist = enc.outputs.new_zeros(batch * k, 0, enc.outputs.size(1))  # active*k x t x S
    att_done: list[list[Tensor]] = [[] for _ in range(batch)]  # parallel to `finished`
    beam_offsets = torch.arange(k, device=device)
    n_cand = 2 * k
    cand_rank = torch.arange(n_cand, device=device)
    t = 0
    while sent_ids.numel() > 0:
        n = sent_ids.numel()
        if vocab is None:
            logits, state, att = decoder.step_logits(prev, state, cache)  # n*k x vocab
        else:
            logits, state, att = decoder.step_logits(prev, state, cache, (out_proj, bias))
        log_probs = torch.log_softmax(logits.to(score_dtype), dim=-1)  # n*k x vocab
        force_eos = (limits <= t).repeat_interleave(k)
        log_probs = _constrain(log_probs, force_eos, vocab is not None)

        if prefix_scorer is not None:
            width = min(pre_beam_size, log_probs.size(1))
            att_lp, cand_tok = log_probs.topk(width, dim=1)  # n*k x width
            if vocab is not None:
                cand_tok = vocab.ids[cand_tok]  # subset columns -> target ids
            extra, new_scorer_state = prefix_scorer.score(tokens, scorer_state, cand_tok)
            joint = (1.0 - ctc_weight) * att_lp + ctc_weight * extra.to(score_dtype)
            cand_lp = torch.where(torch.isneginf(att_lp), att_lp, joint)
        else:
            # a per-row top-k first makes the beam-wide top-k small. k + 1 per row suffice:
            # the k best non-EOS continuations of a sentence are each among their row's k + 1
            # best (a row has one EOS), and an EOS below its row's k + 1 best has k better
            # candidates, so it is not among the sentence's k best either
            width = min(k + 1, log_probs.size(1))
            cand_lp, cand_tok = log_probs.topk(width, dim=1)  # n*k x width
            if vocab is not None:
                cand_tok = vocab.ids[cand_tok]

        total = (scores.view(n * k, 1) + cand_lp).view(n, k * width)
        top_scores, top_pos = total.topk(min(n_cand, k * width), dim=1)  # n x 2k
        beam = torch.div(top_pos, width, rounding_mode="floor")
        col = top_pos - beam * width
        src_row = beam + (torch.arange(n, device=device) * k).unsqueeze(1)  # n x 2k, in n*k
        tok = cand_tok[src_row, col]
        is_eos = tok == EOS_ID

        # EOS among the k best finishes a hypothesis
        final = is_eos[:, :k] & ~torch.isneginf(top_scores[:, :k])
        if bool(final.any()):
            penalty = _length_penalty(t + 1, alpha)
            i, j = final.nonzero().unbind(1)  # one host transfer per field, not per hypothesis
            for sent, hyp, score in zip(
                sent_ids[i].tolist(),
                tokens.index_select(0, src_row[i, j]).tolist(),
                top_scores[i, j].tolist(),
                strict=True,
            ):
                finished[sent].append((hyp, score / penalty))
            if keep_att:
                for sent, row in zip(sent_ids[i].tolist(), src_row[i, j].tolist(), strict=True):
                    att_done[sent].append(att_hist[row, :, : int(enc.lengths[sent])])
            n_finished += final.sum(dim=1)

        # the k best non-EOS continuations stay in the beam
        rank = is_eos.long() * n_cand + cand_rank[: is_eos.size(1)]
        sel = rank.topk(k, dim=1, largest=False).indices  # n x k, in rank order
        new_scores = top_scores.gather(1, sel)
        new_scores = new_scores.masked_fill(is_eos.gather(1, sel), float("-inf"))
        new_rows = src_row.gather(1, sel)  # n x k
        new_tok = tok.gather(1, sel)  # n x k
        new_col = col.gather(1, sel)  # n x k, candidate column (prefix scorer states)

        done = (n_finished >= k) | (limits <= t)
        keep = (~done).nonzero().squeeze(1)
        if keep.numel() < n:  # drop finished sentences from the batch
            sent_ids, limits, n_finished = sent_ids[keep], limits[keep], n_finished[keep]
            new_scores, new_rows = new_scores[keep], new_rows[keep]
            new_tok, new_col = new_tok[keep], new_col[keep]
            kept_rows = (keep.unsqueeze(1) * k + beam_offsets).view(-1)
            cache = decoder.reorder_cache(cache, keep)
            if bias is not None:  # rows of one sentence share their bias: no reorder in-beam
                bias = bias.index_select(0, kept_rows)
        rows = new_rows.view(-1)
        state = decoder.reorder_state(state, rows)
        if prefix_scorer is not None:
            cand_index = rows * width + new_col.view(-1)  # rows of the (row, candidate) states
            scorer_state = prefix_scorer.select(new_scorer_state, cand_index)
        tokens = torch.cat([tokens.index_select(0, rows), new_tok.view(-1, 1)], dim=1)
        if keep_att:  # the attention that chose each kept token joins its row's history
            step = att.index_select(0, rows).unsqueeze(1).to(att_hist.dtype)
            att_hist = torch.cat([att_hist.index_select(0, rows), step], dim=1)
        prev = new_tok.view(-1)
        scores = new_scores
        t += 1

    results: list[list[Hypothesis]] = []
    for sent, hyps in enumerate(finished):
        order = sorted(range(len(hyps)), key=lambda h: hyps[h][1], reverse=True)[:nbest]
        results.append([hyps[h] for h in order] if hyps else [([], float("-inf"))])
        if attention is not None:
            empty = enc.outputs.new_zeros(0, int(enc.lengths[sent]))
            attention.append([att_done[sent][h] for h in order] if hyps else [empty])
    return results


def decode_batch(
    model: nn.Module,
    src: Tensor,
    src_len: Tensor,
    s: Any,
    vocab: VocabSubset | None = None,
    prefix_scorer: PrefixScorer | None = None,
    attention: list[list[Tensor]] | None = None,
) -> list[list[Hypothesis]]:
    """One padded batch through greedy or beam search as the decoding settings ``s``
    (:class:`seqpipe.common.settings.DecodeSettings`) say: n-best lists in batch order
    (``attention``: filled as the searches do)."""
    if s.greedy:
        hyps = greedy_search(
            model, src, src_len, s.max_len_a, s.max_len_b, vocab=vocab, attention=attention
        )
        return [[(h, 0.0)] for h in hyps]
    return beam_search(
        model,
        src,
        src_len,
        beam_size=s.beam_size,
        alpha=s.alpha,
        max_len_a=s.max_len_a,
        max_len_b=s.max_len_b,
        nbest=s.nbest,
        vocab=vocab,
        prefix_scorer=prefix_scorer,
        ctc_weight=s.ctc_weight if prefix_scorer is not None else 0.0,
        attention=attention,
    )
