"""features (task: asr): filterbank features of every split and the target vocabulary.

Reads the prepare artifact's manifests. Writes:

- ``feats/<split>/`` — a :class:`seqpipe.asr.features.FeatureStore` per split (float16 memmap +
  index): Kaldi fbank with ``features.num_mel_bins`` bins at ``data.sample_rate``. The train
  split holds every utterance once per factor in ``features.speed_perturb`` (ids
  ``sp0.9-<utt>``; train only); the other splits speed 1.0 only;
- ``cmvn.json`` — global mean/std over the training frames (``features.cmvn``), and
  ``norm.json`` — how to normalise (global CMVN, then ``features.utterance_cmn``/``utterance_cvn``: subtract each
  utterance's own mean, or ``features.speaker_cmn``: its speaker's mean, stored per row in
  ``feats/<split>/speaker_means.npy`` of the splits it covers); applied by training and decoding
  (``seqpipe.asr.transcribe.split_loader``), never baked into the stored features;
- the target vocabulary: ``tokenize.model_type: char`` → ``chars.json``
  (:class:`seqpipe.common.vocab.CharTokenizer`), ``unigram``/``bpe`` → ``spm.model``
  trained on the training transcripts (``tokenize.vocab_size``); read either with
  :func:`seqpipe.common.vocab.load_target_tokenizer`;
- ``{split}.tgt.ids.npy`` / ``.offsets.npy`` — the encoded transcripts, one row per utterance
  in manifest order (a speed-perturbed copy uses its utterance's row);
- ``stats.json`` — per split: utterances, feature rows, frames, audio seconds, target tokens,
  extraction seconds and speed (``x_real_time``: audio seconds of every speed copy per second).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from typing import Any

from seqpipe.asr.features import (
    CMVN_FILE,
    FeatureStore,
    compute_features_parallel,
    save_speaker_means,
)
from seqpipe.common.vocab import CharTokenizer, Tokenizer, save_ids, train_sentencepiece
from seqpipe.core.stage import StageContext
from seqpipe.data.asr_datasets import Utterance, manifest_splits, read_manifest
from seqpipe.errors import InputError


def run(ctx: StageContext) -> dict[str, Any]:
    recipe = ctx.recipe
    cfg, tcfg = recipe.features, recipe.tokenize
    speeds = sorted({float(s) for s in cfg.speed_perturb})
    prep = ctx.inputs["prepare"].path
    splits = manifest_splits(prep)
    if "train" not in splits:
        raise InputError(f"{prep}: the prepare artifact has no train split")
    manifests = {s: read_manifest(prep / f"{s}.tsv") for s in splits}
    stats: dict[str, Any] = {
        "num_mel_bins": cfg.num_mel_bins,
        "sample_rate": recipe.data.sample_rate,
        "speed_perturb": speeds,
        "vtlp": cfg.vtlp,
        "noise_snr": cfg.noise_snr,
        "cmvn": cfg.cmvn,
        "splits": {},
    }
    progress = sys.stderr.isatty()
    for split in splits:
        _split_features(ctx, split, manifests[split], speeds, stats, progress)
    stats["normalization"] = _save_normalization(ctx)

    # target vocabulary from the training transcripts only
    tok = _target_tokenizer(ctx, [u.text for u in manifests["train"]])
    stats["vocab_size"] = tok.tgt_vocab_size
    stats["target_type"] = tcfg.model_type
    for split in splits:
        ids = tok.encode_tgt([u.text for u in manifests[split]])
        save_ids(ctx.out, f"{split}.tgt", ids)
        stats["splits"][split]["tgt_tokens"] = sum(map(len, ids))
    ctx.log.info("features %s targets, vocabulary of %d", tcfg.model_type, tok.tgt_vocab_size)
    (ctx.out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return {
        "features": {s: v["rows"] for s, v in stats["splits"].items()},
        "vocab": tok.tgt_vocab_size,
    }


def _split_features(
    ctx: StageContext,
    split: str,
    utts: list[Utterance],
    speeds: list[float],
    stats: dict[str, Any],
    progress: bool,
) -> None:
    """One split's feature store (and speaker means), its entry in ``stats`` and its log line."""
    recipe = ctx.recipe
    cfg = recipe.features
    split_speeds = speeds if split == "train" else [1.0]
    t0 = time.perf_counter()
    store = compute_features_parallel(
        utts,
        ctx.out / "feats" / split,
        num_workers=cfg.workers,
        sample_rate=recipe.data.sample_rate,
        num_mel_bins=cfg.num_mel_bins,
        speeds=split_speeds,
        compute_cmvn=cfg.cmvn and split == "train",
        progress=progress,
        desc=f"fbank {split}",
        vtlp=cfg.vtlp if split == "train" else 0.0,
        seed=recipe.seed,
        noise_snr=cfg.noise_snr if split == "train" else None,
    )
    if cfg.speaker_cmn == "all" or (cfg.speaker_cmn == "eval" and split != "train"):
        # train is first: its CMVN statistics exist by now
        per = len(store) // max(len(utts), 1)  # rows: utt0 x speeds, utt1 x speeds, ...
        speakers = [utts[i // per].speaker for i in range(len(store))]
        cmvn = FeatureStore(ctx.out / "feats" / "train").cmvn if cfg.cmvn else None
        n_spk = save_speaker_means(store, speakers, cmvn)
        stats.setdefault("speakers", {})[split] = n_spk
    secs = time.perf_counter() - t0
    empty = int((store.lengths == 0).sum())
    audio = sum(u.duration for u in utts)
    processed = audio * sum(1 / s for s in split_speeds)  # a 0.9 copy is longer
    stats["splits"][split] = {
        "utterances": len(utts),
        "rows": len(store),
        "frames": int(store.lengths.sum()),
        "audio_seconds": round(audio, 3),
        "empty": empty,
        # extraction speed: seconds of audio processed (every speed copy) per wall second
        "seconds": round(secs, 3),
        "x_real_time": round(processed / max(secs, 1e-9), 1),
    }
    ctx.log.info(
        "features %-6s %6d utterances%s, %d frames%s",
        split,
        len(utts),
        f" x {len(split_speeds)} speeds" if len(split_speeds) > 1 else "",
        int(store.lengths.sum()),
        f", {empty} shorter than one frame" if empty else "",
    )


def _save_normalization(ctx: StageContext) -> dict[str, Any]:
    """Copy the training CMVN beside the stores and write ``norm.json``; :return: norm.json."""
    cfg = ctx.recipe.features
    if cfg.cmvn:
        shutil.copyfile(ctx.out / "feats" / "train" / CMVN_FILE, ctx.out / CMVN_FILE)
    norm = {
        "global_cmvn": cfg.cmvn,
        "utterance_cmn": cfg.utterance_cmn or cfg.utterance_cvn,
        "utterance_cvn": cfg.utterance_cvn,
        "speaker_cmn": cfg.speaker_cmn,
    }
    (ctx.out / "norm.json").write_text(json.dumps(norm) + "\n", encoding="utf-8")
    return norm


def _target_tokenizer(ctx: StageContext, train_text: list[str]) -> CharTokenizer | Tokenizer:
    """Build and save the target vocabulary (characters or SentencePiece) from ``train_text``."""
    recipe = ctx.recipe
    tcfg = recipe.tokenize
    if tcfg.model_type == "char":
        tok: CharTokenizer | Tokenizer = CharTokenizer.build(train_text)
        tok.save(ctx.out)
        return tok
    (ctx.out / "train.txt").write_text("\n".join(train_text) + "\n", encoding="utf-8")
    train_sentencepiece([ctx.out / "train.txt"], ctx.out / "spm", tcfg, recipe.seed)
    return Tokenizer(ctx.out)
