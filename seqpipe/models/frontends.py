"""Audio front-ends that shorten the feature sequence before (or inside) the RNN encoder.

- :class:`Conv2dSubsampling`: two stride-2 3x3 convolutions, x4 fewer frames; plugs into
  :class:`~seqpipe.models.encoders.RecurrentEncoder` as its ``frontend``.
- :class:`PyramidalReduce`: concatenates pairs of consecutive frames (x2 fewer, twice the
  size), as between the layers of LAS's pyramidal BiLSTM (Chan et al., 2016).
- :class:`PyramidalBiLSTMEncoder`: BiLSTM layers with a :class:`PyramidalReduce` between
  them; returns the same :class:`~seqpipe.models.encoders.EncoderOutput` as
  ``RecurrentEncoder``.

All of them honour ``lengths``: an utterance's output never depends on the padding of its
batch, and outputs at padded positions are zero.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqpipe.models.encoders import EncoderOutput, lengths_to_mask

__all__ = ["Conv2dSubsampling", "PyramidalReduce", "PyramidalBiLSTMEncoder"]


def _zero_padding(x: Tensor, lengths: Tensor) -> Tensor:
    """Zero frames at and beyond ``lengths``. x: batch x time x dim."""
    mask = lengths_to_mask(lengths.to(x.device), x.size(1))  # batch x time
    return x.masked_fill(~mask.unsqueeze(-1), 0.0)


class Conv2dSubsampling(nn.Module):
    """Conv2d(1->C, 3x3, stride 2) -> ReLU -> Conv2d(C->C, 3x3, stride 2) -> ReLU -> Linear.

    Time and frequency are each reduced by 4 (no padding, so an output frame only sees real
    input frames): ``T' = ((T - 1) // 2 - 1) // 2``, which needs ``T >= 7``
    (:attr:`min_input_length`).
    """

    min_input_length = 7

    def __init__(
        self,
        input_size: int,
        channels: int = 32,
        output_size: int = 256,
        dropout: float = 0.0,
        norm: bool = False,
    ) -> None:
        """
        :param input_size: feature size F (e.g. 80 mel bins)
        :param channels: conv channels C
        :param output_size: size of the output frames (attribute ``output_size``)
        :param norm: LayerNorm on the output frames. With PyTorch's default initialisation the
            front end's output is small (std ~0.1), so the encoder's outputs hardly vary over
            time and attention starts (and, at a high learning rate, stays) uniform; normalised
            frames let an attention decoder align (measured on FSDD digits, see recipes/asr_small.yaml)
        """
        super().__init__()
        if input_size < 7:
            raise ValueError(f"Conv2dSubsampling needs input_size >= 7, got {input_size}")
        self.input_size = input_size
        self.output_size = output_size
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=3, stride=2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=3, stride=2),
            nn.ReLU(),
        )
        freq = self.output_lengths(torch.tensor(input_size)).item()
        self.linear = nn.Linear(channels * freq, output_size)
        self.norm = nn.LayerNorm(output_size) if norm else None
        self.dropout = nn.Dropout(dropout)

    @staticmethod
    def output_lengths(lengths: Tensor) -> Tensor:
        """Frames after subsampling: ``((L - 1) // 2 - 1) // 2`` (0 for L < 7)."""
        return (((lengths - 1) // 2 - 1) // 2).clamp(min=0)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """
        :param x: batch x time x input_size
        :param lengths: batch
        :return: (batch x time' x output_size, lengths' (batch)); frames >= lengths' are zero
        """
        if bool((lengths < self.min_input_length).any()):
            raise ValueError(
                f"Conv2dSubsampling needs >= {self.min_input_length} frames per utterance, "
                f"got lengths {lengths.tolist()} (filter short utterances)"
            )
        y = self.conv(x.unsqueeze(1))  # batch x C x time' x freq'
        b, c, t, f = y.shape
        y = self.linear(y.transpose(1, 2).reshape(b, t, c * f))  # batch x time' x output_size
        if self.norm is not None:
            y = self.norm(y)
        new_lengths = self.output_lengths(lengths)
        return _zero_padding(self.dropout(y), new_lengths), new_lengths


class PyramidalReduce(nn.Module):
    """Concatenate pairs of consecutive frames: batch x T x D -> batch x ceil(T/2) x 2D.

    Odd lengths get a zero frame appended (frames at and beyond ``lengths`` are zeroed
    first), so ``lengths' = ceil(lengths / 2)`` and nothing of an utterance is dropped.
    """

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """
        :param x: batch x time x dim
        :param lengths: batch
        :return: (batch x ceil(time/2) x 2*dim, ceil(lengths/2))
        """
        x = _zero_padding(x, lengths)
        b, t, d = x.shape
        if t % 2:
            x = torch.cat([x, x.new_zeros(b, 1, d)], dim=1)
        return x.reshape(b, (t + 1) // 2, 2 * d), (lengths + 1) // 2


class PyramidalBiLSTMEncoder(nn.Module):
    """Pyramidal BiLSTM encoder (Listen, Attend and Spell): ``num_layers`` BiLSTM layers with
    a :class:`PyramidalReduce` after each of the first ``num_reductions`` layers (time is
    reduced by ``2 ** num_reductions``).

    ``frontend`` (e.g. :class:`Conv2dSubsampling`) may run before the first layer.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 3,
        num_reductions: int = 2,
        dropout: float = 0.0,
        frontend: nn.Module | None = None,
    ) -> None:
        """
        :param input_size: feature size (ignored when ``frontend`` is given)
        :param hidden_size: LSTM size per direction; outputs are ``2 * hidden_size``
        :param num_reductions: how many layers are followed by a x2 reduction
            (``<= num_layers - 1``: the last layer's outputs are not reduced)
        :param dropout: between layers
        """
        super().__init__()
        if not 0 <= num_reductions <= num_layers - 1:
            raise ValueError(f"num_reductions must be in [0, num_layers - 1], got {num_reductions}")
        self.frontend = frontend
        size = int(frontend.output_size) if frontend is not None else input_size
        self.input_size = size
        self.layers = nn.ModuleList()
        for i in range(num_layers):
            self.layers.append(nn.LSTM(size, hidden_size, batch_first=True, bidirectional=True))
            size = 2 * hidden_size * (2 if i < num_reductions else 1)
        self.reduce = PyramidalReduce()
        self.num_reductions = num_reductions
        self.dropout = nn.Dropout(dropout)
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = True
        self.output_size = 2 * hidden_size

    def forward(self, x: Tensor, lengths: Tensor) -> EncoderOutput:
        """
        :param x: batch x time x feats
        :param lengths: batch (>= 1)
        :return: :class:`EncoderOutput`: outputs batch x src_len x 2*hidden (src_len =
            max(lengths) after reductions), mask batch x src_len, lengths, hidden
            batch x 2*hidden (last layer's final forward ; backward states)
        """
        if self.frontend is not None:
            x, lengths = self.frontend(x, lengths)
        final = None
        for i, lstm in enumerate(self.layers):
            if i > 0:
                x = self.dropout(x)
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, (h, _) = lstm(packed)
            x, _ = pad_packed_sequence(out, batch_first=True)  # batch x time x 2*hidden
            final = h
            if i < self.num_reductions:
                x, lengths = self.reduce(x, lengths)
        assert final is not None
        hidden = torch.cat([final[-2], final[-1]], dim=-1)  # batch x 2*hidden
        lengths = lengths.to(x.device)
        return EncoderOutput(
            outputs=x, mask=lengths_to_mask(lengths, x.size(1)), lengths=lengths, hidden=hidden
        )

    def extra_repr(self) -> str:
        return f"num_reductions={self.num_reductions}, output_size={self.output_size}"
