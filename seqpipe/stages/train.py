"""train: build the model from ``model:``, train it with ``train:`` (see seqpipe.trainer).

MT reads the tokenize artifact's id arrays (and, for BPE-dropout, the prepare artifact's text).
The artifact holds ``model.json`` (everything needed to rebuild the model), the checkpoints
(``model_best.pt``, ``model_last.pt``, ``model_averaged.pt``), ``metrics.jsonl``, ``curve.png``
and ``train.json`` (steps, time, tokens/s, stop reason).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data.batching import decode_batches, train_batches
from ..data.tokenizer import BOS_ID, EOS_ID, PAD_ID, IdArray, Tokenizer
from ..pipeline import StageContext
from ..recipe import ModelConfig, Recipe


def recipe_train_batches(
    src_len: np.ndarray, tgt_len: np.ndarray, recipe: Recipe, epoch: int
) -> list[np.ndarray]:
    """One epoch's batches under the recipe's train: keys (token budget, sentence cap, seed,
    sortagrad curriculum); source lengths are tokens (MT) or feature frames (ASR)."""
    cfg = recipe.train
    return train_batches(
        src_len,
        tgt_len,
        max_tokens=cfg.max_tokens,
        max_sentences=cfg.max_sentences,
        seed=train_seed(recipe),
        epoch=epoch,
        shortest_first=epoch < cfg.sortagrad,  # epoch counts from 0
    )


def train_seed(recipe: Recipe) -> int:
    """``train.seed``, or the recipe's seed when it is not set."""
    return recipe.seed if recipe.train.seed is None else recipe.train.seed


def model_kwargs(cfg: ModelConfig) -> dict[str, Any]:
    """The model: keys that the attention encoder-decoder builder takes (not the ASR ones)."""
    from ..models.asr import ASR_KEYS

    return {k: v for k, v in cfg.model_dump().items() if k not in ASR_KEYS}


def run(ctx: StageContext) -> dict[str, Any]:
    if ctx.recipe.task == "asr":
        from .train_asr import run as run_asr

        return run_asr(ctx)
    from ..models.seq2seq import build_model, count_parameters
    from ..trainer import Trainer

    recipe = ctx.recipe
    seed = train_seed(recipe)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    tok_dir = ctx.inputs["tokenize"].path
    tok = Tokenizer(tok_dir)
    spec = {
        "task": "mt",
        "kwargs": model_kwargs(recipe.model),
        "src_vocab_size": tok.src_vocab_size,
        "tgt_vocab_size": tok.tgt_vocab_size,
    }
    model = build_model(
        **spec["kwargs"],
        src_vocab_size=spec["src_vocab_size"],
        tgt_vocab_size=spec["tgt_vocab_size"],
    )
    spec["parameters"] = count_parameters(model)
    (ctx.out / "model.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    ctx.log.info("train    %s parameters, %s", f"{spec['parameters']:,}", _summary(recipe))
    task = MTTask(recipe, ctx, tok)
    trainer = Trainer(recipe.train, model, task, ctx.out, ctx.log, seed)
    trainer.train()
    info = trainer.finalize()
    info["parameters"] = spec["parameters"]
    info["device"] = str(trainer.device)
    (ctx.out / "train.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    ctx.log.info(
        "train    %d steps, %.0f s, %.0f real tokens/s, best valid %s %s at step %d",
        info["steps"],
        info["train_seconds"],
        info["tokens_per_second"],
        recipe.train.valid_metric,
        "-" if info["best"] is None else f"{info['best']:.2f}",
        info["best_step"],
    )
    return {"train": info}


def _summary(recipe: Recipe) -> str:
    m = recipe.model
    return (
        f"{'bi' if m.bidirectional else ''}{m.cell.upper()} {m.hidden_size}x{m.enc_layers} → "
        f"{m.cell.upper()} {m.hidden_size}x{m.dec_layers}, {m.attention} attention"
        f"{'' if m.input_feeding else ', no input feeding'}"
    )


@dataclass
class MTBatch:
    src: torch.Tensor  # batch x src_len (ids, EOS-terminated, PAD-padded)
    src_len: torch.Tensor  # batch
    tgt_in: torch.Tensor  # batch x tgt_len: BOS + target
    tgt_out: torch.Tensor  # batch x tgt_len: target + EOS
    real_tokens: int
    n_targets: int


def pad_batch(
    seqs: list[np.ndarray], prefix: int | None = None, suffix: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad id sequences into batch x max_len (int64) with optional BOS/EOS; also lengths."""
    extra = (prefix is not None) + (suffix is not None)
    lens = np.fromiter((len(s) + extra for s in seqs), dtype=np.int64, count=len(seqs))
    out = np.full((len(seqs), int(lens.max(initial=1))), PAD_ID, dtype=np.int64)
    start = 1 if prefix is not None else 0
    for i, s in enumerate(seqs):
        if prefix is not None:
            out[i, 0] = prefix
        out[i, start : start + len(s)] = s
        if suffix is not None:
            out[i, start + len(s)] = suffix
    return torch.from_numpy(out), torch.from_numpy(lens)


class MTTask:
    """Multi30k-style parallel data from the tokenize artifact."""

    def __init__(self, recipe: Recipe, ctx: StageContext, tok: Tokenizer):
        self.recipe, self.cfg, self.tok = recipe, recipe.train, tok
        d = ctx.inputs["tokenize"].path
        self.prep = ctx.inputs["prepare"].path
        src, tgt = IdArray(d, "train.src"), IdArray(d, "train.tgt")
        self.src = [src[i] for i in range(len(src))]
        self.tgt = [tgt[i] for i in range(len(tgt))]
        self.src_len = src.lengths() + 1  # + EOS
        self.tgt_len = tgt.lengths() + 1
        vsrc = IdArray(d, "valid.src")
        n = (
            len(vsrc)
            if self.cfg.valid_max_sentences is None
            else min(len(vsrc), self.cfg.valid_max_sentences)
        )
        self.valid_src = [vsrc[i] for i in range(n)]
        vtgt = IdArray(d, "valid.tgt")
        self.valid_tgt = [vtgt[i] for i in range(n)]
        self.valid_refs = tok.decode_tgt([t.tolist() for t in self.valid_tgt])
        self._sampled_epoch: int | None = None

    def num_batches_hint(self) -> int:
        return max(1, int((self.src_len.sum() + self.tgt_len.sum()) // self.cfg.max_tokens))

    def batches(self, epoch: int) -> list[np.ndarray]:
        alpha = self.recipe.tokenize.bpe_dropout
        if alpha > 0 and self._sampled_epoch != epoch:
            self._resample(epoch, alpha)
        return recipe_train_batches(self.src_len, self.tgt_len, self.recipe, epoch)

    def _resample(self, epoch: int, alpha: float) -> None:
        """BPE-dropout: a new sampled segmentation of the training data for this epoch."""
        import sentencepiece as spm

        from ..data.text import read_lines

        spm.set_random_generator_seed(train_seed(self.recipe) * 1000 + epoch)
        src_text = read_lines(self.prep / "train.src")
        tgt_text = read_lines(self.prep / "train.tgt")
        kw = dict(enable_sampling=True, alpha=alpha, nbest_size=-1)
        self.src = [np.asarray(x, dtype=np.int32) for x in self.tok.src.encode(src_text, **kw)]
        self.tgt = [np.asarray(x, dtype=np.int32) for x in self.tok.tgt.encode(tgt_text, **kw)]
        self.src_len = np.array([len(x) + 1 for x in self.src])
        self.tgt_len = np.array([len(x) + 1 for x in self.tgt])
        self._sampled_epoch = epoch

    def collate(self, idx: np.ndarray, device: torch.device) -> MTBatch:
        src, src_len = pad_batch([self.src[i] for i in idx], suffix=EOS_ID)
        tgt_seqs = [self.tgt[i] for i in idx]
        tgt_in, _ = pad_batch(tgt_seqs, prefix=BOS_ID)
        tgt_out, tgt_len = pad_batch(tgt_seqs, suffix=EOS_ID)
        n_t = int(tgt_len.sum())
        return MTBatch(
            src.to(device, non_blocking=True),
            src_len,
            tgt_in.to(device, non_blocking=True),
            tgt_out.to(device, non_blocking=True),
            int(src_len.sum()) + n_t,
            n_t,
        )

    def loss(self, model: torch.nn.Module, batch: MTBatch) -> tuple[torch.Tensor, dict[str, float]]:
        from ..models.seq2seq import label_smoothed_nll

        logits = model(batch.src, batch.src_len, batch.tgt_in)
        loss, nll, n = label_smoothed_nll(logits, batch.tgt_out, self.cfg.label_smoothing)
        return loss, {"nll": float(nll), "n": int(n)}

    def validate(self, model: torch.nn.Module, device: torch.device) -> dict[str, float]:
        """Teacher-forced loss and greedy BLEU on the validation split."""
        import sacrebleu

        from ..models.seq2seq import label_smoothed_nll
        from ..search import greedy_search

        lens = np.array([len(s) + 1 for s in self.valid_src])
        hyps: list[list[int]] = [[] for _ in self.valid_src]
        nll_sum, n_tok = 0.0, 0
        for idx in decode_batches(lens, max_tokens=self.recipe.decode.batch_tokens):
            src, src_len = pad_batch([self.valid_src[i] for i in idx], suffix=EOS_ID)
            src = src.to(device)
            tgt_seqs = [self.valid_tgt[i] for i in idx]
            tgt_in, _ = pad_batch(tgt_seqs, prefix=BOS_ID)
            tgt_out, _ = pad_batch(tgt_seqs, suffix=EOS_ID)
            logits = model(src, src_len, tgt_in.to(device))
            _, nll, n = label_smoothed_nll(logits, tgt_out.to(device), 0.0)
            nll_sum += float(nll)
            n_tok += int(n)
            out = greedy_search(
                model, src, src_len, self.recipe.decode.max_len_a, self.recipe.decode.max_len_b
            )
            for i, h in zip(idx, out, strict=True):
                hyps[i] = h
        text = self.tok.decode_tgt(hyps)
        bleu = sacrebleu.corpus_bleu(text, [self.valid_refs]).score
        return {"bleu": bleu, "loss": nll_sum / max(1, n_tok)}
