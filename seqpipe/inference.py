"""Loading a trained model and decoding id sequences in length-sorted batches.

Shared by the decode stage, ``seqpipe decode`` and the Python API, so all three give the same
output for the same settings.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data.batching import decode_batches
from .data.tokenizer import EOS_ID
from .errors import InputError
from .shortlist import LexicalShortlist

CHECKPOINT_FILES = {
    "best": "model_best.pt",
    "last": "model_last.pt",
    "averaged": "model_averaged.pt",
}


def load_mt_model(
    train_dir: Path, checkpoint: str = "best", device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model from ``model.json`` and load a checkpoint (weights_only)."""
    from .models.seq2seq import build_model

    spec = json.loads((train_dir / "model.json").read_text())
    path = train_dir / CHECKPOINT_FILES[checkpoint]
    if not path.is_file():
        if checkpoint == "averaged":
            raise InputError(
                f"{path}: no averaged checkpoint; train with train.average_last=K or use "
                "decode.checkpoint=best"
            )
        raise InputError(f"{path}: checkpoint not found")
    model = build_model(
        **spec["kwargs"],
        src_vocab_size=spec["src_vocab_size"],
        tgt_vocab_size=spec["tgt_vocab_size"],
    )
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.to(device).eval()
    return model, spec


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


def decode_id_seqs(
    model: torch.nn.Module,
    seqs: list[np.ndarray] | list[list[int]],
    *,
    search: str = "beam",
    beam_size: int = 5,
    alpha: float = 1.0,
    max_len_a: float = 1.5,
    max_len_b: int = 5,
    nbest: int = 1,
    batch_tokens: int = 6000,
    device: torch.device | str = "cpu",
    shortlist: LexicalShortlist | None = None,
    shortlist_k: int = 0,
    shortlist_frequent: int = 300,
) -> tuple[list[list[tuple[list[int], float]]], float]:
    """Decode source id sequences (without EOS); returns n-best lists in input order and the
    decoding wall time in seconds. Inputs are length-sorted into batches of ``batch_tokens``
    source tokens (beam search with a shortlist: ``batch_tokens / beam_size``); empty inputs
    decode to an empty output. ``shortlist`` with ``shortlist_k`` > 0: restrict each
    sentence's output vocabulary (:mod:`seqpipe.shortlist`)."""
    from .search import beam_search, greedy_search
    from .stages.train import pad_batch

    out: list[list[tuple[list[int], float]]] = [[([], 0.0)] for _ in seqs]  # empty in, empty out
    todo = np.array([i for i, s in enumerate(seqs) if len(s) > 0], dtype=np.int64)
    lens = np.array([len(seqs[i]) + 1 for i in todo], dtype=np.int64)
    t0 = time.perf_counter()
    with torch.inference_mode():
        beam = not (search == "greedy" or (beam_size == 1 and nbest == 1))
        # with a shortlist, the batch's union of allowed pieces grows with the batch: beam
        # batches of batch_tokens / beam_size source tokens ran 1.35x faster on 2 CPU threads
        # (without a shortlist, 5 % slower: so only then)
        small = beam and shortlist is not None and shortlist_k > 0
        per_batch = max(1, batch_tokens // beam_size) if small else batch_tokens
        for batch in decode_batches(lens, max_tokens=per_batch):
            idx = todo[batch]
            src, src_len = pad_batch([np.asarray(seqs[i]) for i in idx], suffix=EOS_ID)
            src = src.to(device)
            vocab = None
            if shortlist is not None and shortlist_k > 0:
                vocab = shortlist.subset(
                    [seqs[i] for i in idx], shortlist_k, shortlist_frequent, device
                )
            if not beam:
                hyps = greedy_search(model, src, src_len, max_len_a, max_len_b, vocab=vocab)
                res = [[(h, 0.0)] for h in hyps]
            else:
                res = beam_search(
                    model,
                    src,
                    src_len,
                    beam_size=beam_size,
                    alpha=alpha,
                    max_len_a=max_len_a,
                    max_len_b=max_len_b,
                    nbest=nbest,
                    vocab=vocab,
                )
            for i, r in zip(idx, res, strict=True):
                out[i] = [(list(h), float(s)) for h, s in r]
    return out, time.perf_counter() - t0
