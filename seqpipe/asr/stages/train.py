"""train (task: asr): one ASR model (:mod:`seqpipe.asr.task`: batches, loss, validation) or,
with ``train.members: N`` and arch ctc, an ensemble (:mod:`seqpipe.asr.training`), on the
features artifact, with the shared :class:`seqpipe.common.trainer.Trainer`. The artifact holds
``model.json``, ``model_{best,last,averaged}.pt`` (an ensemble's hold all members),
``metrics.jsonl``, ``curve.png`` and ``train.json``."""

from __future__ import annotations

from typing import Any

from seqpipe.asr.training import train_members, train_model
from seqpipe.core.stage import StageContext
from seqpipe.errors import InputError


def run(ctx: StageContext) -> dict[str, Any]:
    recipe = ctx.recipe
    if recipe.train.valid_metric == "bleu":
        raise InputError("train.valid_metric: bleu is for MT; use wer or loss for ASR")
    feat_dir = ctx.inputs["features"].path
    if recipe.train.members > 1 and recipe.model.arch == "ctc":
        return train_members(recipe, feat_dir, ctx.out, ctx.log)
    if recipe.train.members > 1:
        ctx.log.warning(
            "train    train.members=%d: ensembles are for model.arch ctc; %s trains one model",
            recipe.train.members,
            recipe.model.arch,
        )
    info = train_model(recipe, feat_dir, ctx.out, recipe.train_seed(), ctx.log)
    return {"train": info}
