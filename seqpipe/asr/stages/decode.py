"""decode (task: asr): transcribe the splits in ``decode.splits`` (see ``seqpipe.asr.transcribe``).

Output per split: ``{split}.hyp`` (one transcript per utterance, in manifest order),
``{split}.ids`` (the utterance ids, same order), ``{split}.pass1`` (the first pass's
transcripts, when ``decode.adapt`` adapts to each speaker: see :mod:`seqpipe.asr.adapt`),
``{split}.rounds.tsv`` (with ``decode.adapt_rounds`` > 1: each round's transcripts, a line per
utterance, a tab-separated column per round, the last one ``{split}.hyp``'s),
``{split}.nbest.tsv`` when ``decode.nbest > 1`` (beam searches), and ``decode.json`` with the
settings, the checkpoint and the speed: real-time factor = decoding seconds / audio seconds
(with adaptation: all passes and the adaptation; ``rtf_first_pass`` the first pass alone).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from seqpipe.asr.adapt import adapt_as_configured
from seqpipe.asr.features import FeatureStore
from seqpipe.asr.transcribe import split_loader, token_counts, transcribe
from seqpipe.common.checkpoint import load_for_decoding
from seqpipe.common.settings import BEAM_SEARCHES, NBEST_SEARCHES, DecodeSettings
from seqpipe.common.vocab import load_target_tokenizer
from seqpipe.core.stage import StageContext
from seqpipe.data.asr_datasets import read_manifest
from seqpipe.data.text import write_lines, write_nbest
from seqpipe.errors import InputError


def split_speakers(prep_dir: Path, split: str, utt_ids: list[str]) -> list[str]:
    """The speaker of each utterance (in ``utt_ids`` order) from the prepare manifest."""
    manifest = Path(prep_dir) / f"{split}.tsv"
    speakers = {u.utt_id: u.speaker for u in read_manifest(manifest)}
    missing = [u for u in utt_ids if u not in speakers]
    if missing:
        raise InputError(f"{manifest}: no utterance {missing[0]!r} (decode.adapt needs speakers)")
    return [speakers[u] for u in utt_ids]


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.recipe.decode
    model, spec, device = load_for_decoding(ctx.inputs["train"].path, cfg)
    feat_dir = ctx.inputs["features"].path
    tok = load_target_tokenizer(feat_dir)
    stats = json.loads((feat_dir / "stats.json").read_text())
    s = DecodeSettings.from_config(cfg).resolve("asr", spec["arch"])
    info: dict[str, Any] = {
        "checkpoint": cfg.checkpoint,
        "search": s.search,
        "arch": spec["arch"],
        "splits": {},
        "quantize": cfg.quantize,
    }
    if s.search in BEAM_SEARCHES:
        info["beam_size"] = s.beam_size
    if s.search == "joint":
        info["ctc_weight"] = s.ctc_weight
    if cfg.adapt != "none":
        keys = ("epochs", "lr", "rounds", "targets", "prior", "confidence_penalty")
        info["adapt"] = {"method": cfg.adapt, **{k: getattr(cfg, f"adapt_{k}") for k in keys}}
    for split in cfg.splits:
        if not (feat_dir / "feats" / split).is_dir():
            known = ", ".join(sorted(stats["splits"]))
            raise InputError(f"decode.splits: no split {split!r} in the data (have {known})")
        audio = float(stats["splits"][split]["audio_seconds"])
        info["splits"][split] = _decode_split(ctx, model, tok, s, device, split, audio)
    (ctx.out / "decode.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return {"decode": info}


def _decode_split(
    ctx: StageContext,
    model: torch.nn.Module,
    tok: Any,
    s: DecodeSettings,
    device: torch.device,
    split: str,
    audio: float,
) -> dict[str, Any]:
    """Decode one split (with adaptation when the recipe asks), write its files; its
    ``decode.json`` entry."""
    cfg, feat_dir = ctx.recipe.decode, ctx.inputs["features"].path
    store = FeatureStore(feat_dir / "feats" / split)
    load = split_loader(feat_dir, store)
    adapted = None
    if cfg.adapt == "lin":
        adapted = adapt_as_configured(
            model,
            store.lengths,
            load,
            split_speakers(ctx.inputs["prepare"].path, split, store.utt_ids),
            cfg,
            seed=ctx.recipe.seed,
            loss_ctc_weight=ctx.recipe.train.ctc_weight,
            settings=s,
            device=device,
            log=ctx.log,
            token_counts=token_counts(feat_dir) if cfg.adapt_prior > 0 else None,
        )
        nb = adapted["nbest"]
        secs = adapted["first_pass_seconds"] + adapted["adapt_seconds"]
        first = [h[0][0] if h else [] for h in adapted["first_pass"]]
        write_lines(ctx.out / f"{split}.pass1", tok.decode_tgt(first))
        if len(adapted["rounds"]) > 1:  # each round's transcripts, a column per round
            cols = [tok.decode_tgt(r) for r in adapted["rounds"]]
            write_lines(
                ctx.out / f"{split}.rounds.tsv", ["\t".join(t) for t in zip(*cols, strict=True)]
            )
    else:
        nb, secs = transcribe(model, store.lengths, load, s, device=device)
    write_lines(ctx.out / f"{split}.hyp", tok.decode_tgt([h[0][0] if h else [] for h in nb]))
    write_lines(ctx.out / f"{split}.ids", list(store.utt_ids))
    if s.nbest > 1 and s.search in NBEST_SEARCHES:
        write_nbest(ctx.out / f"{split}.nbest.tsv", list(store.utt_ids), nb, tok.decode_tgt)
    out = {
        "utterances": len(store),
        "seconds": round(secs, 3),
        "audio_seconds": audio,
        "rtf": round(secs / max(audio, 1e-9), 5),
    }
    if adapted is not None:
        first_secs = adapted["first_pass_seconds"]
        out.update(
            speakers=adapted["speakers"],
            adapted_on=adapted["trained"],
            first_pass_seconds=round(first_secs, 3),
            adapt_seconds=round(adapted["adapt_seconds"], 3),
            rtf_first_pass=round(first_secs / max(audio, 1e-9), 5),
        )
    ctx.log.info(
        "decode   %-6s %d utterances in %.1f s (RTF %.4f, %s)",
        split,
        len(store),
        secs,
        secs / max(audio, 1e-9),
        s.describe(),
    )
    return out
