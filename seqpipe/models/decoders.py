"""Recurrent attention decoder: teacher-forced ``forward`` and incremental ``step`` for search.

Attention kinds:

- ``bahdanau`` (Bahdanau et al. 2015; Joey NMT style): the query is the previous decoder state
  (top layer), the context is fed into the RNN input with the embedding.
- ``location`` (Chorowski et al. 2015, for ASR): like ``bahdanau``, with location-aware scores.
- ``luong`` (Luong et al. 2015): RNN first, then attention with the RNN output as query.

Every kind outputs the attentional vector ``tanh(W [h_t ; c_t])`` (hidden_size), then the vocab
projection. With ``input_feeding`` the previous attentional vector joins the next step's input.

**Fast path**: ``luong`` without input feeding. In training the RNN runs over the whole target
in one cuDNN/MKL call and attention for all steps is one batched matmul (:meth:`_forward_fast`);
every other configuration loops over time in Python (:meth:`_forward_loop`) with the same
per-step code that search uses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqpipe.common.vocab import PAD_ID
from seqpipe.models.attention import BahdanauAttention, LocationAwareAttention, LuongAttention
from seqpipe.models.encoders import EncoderOutput, make_rnn, run_rnn

Hidden = Tensor | tuple[Tensor, Tensor]  # layers x batch x hidden, (h, c) for LSTM
# the output layer over a vocabulary subset: (x: rows x hidden, bias: rows x V') -> logits
SubsetProjection = Callable[[Tensor, Tensor], Tensor]

ATTENTION_KINDS = ("bahdanau", "luong", "location")


class DecoderState(NamedTuple):
    """Recurrent state between steps; every tensor has the batch (row) dim."""

    hidden: Hidden  # layers x batch x hidden (LSTM: a pair)
    att_vector: Tensor | None  # batch x hidden, previous attentional vector (input feeding)
    attn_weights: Tensor | None  # batch x src_len, previous weights (location attention)


class DecoderCache(NamedTuple):
    """Per-batch encoder-side tensors, computed once by ``prepare_cache``."""

    keys: Tensor  # batch x src_len x key_proj (projected keys)
    values: Tensor  # batch x src_len x enc_size
    mask: Tensor  # batch x src_len, True = real position


def _select_hidden(hidden: Hidden, index: Tensor) -> Hidden:
    if isinstance(hidden, tuple):
        return (hidden[0].index_select(1, index), hidden[1].index_select(1, index))
    return hidden.index_select(1, index)


class RecurrentDecoder(nn.Module):
    """Conditional RNN decoder with attention."""

    def __init__(
        self,
        cell: str,
        vocab_size: int,
        emb_size: int,
        hidden_size: int,
        num_layers: int,
        encoder_size: int,
        attention: str = "bahdanau",
        luong_score: str = "general",
        input_feeding: bool = True,
        bridge: bool = True,
        dropout: float = 0.0,
        tied_embeddings: bool = False,
        attention_query: str = "auto",
    ) -> None:
        """
        :param cell: ``gru``, ``lstm``, ``rnn_tanh`` or ``rnn_relu``
        :param vocab_size: target vocabulary size
        :param emb_size: target embedding size
        :param hidden_size: decoder RNN size (also the attentional vector size)
        :param num_layers: decoder RNN layers
        :param encoder_size: encoder output size (2 * hidden if bidirectional)
        :param attention: ``bahdanau``, ``luong`` or ``location``
        :param luong_score: ``general`` or ``dot`` (luong only)
        :param input_feeding: feed the previous attentional vector into the next step
        :param bridge: initial state ``tanh(Linear(encoder final hidden))``, else zeros
        :param dropout: on embeddings, before the output layer and between RNN layers
        :param tied_embeddings: output projection shares the target embedding weight
        :param attention_query: ``previous``: the previous decoder state queries the attention
            and the context is part of the RNN input (Bahdanau et al. 2015); ``current``: the
            RNN runs first and its new state queries (Luong et al. 2015; Joey NMT's order for
            both kinds); ``auto``: previous for bahdanau/location, current for luong
        """
        super().__init__()
        if attention not in ATTENTION_KINDS:
            raise ValueError(
                f"unknown attention {attention!r}; expected one of {', '.join(ATTENTION_KINDS)}"
            )
        self.cell = cell
        self.attention_kind = attention
        self.input_feeding = input_feeding
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.vocab_size = vocab_size
        if attention_query not in ("auto", "previous", "current"):
            raise ValueError(f"unknown attention_query {attention_query!r}")
        # attention before the RNN (context is part of the RNN input) or after it
        if attention_query == "auto":
            self.attend_first = attention in ("bahdanau", "location")
        else:
            self.attend_first = attention_query == "previous"

        self.embedding = nn.Embedding(vocab_size, emb_size, padding_idx=PAD_ID)
        self.emb_dropout = nn.Dropout(dropout)
        self.out_dropout = nn.Dropout(dropout)

        rnn_input = emb_size
        if self.attend_first:
            rnn_input += encoder_size
        if input_feeding:
            rnn_input += hidden_size
        self.rnn = make_rnn(cell, rnn_input, hidden_size, num_layers, False, dropout)

        self.attention: nn.Module
        if attention == "bahdanau":
            self.attention = BahdanauAttention(hidden_size, encoder_size, hidden_size)
        elif attention == "location":
            self.attention = LocationAwareAttention(hidden_size, encoder_size, hidden_size)
        else:
            self.attention = LuongAttention(hidden_size, encoder_size, luong_score)

        self.att_vector_layer = nn.Linear(hidden_size + encoder_size, hidden_size)
        self.bridge_layer = nn.Linear(encoder_size, hidden_size) if bridge else None
        self.output_layer = nn.Linear(hidden_size, vocab_size, bias=False)
        if tied_embeddings:
            if emb_size != hidden_size:
                raise ValueError(
                    f"tied_embeddings needs the target emb_size ({emb_size}) to equal the "
                    f"attentional vector size, i.e. the decoder hidden_size ({hidden_size})"
                )
            self.output_layer.weight = self.embedding.weight

    @property
    def fast_path(self) -> bool:
        """True when training runs the RNN and attention over all steps at once."""
        return self.attention_kind == "luong" and not self.input_feeding and not self.attend_first

    # ----------------------------------------------------------------- search interface
    def prepare_cache(self, enc: EncoderOutput) -> DecoderCache:
        """Project the encoder outputs into attention keys, once per batch."""
        return DecoderCache(
            keys=self.attention.project_keys(enc.outputs), values=enc.outputs, mask=enc.mask
        )

    @staticmethod
    def reorder_cache(cache: DecoderCache, index: Tensor) -> DecoderCache:
        """Select / repeat batch rows of the cache. :param index: new_batch (row ids)"""
        return DecoderCache(*(t.index_select(0, index) for t in cache))

    def init_state(self, enc: EncoderOutput) -> DecoderState:
        """Initial state: ``tanh(bridge(enc.hidden))`` in every layer, or zeros.

        LSTM: the cell state starts equal to the hidden state (as in Joey NMT). Location
        attention: 'previous' weights uniform over the real source positions."""
        batch = enc.hidden.size(0)
        ref = enc.outputs
        if self.bridge_layer is not None:
            h0 = torch.tanh(self.bridge_layer(enc.hidden))  # batch x hidden
        else:
            h0 = ref.new_zeros(batch, self.hidden_size)
        h = h0.unsqueeze(0).repeat(self.num_layers, 1, 1)  # layers x batch x hidden
        hidden: Hidden = (h, h) if self.cell == "lstm" else h
        att_vector = ref.new_zeros(batch, self.hidden_size) if self.input_feeding else None
        attn_weights = None
        if self.attention_kind == "location":
            attn_weights = LocationAwareAttention.initial_weights(enc.mask, ref.dtype)
        return DecoderState(hidden, att_vector, attn_weights)

    @staticmethod
    def reorder_state(state: DecoderState, index: Tensor) -> DecoderState:
        """Select / repeat batch rows of the state. :param index: new_batch (row ids)"""
        return DecoderState(
            hidden=_select_hidden(state.hidden, index),
            att_vector=None
            if state.att_vector is None
            else state.att_vector.index_select(0, index),
            attn_weights=(
                None if state.attn_weights is None else state.attn_weights.index_select(0, index)
            ),
        )

    def step(
        self,
        prev_tokens: Tensor,
        state: DecoderState,
        cache: DecoderCache,
        output: tuple[SubsetProjection, Tensor] | None = None,
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """One decoding step.

        :param prev_tokens: batch, previous output tokens (BOS at the first step)
        :param state: from :meth:`init_state` or the previous step
        :param cache: from :meth:`prepare_cache`: one row per ``prev_tokens`` row, or one per
            group of consecutive rows (the beams of a sentence; see :meth:`_attend`)
        :param output: a vocabulary subset (lexical shortlist): ``(projection, bias)`` with
            the output layer restricted to V' target ids (:meth:`subset_projection`) and a
            batch x V' additive bias (-inf masks a column for that row); the result then has
            V' columns
        :return: log-probs batch x vocab, new state, attention weights batch x src_len
        """
        if output is None:
            logits, state, weights = self.step_logits(prev_tokens, state, cache)
        else:
            logits, state, weights = self.step_logits(prev_tokens, state, cache, output)
        return F.log_softmax(logits, dim=-1), state, weights

    def step_logits(
        self,
        prev_tokens: Tensor,
        state: DecoderState,
        cache: DecoderCache,
        output: tuple[SubsetProjection, Tensor] | None = None,
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """:meth:`step` without the normalisation (what search calls)."""
        emb = self.emb_dropout(self.embedding(prev_tokens))  # batch x emb
        att_vector, state, weights = self._step(emb, state, cache)
        if output is None:
            logits = self.output_layer(self.out_dropout(att_vector))  # batch x vocab
        else:
            projection, bias = output
            logits = projection(self.out_dropout(att_vector), bias)
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()  # search scores accumulate in full precision
        return logits, state, weights

    def subset_projection(self, ids: Tensor) -> SubsetProjection:
        """The output layer for target ids ``ids`` only: ``(x, bias) -> bias + x W[ids]^T``.

        Works for the float layer and for its int8 dynamically quantized form
        (:func:`seqpipe.common.checkpoint.quantize_int8`); the rows are gathered once per batch."""
        layer = self.output_layer
        if isinstance(layer, nn.Linear):
            weight = layer.weight.index_select(0, ids)  # V' x hidden

            def project(x: Tensor, bias: Tensor) -> Tensor:
                return torch.addmm(bias.to(x.dtype), x, weight.t())  # one BLAS call

            return project
        # torch.ao dynamic int8 Linear: its quantized rows (unpacked once: 7 ms at 8k x 256)
        # are gathered into a smaller one
        rows = getattr(layer, "_seqpipe_int8_rows", None)
        if rows is None:
            rows = layer.weight()
            layer._seqpipe_int8_rows = rows
        sub = type(layer)(layer.in_features, ids.numel(), bias_=False, dtype=torch.qint8)
        sub.set_weight_bias(rows.index_select(0, ids), None)
        return lambda x, bias: sub(x).add_(bias)

    # ----------------------------------------------------------------- shared step
    def _top_hidden(self, hidden: Hidden) -> Tensor:
        h = hidden[0] if isinstance(hidden, tuple) else hidden
        return h[-1]  # batch x hidden

    def _attend(
        self, query: Tensor, state: DecoderState, cache: DecoderCache
    ) -> tuple[Tensor, Tensor]:
        """Attention for one step's rows. The cache may hold one row per group of ``g``
        consecutive rows (beam search: one per sentence, its ``g`` beams side by side): the
        group's queries then share that row in one batched matmul, and the cache is neither
        repeated ``g`` times nor reordered when beams are.

        :param query: rows x hidden
        :return: context rows x enc_size, weights rows x src_len
        """
        rows, n = query.size(0), cache.keys.size(0)
        if rows == n:
            return self.attention(query, cache.keys, cache.values, cache.mask, state.attn_weights)
        if rows % n:
            raise ValueError(f"decoder step: {rows} rows for a cache of {n} rows")
        group = rows // n
        prev = state.attn_weights
        context, weights = self.attention(
            query.view(n, group, -1),
            cache.keys,
            cache.values,
            cache.mask,
            None if prev is None else prev.view(n, group, -1),
        )
        return context.reshape(rows, -1), weights.reshape(rows, -1)

    def _step(
        self, emb: Tensor, state: DecoderState, cache: DecoderCache
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """
        :param emb: batch x emb (dropout applied)
        :return: attentional vector batch x hidden, new state, weights batch x src_len
        """
        pieces = [emb]
        if self.attend_first:
            query = self._top_hidden(state.hidden)  # previous state, batch x hidden
            context, weights = self._attend(query, state, cache)
            pieces.append(context)
        if self.input_feeding:
            pieces.append(state.att_vector)
        rnn_input = torch.cat(pieces, dim=-1).unsqueeze(1)  # batch x 1 x rnn_input
        output, hidden = run_rnn(self.rnn, rnn_input, state.hidden)
        output = output.squeeze(1)  # batch x hidden
        if not self.attend_first:
            context, weights = self._attend(output, state, cache)
        att_vector = torch.tanh(self.att_vector_layer(torch.cat([output, context], dim=-1)))
        new_state = DecoderState(
            hidden=hidden,
            att_vector=att_vector if self.input_feeding else None,
            attn_weights=weights if self.attention_kind == "location" else None,
        )
        return att_vector, new_state, weights

    # ----------------------------------------------------------------- teacher forcing
    def forward(
        self, tgt_in: Tensor, enc: EncoderOutput, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Teacher-forced decoding.

        :param tgt_in: batch x tgt_len, BOS + target (padded with PAD)
        :param enc: encoder output
        :param return_attention: also return the weights, batch x tgt_len x src_len
        :return: logits batch x tgt_len x vocab
        """
        emb = self.emb_dropout(self.embedding(tgt_in))  # batch x tgt_len x emb
        cache = self.prepare_cache(enc)
        state = self.init_state(enc)
        if self.fast_path:
            att_vectors, weights = self._forward_fast(emb, state, cache)
        else:
            att_vectors, weights = self._forward_loop(emb, state, cache)
        logits = self.output_layer(self.out_dropout(att_vectors))  # batch x tgt_len x vocab
        return (logits, weights) if return_attention else logits

    def _forward_fast(
        self, emb: Tensor, state: DecoderState, cache: DecoderCache
    ) -> tuple[Tensor, Tensor]:
        """Luong attention, no input feeding: one RNN call, one batched attention."""
        outputs, _ = run_rnn(self.rnn, emb, state.hidden)  # batch x tgt_len x hidden
        context, weights = self.attention(outputs, cache.keys, cache.values, cache.mask)
        # context: batch x tgt_len x enc_size, weights: batch x tgt_len x src_len
        att_vectors = torch.tanh(self.att_vector_layer(torch.cat([outputs, context], dim=-1)))
        return att_vectors, weights

    def _forward_loop(
        self, emb: Tensor, state: DecoderState, cache: DecoderCache
    ) -> tuple[Tensor, Tensor]:
        """Any configuration: one :meth:`_step` per target position."""
        att_vectors, all_weights = [], []
        for t in range(emb.size(1)):
            att_vector, state, weights = self._step(emb[:, t], state, cache)
            att_vectors.append(att_vector)
            all_weights.append(weights)
        return torch.stack(att_vectors, dim=1), torch.stack(all_weights, dim=1)

    def extra_repr(self) -> str:
        return (
            f"attention={self.attention_kind}, attend_first={self.attend_first}, "
            f"input_feeding={self.input_feeding}, "
            f"fast_path={self.fast_path}"
        )
