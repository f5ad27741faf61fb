"""Models from their saved spec: building one (either task), loading a trained one, int8.

The one place that turns a train artifact (``model.json`` + ``model_{best,last,averaged}.pt``)
or an exported bundle's spec into a model: the decode stages, ``seqpipe decode`` and the Python
API all load through here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seqpipe.common.trainer import pick_device
from seqpipe.core.cache import verified
from seqpipe.errors import InputError
from seqpipe.models.asr import build_asr_model
from seqpipe.models.seq2seq import build_model as build_seq2seq
from seqpipe.models.seq2seq import count_parameters

CHECKPOINT_FILES = {
    "best": "model_best.pt",
    "last": "model_last.pt",
    "averaged": "model_averaged.pt",
}


def model_spec_mt(model_cfg: dict[str, Any], src_vocab_size: int, tgt_vocab_size: int) -> dict:
    """The ``model.json`` of an MT model: everything :func:`build_model` needs."""
    return {
        "task": "mt",
        "kwargs": model_cfg,
        "src_vocab_size": src_vocab_size,
        "tgt_vocab_size": tgt_vocab_size,
    }


def build_model(spec: dict[str, Any]) -> nn.Module:
    """A freshly initialised model from its ``model.json`` spec, either task (an MT
    :class:`~seqpipe.models.seq2seq.Seq2Seq`, an ASR model or CTC ensemble)."""
    if spec.get("task", "mt") == "asr":
        return build_asr_model(spec)
    return build_seq2seq(
        **spec["kwargs"],
        src_vocab_size=spec["src_vocab_size"],
        tgt_vocab_size=spec["tgt_vocab_size"],
    )


def new_model(spec: dict[str, Any], out: Path, log: Any, summary: str) -> nn.Module:
    """A freshly initialised model for a train stage: built from ``spec`` (a ValueError from
    the builder is bad input), its parameter count added to the spec, which is saved as
    ``out/model.json`` and logged."""
    try:
        model = build_model(spec)
    except ValueError as e:
        raise InputError(f"model: {e}") from None
    spec["parameters"] = count_parameters(model)
    if os.environ.get("RANK", "0") == "0":  # torchrun: rank 0 alone writes the artifact
        (out / "model.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    log.info("train    %s parameters, %s", f"{spec['parameters']:,}", summary)
    return model


def load_trained(
    train_dir: Path, checkpoint: str = "best", device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """A train artifact's model (either task) in eval mode on ``device``, and its spec: rebuilt
    from ``model.json``, weights from the checkpoint (``torch.load(weights_only=True)``)."""
    train_dir = Path(train_dir)
    spec = json.loads(verified(train_dir / "model.json").read_text())
    path = verified(train_dir / CHECKPOINT_FILES[checkpoint])  # (listed but gone: corrupt)
    if not path.is_file():
        if checkpoint == "averaged":
            raise InputError(
                f"{path}: no averaged checkpoint; train with train.average_last=K or use "
                "decode.checkpoint=best"
            )
        raise InputError(f"{path}: checkpoint not found")
    model = build_model(spec)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.to(device).eval()
    return model, spec


def load_for_decoding(train_dir: Path, cfg: Any) -> tuple[nn.Module, dict[str, Any], torch.device]:
    """A decode stage's model: on ``decode.device`` (CPU: ``decode.threads`` torch threads),
    from ``decode.checkpoint``, int8 with ``decode.quantize``. :return: model, spec, device"""
    # int8 dynamic quantization runs on the CPU: `auto` picks it even where a GPU is
    device = pick_device("cpu" if cfg.quantize == "int8" and cfg.device == "auto" else cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    model, spec = load_trained(train_dir, cfg.checkpoint, device)
    if cfg.quantize == "int8":
        model = quantize_int8(model, device)
    return model, spec, device


QUANTIZE_CHOICES = ("none", "int8")


def quantize_int8(model: torch.nn.Module, device: torch.device | str = "cpu") -> torch.nn.Module:
    """Dynamic int8 quantization for CPU decoding (``decode.quantize: int8``).

    The weights of every ``Linear``, ``GRU`` and ``LSTM`` become int8 (per tensor); their
    inputs are quantized on the fly with one scale per input matrix, i.e. per batch (so an
    output can depend on the rest of its batch), and results come back in float32 (``torch.ao.quantization.quantize_dynamic``, fbgemm/x86 kernels). Embeddings,
    convolutions, plain RNNs and all search arithmetic stay float32. CPU only."""
    if torch.device(device).type != "cpu":
        raise InputError(
            f"decode.quantize: int8 is dynamic quantization for CPU decoding; the device is "
            f"{device} (use decode.quantize=none there)"
        )
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as e:  # pragma: no cover - depends on the torch release
        raise InputError(
            "decode.quantize: int8 needs torch.ao.quantization.quantize_dynamic, which this "
            f"torch ({torch.__version__}) lacks"
        ) from e
    import warnings

    with warnings.catch_warnings():
        # torch 2.9 announces that eager-mode quantization moves to torchao; the kernels used
        # here are torch's own (fbgemm) and unchanged
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        return quantize_dynamic(
            model, {torch.nn.Linear, torch.nn.GRU, torch.nn.LSTM}, dtype=torch.qint8
        )
