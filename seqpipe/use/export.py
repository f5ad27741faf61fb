"""``seqpipe export``: one self-contained model file.

The file is written with ``torch.save`` and holds only tensors and plain containers of
str/int/float/bytes, so ``torch.load(path, weights_only=True)`` reads it::

    {"format": "seqpipe-model", "format_version": 1,
     "task": "mt" | "asr",
     "model_json": <the train artifact's model.json, as text>,
     "state_dict": {name: tensor},             # the chosen checkpoint's weights
     "checkpoint": "best" | "last" | "averaged",
     "tokenizer": {"type": "spm", "files": {"spm.model": uint8 tensor}}   # or src/tgt.model
                | {"type": "char", "chars_json": <chars.json text>},
     "features": {"num_mel_bins", "sample_rate", "cmvn_mean", "cmvn_std",  # ASR only
                  "utterance_norm": "none" | "mean" | "meanvar", "speaker_cmn",
                  "token_counts": int64 tensor | None},  # training target ids' counts
     "decode": {...},                           # the recipe's decode: section (defaults)
     "recipe": <the resolved recipe YAML> | None,
     "train": {...},                            # the train artifact's summary (steps, time)
     "source": {"train_key", "git_commit", "recipe"},
     "versions": {"seqpipe", "torch", ...},     # at export time
     "created": "2026-...Z"}

``seqpipe decode model.spt ...`` and ``load_model("model.spt")`` use it without any cache.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqpipe.asr.transcribe import feature_settings
from seqpipe.common.checkpoint import CHECKPOINT_FILES
from seqpipe.core.cache import git_commit, library_versions
from seqpipe.errors import InputError
from seqpipe.use.api import BUNDLE_FORMAT, ModelSource

FORMAT_VERSION = 1


def _bytes_tensor(data: bytes) -> Any:
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8).copy())


def build_bundle(src: ModelSource, checkpoint: str | None = None) -> dict[str, Any]:
    """The export dict of a model found in a cache (see :func:`seqpipe.use.api.resolve_model`)."""

    if src.bundle is not None:
        raise InputError(f"{src.description}: already an exported model file")
    assert src.train_dir is not None and src.tok_dir is not None
    checkpoint = checkpoint or src.decode_cfg.checkpoint
    ck = src.train_dir / CHECKPOINT_FILES[checkpoint]
    if not ck.is_file():
        hint = " (train with train.average_last=K)" if checkpoint == "averaged" else ""
        raise InputError(f"{ck}: no {checkpoint} checkpoint{hint}")
    manifest = src.manifest()
    state = torch.load(ck, map_location="cpu", weights_only=True)
    tok_dir = src.tok_dir
    decode = src.decode_cfg.model_dump(mode="json")
    decode["checkpoint"] = checkpoint
    bundle: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "format_version": FORMAT_VERSION,
        "task": src.task,
        "model_json": (src.train_dir / "model.json").read_text("utf-8"),
        "state_dict": state,
        "checkpoint": checkpoint,
        "tokenizer": _tokenizer_entry(tok_dir),
        "decode": decode,
        "recipe": src.recipe_text,
        "train": {
            k: v
            for k, v in (manifest.get("train") or {}).items()
            if isinstance(v, (str, int, float)) or v is None
        },
        "source": {
            "train_key": manifest.get("key"),
            "git_commit": manifest.get("git_commit"),
            "recipe": manifest.get("recipe"),
        },
        "versions": library_versions(),
        "exported_with": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if src.task == "mt" and (tok_dir / "train.src.ids.npy").is_file():
        import json

        from seqpipe.mt.shortlist import LexicalShortlist

        spec = json.loads((src.train_dir / "model.json").read_text("utf-8"))
        bundle["shortlist"] = LexicalShortlist.from_tokenized(
            tok_dir, spec["src_vocab_size"], spec["tgt_vocab_size"]
        ).to_tensors()
    if src.task == "asr":
        bundle["features"] = _features_entry(tok_dir)
    return bundle


def _tokenizer_entry(tok_dir: Path) -> dict[str, Any]:
    """The target (MT: both sides') vocabulary: ``chars.json`` or the SentencePiece models."""
    if (tok_dir / "chars.json").is_file():
        return {"type": "char", "chars_json": (tok_dir / "chars.json").read_text("utf-8")}
    names = ["spm.model"] if (tok_dir / "spm.model").is_file() else ["src.model", "tgt.model"]
    files = {}
    for n in names:
        if not (tok_dir / n).is_file():
            raise InputError(f"{tok_dir / n}: SentencePiece model not found")
        files[n] = _bytes_tensor((tok_dir / n).read_bytes())
    return {"type": "spm", "files": files}


def _features_entry(feat_dir: Path) -> dict[str, Any]:
    """ASR: the feature settings and normalisation a model was trained with (tensors)."""

    feats = feature_settings(feat_dir)
    cmvn = feats.pop("cmvn")
    feats["cmvn_mean"] = feats["cmvn_std"] = None
    if feats["token_counts"] is not None:
        feats["token_counts"] = torch.from_numpy(feats["token_counts"])
    if cmvn is not None:
        feats["cmvn_mean"] = torch.from_numpy(np.asarray(cmvn[0], dtype=np.float32))
        feats["cmvn_std"] = torch.from_numpy(np.asarray(cmvn[1], dtype=np.float32))
    return feats


def export_model(src: ModelSource, out: str | Path, checkpoint: str | None = None) -> Path:
    """Write ``src``'s model to ``out`` (atomically) and check that it loads with
    ``weights_only=True``."""
    out = Path(out)
    if out.is_dir():
        raise InputError(f"{out}: is a folder; give a file name (e.g. model.spt)")
    out.parent.mkdir(parents=True, exist_ok=True)
    bundle = build_bundle(src, checkpoint)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        torch.save(bundle, tmp)
        torch.load(tmp, map_location="cpu", weights_only=True)  # the promise users rely on
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
