"""train: build the model from ``model:``, train it with ``train:`` (see :mod:`seqpipe.common.trainer`).

It reads the tokenize artifact's id arrays (and, for BPE-dropout, the prepare artifact's text).
The artifact holds ``model.json`` (everything needed to rebuild the model), the checkpoints
(``model_best.pt``, ``model_last.pt``, ``model_averaged.pt``), ``metrics.jsonl``, ``curve.png``
and ``train.json`` (steps, time, tokens/s, stop reason).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from seqpipe.common.checkpoint import model_spec_mt, new_model
from seqpipe.common.trainer import train_and_report
from seqpipe.common.vocab import Tokenizer
from seqpipe.core.recipe import model_summary
from seqpipe.core.stage import StageContext
from seqpipe.mt.task import MTTask


def run(ctx: StageContext) -> dict[str, Any]:
    recipe = ctx.recipe
    seed = recipe.train_seed()
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    tok_dir = ctx.inputs["tokenize"].path
    tok = Tokenizer(tok_dir)
    spec = model_spec_mt(recipe.model.model_dump(), tok.src_vocab_size, tok.tgt_vocab_size)
    model = new_model(spec, ctx.out, ctx.log, model_summary(recipe.model.model_dump()))
    task = MTTask(recipe, tok_dir, ctx.inputs["prepare"].path, tok)
    info = train_and_report(recipe.train, model, task, ctx.out, ctx.log, seed)
    return {"train": info}
