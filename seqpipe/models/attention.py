"""Attention mechanisms: Bahdanau (additive), Luong (dot / general), location-aware.

All share one interface:

- ``project_keys(memory)`` projects the encoder outputs once per batch (search calls it once,
  then only reorders the result);
- ``forward(query, keys, values, mask, prev_weights=None) -> (context, weights)`` with a query
  for one step (batch x query_size) or several queries per memory row (batch x steps x
  query_size): all steps at once in training, or the beams of one sentence in beam search,
  which then keeps one memory row per sentence instead of one per beam.

Masked positions get ``-inf`` before the softmax, so their weight is exactly zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """Softmax over the last dim with exact masking.

    :param scores: batch x [steps x] src_len
    :param mask: batch x src_len, True = real position
    """
    if scores.dim() == 3:
        mask = mask.unsqueeze(1)  # batch x 1 x src_len
    scores = scores.masked_fill(~mask, float("-inf"))
    return F.softmax(scores, dim=-1)


def _as_steps(query: Tensor) -> tuple[Tensor, bool]:
    """batch x query -> batch x 1 x query (and remember to squeeze back)."""
    if query.dim() == 2:
        return query.unsqueeze(1), True
    if query.dim() == 3:
        return query, False
    raise ValueError(f"attention query must be 2-D or 3-D, got shape {tuple(query.shape)}")


class _Attention(nn.Module):
    """The shared half: a query of one step or of several, scored, masked, softmaxed and
    used to weight the values. A subclass gives :meth:`project_keys` and :meth:`scores`."""

    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        values: Tensor,
        mask: Tensor,
        prev_weights: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """
        :param query: batch x query_size (one step), or batch x steps x query_size
        :param keys: batch x src_len x key dim (from :meth:`project_keys`)
        :param values: batch x src_len x value_size
        :param mask: batch x src_len, True = real position
        :param prev_weights: batch x [steps x] src_len, the previous step's weights (location
            attention only; its steps are the beams of one sentence, not time steps)
        :return: context batch x [steps x] value_size, weights batch x [steps x] src_len
        """
        q, squeeze = _as_steps(query)
        weights = masked_softmax(self.scores(q, keys, prev_weights), mask)
        context = torch.bmm(weights, values)  # batch x steps x value
        if squeeze:
            return context.squeeze(1), weights.squeeze(1)
        return context, weights

    def scores(self, q: Tensor, keys: Tensor, prev_weights: Tensor | None) -> Tensor:
        """batch x steps x query_size -> batch x steps x src_len (before masking)"""
        raise NotImplementedError


class BahdanauAttention(_Attention):
    """Additive (MLP) attention, Bahdanau et al. 2015: ``v^T tanh(W_q q + W_k k)``."""

    def __init__(self, query_size: int, key_size: int, attn_size: int) -> None:
        super().__init__()
        self.key_layer = nn.Linear(key_size, attn_size, bias=False)
        self.query_layer = nn.Linear(query_size, attn_size, bias=False)
        self.energy_layer = nn.Linear(attn_size, 1, bias=False)

    def project_keys(self, memory: Tensor) -> Tensor:
        """:param memory: batch x src_len x key_size -> batch x src_len x attn_size"""
        return self.key_layer(memory)

    def scores(self, q: Tensor, keys: Tensor, prev_weights: Tensor | None) -> Tensor:
        q = self.query_layer(q)  # batch x steps x attn
        energy = torch.tanh(q.unsqueeze(2) + keys.unsqueeze(1))  # batch x steps x src x attn
        return self.energy_layer(energy).squeeze(-1)  # batch x steps x src


class LuongAttention(_Attention):
    """Multiplicative attention, Luong et al. 2015: ``q^T k`` (dot) or ``q^T W k`` (general).

    With a batch x steps x query_size query, all steps are scored by one batched matmul.
    """

    def __init__(self, query_size: int, key_size: int, score: str = "general") -> None:
        super().__init__()
        if score not in ("general", "dot"):
            raise ValueError(f"Luong attention score must be 'general' or 'dot', got {score!r}")
        if score == "dot" and query_size != key_size:
            raise ValueError(
                f"Luong 'dot' attention needs query size == key size, got {query_size} and "
                f"{key_size} (decoder hidden_size vs encoder output size); use score='general'"
            )
        self.score = score
        self.key_layer = nn.Linear(key_size, query_size, bias=False) if score == "general" else None

    def project_keys(self, memory: Tensor) -> Tensor:
        """:param memory: batch x src_len x key_size -> batch x src_len x query_size"""
        return memory if self.key_layer is None else self.key_layer(memory)

    def scores(self, q: Tensor, keys: Tensor, prev_weights: Tensor | None) -> Tensor:
        return torch.bmm(q, keys.transpose(1, 2))  # batch x steps x src

    def extra_repr(self) -> str:
        return f"score={self.score}"


class LocationAwareAttention(_Attention):
    """Location-aware attention, Chorowski et al. 2015 (attention-based ASR).

    ``e = v^T tanh(W_q q + W_k k + U (F * a_prev))``: the previous step's weights ``a_prev`` are
    convolved (``conv_channels`` filters of width ``conv_kernel``) and added to the additive
    score. Step-wise only: each step needs the previous step's weights.
    """

    def __init__(
        self,
        query_size: int,
        key_size: int,
        attn_size: int,
        conv_channels: int = 10,
        conv_kernel: int = 31,
    ) -> None:
        super().__init__()
        if conv_kernel % 2 != 1:
            raise ValueError(f"location attention conv_kernel must be odd, got {conv_kernel}")
        self.key_layer = nn.Linear(key_size, attn_size, bias=False)
        self.query_layer = nn.Linear(query_size, attn_size, bias=False)
        self.location_conv = nn.Conv1d(
            1, conv_channels, conv_kernel, padding=conv_kernel // 2, bias=False
        )
        self.location_layer = nn.Linear(conv_channels, attn_size, bias=False)
        self.energy_layer = nn.Linear(attn_size, 1, bias=False)

    def project_keys(self, memory: Tensor) -> Tensor:
        """:param memory: batch x src_len x key_size -> batch x src_len x attn_size"""
        return self.key_layer(memory)

    @staticmethod
    def initial_weights(mask: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """Uniform weights over the real positions, the 'previous' weights of the first step.

        :param mask: batch x src_len -> batch x src_len
        """
        m = mask.to(dtype)
        return m / m.sum(dim=1, keepdim=True)

    def scores(self, q: Tensor, keys: Tensor, prev_weights: Tensor | None) -> Tensor:
        """Steps here are queries of the same step that share a memory row (the beams of a
        sentence), each with its own previous weights: the steps of one sequence cannot be
        batched (each needs the last)."""
        if prev_weights is None:
            raise ValueError("LocationAwareAttention needs prev_weights")
        batch, group, _ = q.shape
        src_len = keys.size(1)
        loc = self.location_conv(prev_weights.reshape(batch * group, 1, src_len))  # b*g x C x src
        loc = self.location_layer(loc.transpose(1, 2)).view(batch, group, src_len, -1)
        q = self.query_layer(q).unsqueeze(2)  # batch x group x 1 x attn
        energy = torch.tanh(q + keys.unsqueeze(1) + loc)  # batch x group x src x attn
        return self.energy_layer(energy).squeeze(-1)  # batch x group x src
