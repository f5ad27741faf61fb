"""Speech recognition models: the shared :class:`~seqpipe.models.seq2seq.Seq2Seq` over acoustic
features, with a CTC head, or a CTC encoder alone.

``model.arch``:

- ``attention``      front end -> RNN encoder -> attention decoder (the MT model's classes)
- ``ctc``            front end -> RNN encoder -> :class:`~seqpipe.models.ctc.CTCHead`
- ``ctc_attention``  both heads on one encoder; loss ``(1 - w) * att + w * ctc``

``model.subsampling`` (front end): ``conv2d`` (two stride-2 convolutions, x4 fewer frames,
output size ``model.emb_size``), ``conv2d8`` (``conv2d`` then pairs of frames stacked: x8,
output size ``2 * model.emb_size``; for short words, e.g. yes/no), ``pyramid`` (pyramidal BiLSTM encoder, x2 per layer for up to
two layers; LSTM whatever ``model.cell`` says), ``none`` (the RNN reads the features).

The model is rebuilt from a plain spec dict (``model.json`` in the train artifact, see
:func:`model_spec`) with :func:`build_asr_model`, so decoding and the API need no recipe.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from seqpipe.models.ctc import CTCHead
from seqpipe.models.encoders import EncoderOutput
from seqpipe.models.frontends import Conv2dSubsampling, PyramidalBiLSTMEncoder, PyramidalReduce
from seqpipe.models.seq2seq import Seq2Seq, build_model

ARCHS = ("attention", "ctc", "ctc_attention")
SUBSAMPLING = ("conv2d", "conv2d8", "pyramid", "none")
# keys of the recipe's model: section that are not build_model() arguments
ASR_KEYS = ("arch", "subsampling", "conv_channels", "frontend_norm")


class StackedFrontend(nn.Module):
    """A front end followed by :class:`PyramidalReduce` (pairs of frames concatenated): x2
    fewer frames, twice the size."""

    def __init__(self, frontend: nn.Module) -> None:
        super().__init__()
        self.frontend = frontend
        self.reduce = PyramidalReduce()
        self.output_size = 2 * int(frontend.output_size)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """batch x time x feats -> (batch x time' x output_size, lengths')"""
        return self.reduce(*self.frontend(x, lengths))


class ASROutput(NamedTuple):
    att_logits: Tensor | None  # batch x tgt_len x vocab (attention decoder, teacher forced)
    ctc_log_probs: Tensor | None  # batch x enc_len x vocab (CTC head)
    enc: EncoderOutput


class ASRModel(Seq2Seq):
    """A :class:`Seq2Seq` over features with an optional CTC head (``decoder`` is ``None`` for
    ``arch: ctc``). ``encode``/``decoder`` serve :mod:`seqpipe.common.search` unchanged."""

    def __init__(
        self,
        arch: str,
        encoder: nn.Module,
        decoder: nn.Module | None,
        ctc_head: CTCHead | None,
        subsampling: str,
        reductions: int = 0,
    ) -> None:
        super().__init__(encoder, decoder)  # type: ignore[arg-type]
        self.arch = arch
        self.ctc_head = ctc_head
        self.subsampling = subsampling
        self.reductions = reductions  # pyramid: number of x2 reductions
        # speaker adaptation (seqpipe.asr.adapt) sets a module here for the time of one speaker
        self.input_transform: nn.Module | None = None

    def encode(self, src: Tensor, src_len: Tensor) -> EncoderOutput:
        """:param src: batch x frames x num_mel_bins (through ``input_transform`` when set)"""
        if self.input_transform is not None:
            src = self.input_transform(src, src_len)
        return self.encoder(src, src_len)

    @property
    def min_frames(self) -> int:
        """Fewest input frames the front end accepts."""
        return Conv2dSubsampling.min_input_length if self.subsampling.startswith("conv2d") else 1

    def encoder_lengths(self, frames: np.ndarray) -> np.ndarray:
        """Encoder output lengths for input lengths ``frames`` (numpy, any shape)."""
        frames = np.asarray(frames, dtype=np.int64)
        if self.subsampling == "conv2d":
            return np.maximum(((frames - 1) // 2 - 1) // 2, 0)
        if self.subsampling == "conv2d8":
            return (np.maximum(((frames - 1) // 2 - 1) // 2, 0) + 1) // 2
        if self.subsampling == "pyramid":
            out = frames
            for _ in range(self.reductions):
                out = (out + 1) // 2
            return out
        return frames

    def forward(self, feats: Tensor, lengths: Tensor, tgt_in: Tensor | None = None) -> ASROutput:  # type: ignore[override]
        """
        :param feats: batch x frames x num_mel_bins (normalised, padded)
        :param lengths: batch
        :param tgt_in: batch x tgt_len, BOS + target (attention archs)
        """
        enc = self.encode(feats, lengths)
        att = None
        if self.decoder is not None and tgt_in is not None:
            att = self.decoder(tgt_in, enc)
        ctc = self.ctc_head(enc.outputs) if self.ctc_head is not None else None
        return ASROutput(att, ctc, enc)


class CTCEnsemble(nn.Module):
    """CTC models trained apart (``train.members``) that decode together: each member proposes
    its hypothesis, and the one with the highest summed CTC log-likelihood over all members
    wins (see :func:`seqpipe.asr.transcribe.transcribe`). Rescoring whole hypotheses instead of
    averaging frame posteriors, because separately trained CTC models place their spikes on
    different frames."""

    arch = "ctc"

    def __init__(self, members: list[ASRModel]) -> None:
        super().__init__()
        if len(members) < 2 or any(m.arch != "ctc" for m in members):
            raise ValueError("an ensemble needs two or more models of arch ctc")
        self.members = nn.ModuleList(members)

    @property
    def min_frames(self) -> int:
        return max(m.min_frames for m in self.members)


def model_spec(model_cfg: dict[str, Any], input_size: int, tgt_vocab_size: int) -> dict[str, Any]:
    """The spec saved as ``model.json``: everything :func:`build_asr_model` needs."""
    kwargs = {k: v for k, v in model_cfg.items() if k not in ASR_KEYS}
    return {
        "task": "asr",
        "arch": model_cfg["arch"],
        "subsampling": model_cfg["subsampling"],
        "conv_channels": model_cfg["conv_channels"],
        "frontend_norm": bool(model_cfg.get("frontend_norm", False)),
        "kwargs": kwargs,
        "input_size": input_size,
        "tgt_vocab_size": tgt_vocab_size,
    }


def build_asr_model(spec: dict[str, Any]) -> ASRModel | CTCEnsemble:
    """Build an :class:`ASRModel` from a :func:`model_spec` dict (a :class:`CTCEnsemble` of
    ``spec["members"]`` such models when that is above 1)."""
    members = int(spec.get("members", 1))
    if members > 1:
        one = {k: v for k, v in spec.items() if k != "members"}
        return CTCEnsemble([build_asr_model(one) for _ in range(members)])  # type: ignore[misc]
    arch, sub = spec["arch"], spec["subsampling"]
    if arch not in ARCHS:
        raise ValueError(f"unknown ASR arch {arch!r}; expected one of {', '.join(ARCHS)}")
    if sub not in SUBSAMPLING:
        raise ValueError(f"unknown subsampling {sub!r}; expected one of {', '.join(SUBSAMPLING)}")
    kw = dict(spec["kwargs"])
    input_size, vocab = int(spec["input_size"]), int(spec["tgt_vocab_size"])
    frontend = None
    if sub in ("conv2d", "conv2d8"):
        frontend = Conv2dSubsampling(
            input_size,
            spec["conv_channels"],
            output_size=kw.get("emb_size", 256),
            dropout=kw.get("dropout", 0.0),
            norm=bool(spec.get("frontend_norm", False)),
        )
        if sub == "conv2d8":
            frontend = StackedFrontend(frontend)
    # the shared builder wires encoder and decoder exactly as for MT
    s2s = build_model(
        **kw, tgt_vocab_size=vocab, input_size=None if frontend else input_size, frontend=frontend
    )
    encoder: nn.Module = s2s.encoder
    reductions = 0
    if sub == "pyramid":
        layers = kw.get("enc_layers", 1)
        if layers < 2 or not kw.get("bidirectional", True):
            raise ValueError("subsampling pyramid needs model.enc_layers >= 2 and bidirectional")
        reductions = min(2, layers - 1)
        encoder = PyramidalBiLSTMEncoder(
            input_size,
            kw.get("hidden_size", 256),
            num_layers=layers,
            num_reductions=reductions,
            dropout=kw.get("dropout", 0.0),
        )
    decoder = None if arch == "ctc" else s2s.decoder
    ctc_head = None
    if arch in ("ctc", "ctc_attention"):
        ctc_head = CTCHead(encoder.output_size, vocab, dropout=kw.get("dropout", 0.0))
    return ASRModel(arch, encoder, decoder, ctc_head, sub, reductions)


def pad_features(feats: list[np.ndarray], min_frames: int = 1) -> tuple[Tensor, Tensor]:
    """Pad float32 feature matrices into batch x max_frames x bins (zeros; a matrix shorter
    than ``min_frames`` is zero-padded up to it and counted as that long).

    :return: (features, lengths)
    """
    lens = np.array([max(len(f), min_frames) for f in feats], dtype=np.int64)
    bins = feats[0].shape[1]
    out = np.zeros((len(feats), int(lens.max()), bins), dtype=np.float32)
    for i, f in enumerate(feats):
        out[i, : len(f)] = f
    return torch.from_numpy(out), torch.from_numpy(lens)
