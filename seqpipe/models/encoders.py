"""Recurrent encoder over token embeddings (MT) or acoustic features (ASR).

Sequences are packed (``pack_padded_sequence``), so a sentence's encoding never depends on what
else is in its batch, and outputs at padded positions are exactly zero.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from seqpipe.common.vocab import PAD_ID

RNN_CELLS = ("gru", "lstm", "rnn_tanh", "rnn_relu")


def make_rnn(
    cell: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
) -> nn.RNNBase:
    """Build a batch-first multi-layer ``nn.GRU``/``nn.LSTM``/``nn.RNN``.

    :param cell: one of ``gru``, ``lstm``, ``rnn_tanh``, ``rnn_relu`` (Elman RNN)
    :param dropout: applied between layers (ignored with one layer)
    """
    kwargs = dict(
        input_size=input_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        batch_first=True,
        bidirectional=bidirectional,
        dropout=dropout if num_layers > 1 else 0.0,
    )
    if cell == "gru":
        return nn.GRU(**kwargs)
    if cell == "lstm":
        return nn.LSTM(**kwargs)
    if cell in ("rnn_tanh", "rnn_relu"):
        return nn.RNN(nonlinearity=cell[4:], **kwargs)
    raise ValueError(f"unknown RNN cell {cell!r}; expected one of {', '.join(RNN_CELLS)}")


def run_rnn(rnn: nn.RNNBase, x: Any, hx: Any = None) -> tuple[Any, Any]:
    """``rnn(x, hx)``; under bf16 autocast on CUDA, in float32. (PyTorch's autocast runs cuDNN
    RNNs in fp16 whatever the autocast dtype; bf16 training has no grad scaler to keep fp16
    from overflowing, so there the RNNs stay float32 while the attention and output layers
    run in bf16. Under fp16 autocast, with its grad scaler, the RNNs run in fp16.)

    :param x: batch x time x input (or a PackedSequence); ``hx``: as ``rnn`` takes it
    """
    cuda = (x.data if isinstance(x, PackedSequence) else x).is_cuda
    if cuda and torch.is_autocast_enabled("cuda"):
        if torch.get_autocast_dtype("cuda") == torch.bfloat16:
            with torch.autocast("cuda", enabled=False):
                return rnn(_float(x), _float(hx))
    return rnn(x, hx)


def _float(t: Any) -> Any:
    if t is None:
        return None
    if isinstance(t, tuple):  # LSTM state (h, c)
        return tuple(_float(u) for u in t)
    return t.float()


def lengths_to_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """Boolean mask, True at real positions.

    :param lengths: batch
    :return: batch x max_len
    """
    max_len = int(lengths.max()) if max_len is None else max_len
    positions = torch.arange(max_len, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


class Frontend(Protocol):
    """What the encoder expects of an audio front-end (e.g. conv subsampling)."""

    output_size: int

    def __call__(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``x``: batch x time x feats, ``lengths``: batch -> (batch x time' x output_size, batch)."""
        ...


class EncoderOutput(NamedTuple):
    """What the decoder and search read from the encoder."""

    outputs: Tensor  # batch x src_len x enc_size (zero at padded positions)
    mask: Tensor  # batch x src_len, bool, True = real position
    lengths: Tensor  # batch (after the front-end, if any)
    hidden: Tensor  # batch x enc_size: last layer's final state (fwd ; bwd), for the bridge


class RecurrentEncoder(nn.Module):
    """(Bi)directional multi-layer RNN encoder.

    Text input: token ids through ``nn.Embedding(vocab_size, emb_size, padding_idx=PAD_ID)``.
    Feature input: float features of size ``input_size``, optionally through a ``frontend``
    (``forward(x, lengths) -> (y, lengths')`` with attribute ``output_size``).
    """

    def __init__(
        self,
        cell: str,
        input_size: int | None,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.0,
        vocab_size: int | None = None,
        emb_size: int | None = None,
        frontend: nn.Module | None = None,
    ) -> None:
        """
        :param cell: ``gru``, ``lstm``, ``rnn_tanh`` or ``rnn_relu``
        :param input_size: feature size (feature input); ignored for text input
        :param hidden_size: RNN size per direction
        :param dropout: on embeddings and between RNN layers
        :param vocab_size: source vocabulary size (text input)
        :param emb_size: source embedding size (text input)
        :param frontend: module applied to features before the RNN (feature input)
        """
        super().__init__()
        self.cell = cell
        self.embedding: nn.Embedding | None = None
        self.frontend = frontend
        if vocab_size is not None:
            if emb_size is None:
                raise ValueError("RecurrentEncoder: text input needs emb_size with vocab_size")
            if frontend is not None:
                raise ValueError("RecurrentEncoder: a frontend is for feature input, not text")
            self.embedding = nn.Embedding(vocab_size, emb_size, padding_idx=PAD_ID)
            rnn_input = emb_size
        elif frontend is not None:
            rnn_input = int(frontend.output_size)
        elif input_size is not None:
            rnn_input = input_size
        else:
            raise ValueError("RecurrentEncoder needs vocab_size+emb_size (text) or input_size")
        self.input_size = rnn_input
        self.emb_dropout = nn.Dropout(dropout)
        self.rnn = make_rnn(cell, rnn_input, hidden_size, num_layers, bidirectional, dropout)
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.output_size = hidden_size * (2 if bidirectional else 1)

    def forward(self, x: Tensor, lengths: Tensor) -> EncoderOutput:
        """Encode a padded batch.

        :param x: batch x time (token ids) or batch x time x feats (features)
        :param lengths: batch, real lengths (>= 1)
        :return: :class:`EncoderOutput`; ``outputs`` is batch x src_len x output_size with
            src_len = max(lengths) (after the front-end)
        """
        if self.embedding is not None:
            x = self.emb_dropout(self.embedding(x))  # batch x time x emb
        elif self.frontend is not None:
            x, lengths = self.frontend(x, lengths)  # batch x time' x frontend.output_size
        lengths_cpu = lengths.cpu()
        if bool((lengths_cpu == x.size(1)).all()):
            # no padding (length-sorted batches mostly hold one source length): the plain call
            # computes exactly what packing would, without its sort and gather
            outputs, final = run_rnn(self.rnn, x)
        else:
            packed = pack_padded_sequence(x, lengths_cpu, batch_first=True, enforce_sorted=False)
            packed_out, final = run_rnn(self.rnn, packed)
            outputs, _ = pad_packed_sequence(packed_out, batch_first=True)  # batch x src x out
        if isinstance(final, tuple):  # LSTM: (h, c)
            final = final[0]
        # final: (layers * directions) x batch x hidden, last layer last
        if self.bidirectional:
            hidden = torch.cat([final[-2], final[-1]], dim=-1)  # batch x 2*hidden
        else:
            hidden = final[-1]  # batch x hidden
        lengths = lengths.to(outputs.device)
        mask = lengths_to_mask(lengths, outputs.size(1))
        return EncoderOutput(outputs=outputs, mask=mask, lengths=lengths, hidden=hidden)

    def extra_repr(self) -> str:
        return f"cell={self.cell}, output_size={self.output_size}"
