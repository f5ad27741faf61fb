"""decode (task: asr): transcribe the splits in ``decode.splits`` (see ``seqpipe.asr_inference``).

Output per split: ``{split}.hyp`` (one transcript per utterance, in manifest order),
``{split}.ids`` (the utterance ids, same order), ``{split}.pass1`` (the first pass's
transcripts, when ``decode.adapt`` adapts to each speaker: see ``seqpipe.adapt``),
``{split}.nbest.tsv`` when ``decode.nbest > 1`` (beam searches), and ``decode.json`` with the
settings, the checkpoint and the speed: real-time factor = decoding seconds / audio seconds
(with adaptation: all passes and the adaptation; ``rtf_first_pass`` the first pass alone).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from seqpipe.asr.adapt import adapt_and_transcribe
from seqpipe.asr.transcribe import (
    load_asr_model,
    resolve_search,
    split_loader,
    transcribe,
)
from seqpipe.common.trainer import pick_device
from seqpipe.common.vocab import load_target_tokenizer
from seqpipe.core.stage import StageContext
from seqpipe.data.text import write_lines
from seqpipe.errors import InputError


def split_speakers(prep_dir: Path, split: str, utt_ids: list[str]) -> list[str]:
    """The speaker of each utterance (in ``utt_ids`` order) from the prepare manifest."""
    from seqpipe.data.asr_datasets import read_manifest

    manifest = Path(prep_dir) / f"{split}.tsv"
    speakers = {u.utt_id: u.speaker for u in read_manifest(manifest)}
    missing = [u for u in utt_ids if u not in speakers]
    if missing:
        raise InputError(f"{manifest}: no utterance {missing[0]!r} (decode.adapt needs speakers)")
    return [speakers[u] for u in utt_ids]


def run(ctx: StageContext) -> dict[str, Any]:
    from seqpipe.asr.features import FeatureStore

    cfg = ctx.recipe.decode
    device = pick_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    feat_dir = ctx.inputs["features"].path
    tok = load_target_tokenizer(feat_dir)
    model, spec = load_asr_model(ctx.inputs["train"].path, cfg.checkpoint, device)
    if cfg.quantize == "int8":
        from seqpipe.common.checkpoint import quantize_int8

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
    if cfg.adapt != "none":
        info["adapt"] = {
            "method": cfg.adapt,
            "epochs": cfg.adapt_epochs,
            "lr": cfg.adapt_lr,
            "rounds": cfg.adapt_rounds,
            "targets": cfg.adapt_targets,
        }
    for split in cfg.splits:
        if not (feat_dir / "feats" / split).is_dir():
            known = ", ".join(sorted(stats["splits"]))
            raise InputError(f"decode.splits: no split {split!r} in the data (have {known})")
        store = FeatureStore(feat_dir / "feats" / split)
        search_kw = dict(
            search=search,
            beam_size=cfg.beam_size,
            alpha=cfg.alpha,
            max_len_a=cfg.max_len_a,
            max_len_b=cfg.max_len_b,
            nbest=cfg.nbest,
            ctc_weight=cfg.ctc_weight,
            batch_frames=cfg.batch_tokens,
        )
        load = split_loader(feat_dir, store)
        adapted = None
        if cfg.adapt == "lin":
            adapted = adapt_and_transcribe(
                model,
                store.lengths,
                load,
                split_speakers(ctx.inputs["prepare"].path, split, store.utt_ids),
                epochs=cfg.adapt_epochs,
                lr=cfg.adapt_lr,
                rounds=cfg.adapt_rounds,
                targets=cfg.adapt_targets,
                seed=ctx.recipe.seed,
                loss_ctc_weight=ctx.recipe.train.ctc_weight,
                device=device,
                log=ctx.log,
                **search_kw,
            )
            nb = adapted["nbest"]
            secs = adapted["first_pass_seconds"] + adapted["adapt_seconds"]
            write_lines(
                ctx.out / f"{split}.pass1",
                tok.decode_tgt([h[0][0] if h else [] for h in adapted["first_pass"]]),
            )
        else:
            nb, secs = transcribe(model, store.lengths, load, device=device, **search_kw)
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
        if adapted is not None:
            first = adapted["first_pass_seconds"]
            info["splits"][split].update(
                speakers=adapted["speakers"],
                adapted_on=adapted["trained"],
                first_pass_seconds=round(first, 3),
                adapt_seconds=round(adapted["adapt_seconds"], 3),
                rtf_first_pass=round(first / max(audio, 1e-9), 5),
            )
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
