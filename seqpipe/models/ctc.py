"""Connectionist Temporal Classification: output layer, loss, and the CTC prefix scorer for
joint CTC/attention beam search.

The CTC blank is :data:`~seqpipe.models.PAD_ID` (0): padding is never a target, so the id
is free for the blank.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqpipe.common.vocab import EOS_ID, PAD_ID

__all__ = ["CTCHead", "ctc_loss", "CTCPrefixScorer", "CTCPrefixState", "CTCSearchScorer"]

BLANK_ID = PAD_ID
LOG_ZERO = -1e10  # finite "log 0": keeps differences of scores free of NaN


class CTCHead(nn.Module):
    """Linear projection of encoder states to log-probabilities over the vocabulary
    (blank = ``PAD_ID``)."""

    def __init__(self, encoder_size: int, vocab_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(encoder_size, vocab_size)

    def forward(self, encoder_outputs: Tensor) -> Tensor:
        """
        :param encoder_outputs: batch x time x encoder_size
        :return: log-probabilities, batch x time x vocab_size
        """
        return F.log_softmax(self.proj(self.dropout(encoder_outputs)), dim=-1)


def ctc_loss(log_probs: Tensor, lengths: Tensor, targets: Tensor, target_lengths: Tensor) -> Tensor:
    """Summed CTC loss over the batch (divide by what you normalise with).

    Impossible alignments (target longer than the input allows) give 0, not inf
    (``zero_infinity=True``).

    :param log_probs: batch x time x vocab (log-softmax outputs)
    :param lengths: batch, frames per utterance
    :param targets: batch x max_target_len, padded with ``PAD_ID`` (no BOS/EOS)
    :param target_lengths: batch
    :return: scalar, sum over the batch of -log p(target | input)
    """
    return F.ctc_loss(
        log_probs.transpose(0, 1).float(),  # time x batch x vocab
        targets,
        lengths,
        target_lengths,
        blank=BLANK_ID,
        reduction="sum",
        zero_infinity=True,
    )


@dataclass
class CTCPrefixState:
    """CTC prefix scorer state for N hypotheses (or N x K candidates, see ``r``).

    :ivar r: time x 2 x N (x K for candidates): log prob of the prefix over frames 0..t,
        with its last frame a non-blank (``[:, 0]``) or a blank (``[:, 1]``)
    :ivar prefix_scores: N (x K): log CTC prefix probability of each (candidate) prefix
    :ivar last: N (x K): last token of each prefix (-1 for the empty prefix)
    :ivar prefix_len: N (x K): tokens in the prefix (without BOS)
    :ivar utt_index: N: which row of the ``init`` batch a hypothesis belongs to
    :ivar log_probs: time x batch x vocab, the ``init`` log-probs (frames beyond an
        utterance's length: blank with probability 1); shared, never copied by ``select``
    """

    r: Tensor
    prefix_scores: Tensor
    last: Tensor
    prefix_len: Tensor
    utt_index: Tensor
    log_probs: Tensor

    @property
    def is_candidates(self) -> bool:
        """True for the N x K candidate state returned by :meth:`CTCPrefixScorer.score`."""
        return self.r.dim() == 4


class CTCPrefixScorer:
    """CTC prefix scores for joint CTC/attention decoding (Watanabe et al., 2017, Algorithm 2;
    like ESPnet's ``CTCPrefixScoreTH``), vectorised over hypotheses and candidate tokens,
    in log space. The scorer itself holds nothing; everything lives in the state.

    The prefix score of ``h`` is ``log sum_{sequences s starting with h} p_ctc(s | x)``; for
    ``h`` ending in EOS it is the full-sequence probability ``log p_ctc(h | x)``.

    Protocol (what a beam search does)::

        scorer = CTCPrefixScorer(eos_id=EOS_ID)
        state = scorer.init(ctc_log_probs, lengths)   # N = batch rows, empty prefixes
        state = scorer.select(state, rows)            # e.g. expand to beams: rows [N*beam]
        loop:
            cand = attention top-k ids, N x K (any ids; blank gets -inf)
            cand_scores, cand_state = scorer.score(state, last_tokens, cand)     # N x K
            delta = cand_scores - state.prefix_scores[:, None]                  # N x K
            total = (1 - ctc_weight) * att_logp[cand] + ctc_weight * delta
            ... choose M hypotheses: row_index [M] (hyp), cand_index [M] (which candidate)
            state = scorer.select(cand_state, row_index, cand_index)            # M rows

    ``select`` on a candidate state keeps chosen candidates (their prefixes grow by one
    token; ``row_index`` alone is then read as the flat index ``row * K + k``); on a plain
    state it reorders, duplicates or drops rows — finished hypotheses can leave the batch.
    Summing ``delta`` over the chosen tokens of a hypothesis (ending in EOS) gives exactly
    ``log p_ctc(y | x)``.

    Cost of :meth:`score`: a loop over the T frames, each step on N x K values.
    :class:`CTCSearchScorer` adapts this class to ``seqpipe.common.search.beam_search``.
    """

    def __init__(self, blank_id: int = BLANK_ID, eos_id: int = EOS_ID) -> None:
        self.blank_id = blank_id
        self.eos_id = eos_id

    def init(self, ctc_log_probs: Tensor, lengths: Tensor) -> CTCPrefixState:
        """Start with empty prefixes, one per row.

        :param ctc_log_probs: N x T x V log-probabilities
        :param lengths: N frames per row
        :return: state with N empty prefixes (prefix score 0 = log 1)
        """
        n, t, _ = ctc_log_probs.shape
        x = ctc_log_probs.detach().float().transpose(0, 1).contiguous()  # T x N x V
        padded = torch.arange(t, device=x.device)[:, None] >= lengths.to(x.device)[None, :]  # T x N
        # Beyond an utterance's end: a blank with probability 1, everything else impossible,
        # so the final frame carries the full-sequence probability of the real frames.
        x.masked_fill_(padded[:, :, None], LOG_ZERO)
        x[:, :, self.blank_id].masked_fill_(padded, 0.0)
        r = torch.full((t, 2, n), LOG_ZERO, device=x.device)
        r[:, 1] = torch.cumsum(x[:, :, self.blank_id], dim=0)  # only blanks so far
        return CTCPrefixState(
            r=r,
            prefix_scores=torch.zeros(n, device=x.device),
            last=torch.full((n,), -1, dtype=torch.long, device=x.device),
            prefix_len=torch.zeros(n, dtype=torch.long, device=x.device),
            utt_index=torch.arange(n, device=x.device),
            log_probs=x,
        )

    def score(
        self, state: CTCPrefixState, last_tokens: Tensor | None, candidate_ids: Tensor
    ) -> tuple[Tensor, CTCPrefixState]:
        """Prefix scores of every hypothesis extended by each of its candidates.

        :param state: N hypotheses (a plain state)
        :param last_tokens: N, the hypotheses' last tokens (as the decoder sees them; BOS for
            empty prefixes). Only used as a check; ``None`` skips it.
        :param candidate_ids: N x K candidate tokens
        :return: (N x K absolute prefix scores ``log p_ctc(h + c, ...)`` — EOS: the full
            sequence probability of ``h``; blank: -inf —, the candidate state for
            :meth:`select`)
        """
        if state.is_candidates:
            raise ValueError("CTCPrefixScorer.score: select() candidates before scoring again")
        dev = state.r.device
        n, k = candidate_ids.shape
        if last_tokens is not None:
            last_tokens = last_tokens.to(dev)
            own = torch.where(state.prefix_len > 0, state.last, last_tokens)
            if not torch.equal(own, last_tokens):
                raise ValueError(
                    "CTCPrefixScorer.score: last_tokens disagree with the state's prefixes"
                )
        x = state.log_probs  # T x B x V
        t_max = x.size(0)
        cand = candidate_ids.to(dev)
        x_c = x[:, state.utt_index[:, None], cand]  # T x N x K
        x_b = x[:, state.utt_index, self.blank_id]  # T x N
        r_prev_n, r_prev_b = state.r[:, 0], state.r[:, 1]  # T x N each
        # phi_t: log prob of the prefix g over frames 0..t, in a state that can emit c next
        # (after a blank only, if c repeats g's last token)
        phi_all = torch.logaddexp(r_prev_n, r_prev_b)[:, :, None].expand(t_max, n, k)
        same = (cand == state.last[:, None])[None]  # 1 x N x K
        phi = torch.where(same, r_prev_b[:, :, None].expand(t_max, n, k), phi_all)  # T x N x K
        r = torch.full((t_max, 2, n, k), LOG_ZERO, device=dev)
        empty = (state.prefix_len == 0)[:, None]  # N x 1
        r[0, 0] = torch.where(empty, x_c[0], torch.full_like(x_c[0], LOG_ZERO))
        for t in range(1, t_max):
            r[t, 0] = torch.logaddexp(r[t - 1, 0], phi[t - 1]) + x_c[t]
            r[t, 1] = torch.logaddexp(r[t - 1, 0], r[t - 1, 1]) + x_b[t][:, None]
        # psi = sum_t phi_{t-1} x_t(c) (+ r_0^n for the empty prefix)
        psi = torch.logsumexp(torch.cat([r[:1, 0], phi[:-1] + x_c[1:]], dim=0), dim=0)  # N x K
        full = torch.logaddexp(r_prev_n[-1], r_prev_b[-1])[:, None].expand(n, k)  # N x K
        scores = torch.where(cand == self.eos_id, full, psi)
        scores = scores.masked_fill(cand == self.blank_id, float("-inf"))
        cand_state = CTCPrefixState(
            r=r,
            prefix_scores=scores,
            last=cand,
            prefix_len=(state.prefix_len + 1)[:, None].expand(n, k),
            utt_index=state.utt_index,
            log_probs=x,
        )
        return scores, cand_state

    def select(
        self, state: CTCPrefixState, row_index: Tensor, cand_index: Tensor | None = None
    ) -> CTCPrefixState:
        """Keep chosen hypotheses.

        :param state: a candidate state from :meth:`score`, or a plain state (reorder,
            duplicate — e.g. expand to beams — or drop rows)
        :param row_index: M, the hypothesis row each kept entry comes from; for a candidate
            state without ``cand_index``: the flat index ``row * K + k``
        :param cand_index: M, which of that row's K candidates (candidate states only)
        :return: plain state with M hypotheses
        """
        dev = state.r.device
        row_index = row_index.to(dev)
        if not state.is_candidates:
            if cand_index is not None:
                raise ValueError("CTCPrefixScorer.select: cand_index needs a candidate state")
            return CTCPrefixState(
                r=state.r[:, :, row_index],
                prefix_scores=state.prefix_scores[row_index],
                last=state.last[row_index],
                prefix_len=state.prefix_len[row_index],
                utt_index=state.utt_index[row_index],
                log_probs=state.log_probs,
            )
        if cand_index is None:
            k = state.r.size(3)
            row_index, cand_index = row_index // k, row_index % k
        cand_index = cand_index.to(dev)
        return CTCPrefixState(
            r=state.r[:, :, row_index, cand_index],
            prefix_scores=state.prefix_scores[row_index, cand_index],
            last=state.last[row_index, cand_index],
            prefix_len=state.prefix_len[row_index, cand_index],
            utt_index=state.utt_index[row_index],
            log_probs=state.log_probs,
        )


class CTCSearchScorer:
    """:class:`CTCPrefixScorer` behind the ``PrefixScorer`` protocol of
    :func:`seqpipe.common.search.beam_search` (``init(enc)``, ``score(prefixes, state, candidates)``
    returning *incremental* scores, ``select(state, flat_index)``).

    :param ctc_head: maps encoder outputs (batch x src_len x enc) to CTC log-probs
    """

    def __init__(self, ctc_head: nn.Module, blank_id: int = BLANK_ID, eos_id: int = EOS_ID) -> None:
        self.ctc_head = ctc_head
        self.scorer = CTCPrefixScorer(blank_id=blank_id, eos_id=eos_id)

    def init(self, enc) -> CTCPrefixState:
        """:param enc: ``EncoderOutput`` (``outputs`` batch x src_len x enc, ``lengths``)"""
        return self.scorer.init(self.ctc_head(enc.outputs), enc.lengths)

    def score(
        self, prefixes: Tensor, state: CTCPrefixState, candidate_ids: Tensor
    ) -> tuple[Tensor, CTCPrefixState]:
        """:param prefixes: rows x t tokens so far (no BOS); :param candidate_ids: rows x K
        :return: (rows x K ``log p_ctc(g + c, ...) - log p_ctc(g, ...)``, candidate state over
            rows * K, row-major)"""
        last = prefixes[:, -1] if prefixes.size(1) > 0 else None
        scores, cand_state = self.scorer.score(state, last, candidate_ids)
        # finite floor: a blank candidate (-inf) must not turn ``0 * score`` into NaN
        return (scores - state.prefix_scores[:, None]).clamp(min=LOG_ZERO), cand_state

    def select(self, state: CTCPrefixState, index: Tensor) -> CTCPrefixState:
        """Rows ``index`` of a plain state, or flat ``row * K + k`` of a candidate state."""
        return self.scorer.select(state, index)
