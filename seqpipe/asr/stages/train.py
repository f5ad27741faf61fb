"""train (task: asr): an ASR model (``seqpipe.models.asr``) on the features artifact, with the
shared :class:`seqpipe.common.trainer.Trainer` (checkpoints, resume, early stopping, averaging).

Batches hold at most ``train.max_tokens`` real feature frames + target tokens (speed-perturbed
copies are separate training rows); global CMVN is applied when a batch is made and, with
``train.spec_augment``, SpecAugment masks (2 frequency bands of up to 27/80 of the bins,
2 time spans of up to 5 % of the utterance) drawn from the checkpointed torch RNG.
Loss per batch, summed (the trainer divides by ``n_targets``):

- ``ctc``: CTC loss, normalised by target tokens,
- ``attention``: label-smoothed cross-entropy (``train.label_smoothing``), by target tokens + EOS,
- ``ctc_attention``: ``(1 - train.ctc_weight) * attention + train.ctc_weight * ctc``.

Utterances too short for the front end, or (CTC) with fewer encoder frames than the target
needs, are left out of training (counted in ``train.json``). Validation: greedy WER (%) on
the valid split — CTC best path for ``ctc`` and ``ctc_attention`` (whose attention branch
aligns later than its CTC branch), attention greedy for ``attention`` — and the loss.

``train.members: N`` (arch ctc; the attention archs train one model and log so) trains N models on the same features, member k with seed
``train.seed + k`` in ``member{k}/``, ``train.member_jobs`` of them at once in spawned
processes (each with ``train.threads`` threads; each resumes alone, a finished member is kept).
The artifact's ``model_*.pt`` then hold all members (a :class:`~seqpipe.models.asr.CTCEnsemble`,
``"members": N`` in ``model.json``) and decode as one model.
"""

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
