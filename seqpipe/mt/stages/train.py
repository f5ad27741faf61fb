"""train: build the model from ``model:``, train it with ``train:`` (see :mod:`seqpipe.common.trainer`).

It reads the tokenize artifact's id arrays (and, for BPE-dropout, the prepare artifact's text).
The artifact holds ``model.json`` (everything needed to rebuild the model), the checkpoints
(``model_best.pt``, ``model_last.pt``, ``model_averaged.pt``), ``metrics.jsonl``, ``curve.png``
and ``train.json`` (steps, time, tokens/s, stop reason).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from seqpipe.common.checkpoint import build_model, model_spec_mt
from seqpipe.common.trainer import Trainer
from seqpipe.common.vocab import Tokenizer
from seqpipe.core.recipe import model_summary
from seqpipe.core.stage import StageContext
from seqpipe.models.seq2seq import count_parameters
from seqpipe.mt.task import MTTask


def run(ctx: StageContext) -> dict[str, Any]:
    recipe = ctx.recipe
    seed = recipe.train_seed()
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    tok_dir = ctx.inputs["tokenize"].path
    tok = Tokenizer(tok_dir)
    spec = model_spec_mt(recipe.model.model_dump(), tok.src_vocab_size, tok.tgt_vocab_size)
    model = build_model(spec)
    spec["parameters"] = count_parameters(model)
    (ctx.out / "model.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    ctx.log.info(
        "train    %s parameters, %s",
        f"{spec['parameters']:,}",
        model_summary(recipe.model.model_dump()),
    )
    task = MTTask(recipe, tok_dir, ctx.inputs["prepare"].path, tok)
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
