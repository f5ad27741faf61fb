"""decode (task: asr): transcribe the splits in ``decode.splits`` (see ``seqpipe.asr_inference``).

Output per split: ``{split}.hyp`` (one transcript per utterance, in manifest order),
``{split}.ids`` (the utterance ids, same order), ``{split}.nbest.tsv`` when
``decode.nbest > 1`` (beam searches), and ``decode.json`` with the settings, the checkpoint
and the speed: real-time factor = decoding seconds / audio seconds.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from ..asr_inference import (
    load_asr_model,
    resolve_search,
    split_loader,
    transcribe,
)
from ..data.text import write_lines
from ..data.tokenizer import load_target_tokenizer
from ..errors import InputError
from ..pipeline import StageContext
from ..trainer import pick_device


def run(ctx: StageContext) -> dict[str, Any]:
    from ..features import FeatureStore

    cfg = ctx.recipe.decode
    device = pick_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    feat_dir = ctx.inputs["features"].path
    tok = load_target_tokenizer(feat_dir)
    model, spec = load_asr_model(ctx.inputs["train"].path, cfg.checkpoint, device)
    if cfg.quantize == "int8":
        from ..inference import quantize_int8

        model = quantize_int8(model, device)
    stats = json.loads((feat_dir / "stats.json").read_text())
    search = resolve_search(cfg.search, spec["arch"])
    info: dict[str, Any] = {
        "checkpoint": cfg.checkpoint,
        "search": search,
        "arch": spec["arch"],
        "splits": {},
        "quantize": cfg.quantize,
    }
    if search in ("beam", "joint", "ctc_beam"):
        info["beam_size"] = cfg.beam_size
    if search == "joint":
        info["ctc_weight"] = cfg.ctc_weight
    for split in cfg.splits:
        if not (feat_dir / "feats" / split).is_dir():
            known = ", ".join(sorted(stats["splits"]))
            raise InputError(f"decode.splits: no split {split!r} in the data (have {known})")
        store = FeatureStore(feat_dir / "feats" / split)
        nb, secs = transcribe(
            model,
            store.lengths,
            split_loader(feat_dir, store),
            search=search,
            beam_size=cfg.beam_size,
            alpha=cfg.alpha,
            max_len_a=cfg.max_len_a,
            max_len_b=cfg.max_len_b,
            nbest=cfg.nbest,
            ctc_weight=cfg.ctc_weight,
            batch_frames=cfg.batch_tokens,
            device=device,
        )
        write_lines(ctx.out / f"{split}.hyp", tok.decode_tgt([h[0][0] if h else [] for h in nb]))
        write_lines(ctx.out / f"{split}.ids", list(store.utt_ids))
        if cfg.nbest > 1 and search in ("beam", "joint"):
            with open(ctx.out / f"{split}.nbest.tsv", "w", encoding="utf-8") as f:
                for utt, hyps in zip(store.utt_ids, nb, strict=True):
                    texts = tok.decode_tgt([h for h, _ in hyps])
                    for rank, ((_, score), text) in enumerate(zip(hyps, texts, strict=True), 1):
                        f.write(f"{utt}\t{rank}\t{score:.4f}\t{text}\n")
        audio = float(stats["splits"][split]["audio_seconds"])
        info["splits"][split] = {
            "utterances": len(store),
            "seconds": round(secs, 3),
            "audio_seconds": audio,
            "rtf": round(secs / max(audio, 1e-9), 5),
        }
        ctx.log.info(
            "decode   %-6s %d utterances in %.1f s (RTF %.4f, %s%s)",
            split,
            len(store),
            secs,
            secs / max(audio, 1e-9),
            search,
            f" {cfg.beam_size}" if search in ("beam", "joint", "ctc_beam") else "",
        )
    (ctx.out / "decode.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return {"decode": info}
