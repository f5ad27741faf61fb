"""The ASR task for the trainer, and the loss that speaker adaptation (:mod:`seqpipe.asr.adapt`)
reuses.

Training rows are (utterance x speed) of the features artifact. Batches hold at most
``train.max_tokens`` real feature frames + target tokens, normalised as at decoding time, with
``train.spec_augment`` masks (2 frequency bands of up to 27/80 of the bins, 2 time spans of up
to 5 % of the utterance) from the checkpointed torch RNG. Loss per batch, summed (the trainer
divides by ``n_targets``): ``ctc`` CTC; ``attention`` label-smoothed cross-entropy;
``ctc_attention`` ``(1 - train.ctc_weight) * attention + train.ctc_weight * ctc``. Utterances too
short for the front end, or (CTC) with fewer encoder frames than the target needs, are left out
(counted in ``train.json``). Validation: greedy WER (%) on the valid split — CTC best path for
``ctc`` and ``ctc_attention`` (whose attention branch aligns later), attention greedy for
``attention`` — and the loss.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqpipe.asr.features import FeatureStore, SpecAugment
from seqpipe.asr.scoring import score_asr
from seqpipe.asr.transcribe import split_loader, transcribe
from seqpipe.common.batching import DeviceBatch, pad_batch, recipe_train_batches
from seqpipe.common.settings import DecodeSettings
from seqpipe.common.vocab import BOS_ID, EOS_ID, IdArray
from seqpipe.errors import InputError
from seqpipe.models.asr import pad_features
from seqpipe.models.ctc import ctc_loss
from seqpipe.models.seq2seq import label_smoothed_nll


@dataclass
class ASRBatch(DeviceBatch):
    feats: torch.Tensor  # batch x frames x bins (CMVN applied, maybe SpecAugment-ed)
    lengths: torch.Tensor  # batch
    targets: torch.Tensor  # batch x tgt_len (PAD-padded, no BOS/EOS) for CTC
    target_lengths: torch.Tensor  # batch
    tgt_in: torch.Tensor  # batch x tgt_len+1: BOS + target
    tgt_out: torch.Tensor  # batch x tgt_len+1: target + EOS
    real_tokens: int  # feature frames (for the speed log)
    n_targets: int
    HOST_FIELDS = ("lengths", "target_lengths")  # packing and CTC read them on the host


class ASRTask:
    """Training rows (utterance x speed) of the features artifact, and validation."""

    def __init__(
        self,
        recipe: Any,
        feat_dir: Path,
        model: torch.nn.Module,
        tok: Any,
        log: Any,
    ):
        self.recipe, self.cfg, self.model, self.tok = recipe, recipe.train, model, tok
        self.arch = recipe.model.arch
        d = feat_dir
        self.store = FeatureStore(d / "feats" / "train")
        self.load_train = split_loader(d, self.store)  # i -> normalised features of row i
        tgt = IdArray(d, "train.tgt")
        n_utts, rows = len(tgt), len(self.store)
        if n_utts == 0 or rows % n_utts:
            raise InputError(f"{d}: {rows} feature rows for {n_utts} training transcripts")
        per = rows // n_utts  # speeds per utterance, in store order: utt0 x speeds, utt1 x ...
        self.tgt = [tgt[i // per] for i in range(rows)]
        frames = self.store.lengths
        tgt_len = np.array([len(t) for t in self.tgt], dtype=np.int64)
        self.rows = np.nonzero(trainable(model, self.arch, frames, self.tgt))[0]
        self.dropped = int(rows - len(self.rows))
        if not len(self.rows):
            raise InputError("train: no training utterance is long enough for its transcript")
        if self.dropped:
            log.warning(
                "train    %d of %d training rows are too short for their "
                "transcripts and are left out",
                self.dropped,
                rows,
            )
        self.frames = frames[self.rows]
        self.tgt_len = tgt_len[self.rows] + 1
        bins = self.store.num_mel_bins
        self.spec_augment = (
            SpecAugment(
                freq_masks=2,
                freq_width=max(1, round(27 * bins / 80)),
                time_masks=2,
                time_width=0.05,
            )
            if self.cfg.spec_augment
            else None
        )
        # validation data
        self.valid_store = FeatureStore(d / "feats" / "valid")
        self.load_valid = split_loader(d, self.valid_store)
        vtgt = IdArray(d, "valid.tgt")
        n = len(vtgt)
        if self.cfg.valid_max_sentences is not None:
            n = min(n, self.cfg.valid_max_sentences)
        self.valid_tgt = [vtgt[i] for i in range(n)]
        self.valid_refs = tok.decode_tgt([t.tolist() for t in self.valid_tgt])

    def num_batches_hint(self) -> int:
        return max(1, int((self.frames.sum() + self.tgt_len.sum()) // self.cfg.max_tokens))

    def batches(self, epoch: int) -> list[np.ndarray]:
        return recipe_train_batches(self.frames, self.tgt_len, self.recipe, epoch)

    def make_batch(
        self, feats: list[np.ndarray], tgts: list[np.ndarray], device: torch.device | str
    ) -> ASRBatch:
        return make_asr_batch(feats, tgts, self.model.min_frames, self.arch, device)

    def collate(self, idx: np.ndarray) -> ASRBatch:
        """The padded, normalised batch of training rows ``idx``, on the CPU (in a DataLoader
        worker with ``train.workers``); SpecAugment follows on the device (:meth:`augment`)."""
        rows = self.rows[idx]
        return self.make_batch(
            [self.load_train(int(r)) for r in rows], [self.tgt[int(r)] for r in rows], "cpu"
        )

    def augment(self, batch: ASRBatch) -> ASRBatch:
        """SpecAugment on the batch where it is (the training process's RNG: exact resume)."""
        if not self.spec_augment:
            return batch
        return dataclasses.replace(
            batch, feats=self.spec_augment.train()(batch.feats, batch.lengths)
        )

    def loss(self, model: torch.nn.Module, batch: ASRBatch) -> torch.Tensor:
        return asr_loss(model, batch, self.arch, self.cfg.ctc_weight, self.cfg.label_smoothing)

    def validate(self, model: torch.nn.Module, device: torch.device) -> dict[str, float]:
        """Greedy WER/CER (%) and the loss per target token on the valid split."""
        n = len(self.valid_tgt)
        lengths = self.valid_store.lengths[:n]
        # ctc_attention: the CTC branch (aligned early) picks checkpoints; decoding is joint
        search = "greedy" if self.arch == "attention" else "ctc_greedy"
        s = DecodeSettings.from_config(self.recipe.decode, nbest=1).override(search=search)
        nbest, _ = transcribe(model, lengths, self.load_valid, s, device=device)
        hyps = self.tok.decode_tgt([h[0][0] if h else [] for h in nbest])
        res = score_asr(self.valid_refs, hyps, normalization=self.recipe.score.asr_normalization)
        # teacher-forced / CTC loss over the utterances that can be trained on
        loss_sum, n_tok = 0.0, 0
        ok = [i for i in range(n) if lengths[i] >= model.min_frames and len(self.valid_tgt[i])]
        for start in range(0, len(ok), 32):
            chunk = ok[start : start + 32]
            batch = self.make_batch(
                [self.load_valid(i) for i in chunk], [self.valid_tgt[i] for i in chunk], device
            )
            loss = asr_loss(model, batch, self.arch, self.cfg.ctc_weight, 0.0)
            loss_sum += float(loss)
            n_tok += batch.n_targets
        return {"wer": 100 * res["wer"], "cer": 100 * res["cer"], "loss": loss_sum / max(1, n_tok)}


def trainable(model: Any, arch: str, frames: np.ndarray, tgts: list[np.ndarray]) -> np.ndarray:
    """Which (frames, target) pairs can be trained on: a target at all, enough frames for the
    front end, and for a CTC head a frame per token plus one per repeated token."""
    tgt_len = np.array([len(t) for t in tgts], dtype=np.int64)
    ok = (np.asarray(frames) >= model.min_frames) & (tgt_len > 0)
    if arch != "attention":
        repeats = np.array([int((t[1:] == t[:-1]).sum()) for t in tgts], dtype=np.int64)
        ok &= model.encoder_lengths(frames) >= tgt_len + repeats
    return ok


def make_asr_batch(
    feats: list[np.ndarray],
    tgts: list[np.ndarray],
    min_frames: int,
    arch: str,
    device: torch.device | str,
) -> ASRBatch:
    """A padded batch of normalised features and their targets, on ``device`` (lengths on
    the host)."""
    x, x_len = pad_features(feats, min_frames)
    targets, target_lengths = pad_batch(tgts)
    tgt_in, _ = pad_batch(tgts, prefix=BOS_ID)
    tgt_out, _ = pad_batch(tgts, suffix=EOS_ID)
    n_t = int(target_lengths.sum()) + (0 if arch == "ctc" else len(tgts))
    return ASRBatch(
        x.to(device, non_blocking=True),
        x_len,
        targets.to(device, non_blocking=True),
        target_lengths,
        tgt_in.to(device, non_blocking=True),
        tgt_out.to(device, non_blocking=True),
        int(x_len.sum()),
        n_t,
    )


def asr_loss(
    model: torch.nn.Module, batch: ASRBatch, arch: str, ctc_weight: float, label_smoothing: float
) -> torch.Tensor:
    """Summed loss of a batch (see the module docstring), a scalar on the model's device (not
    read back: no host sync)."""
    out = model(batch.feats, batch.lengths, None if arch == "ctc" else batch.tgt_in)
    return output_loss(out, batch, arch, ctc_weight, label_smoothing)


def output_loss(
    out: Any, batch: ASRBatch, arch: str, ctc_weight: float, label_smoothing: float
) -> torch.Tensor:
    """:func:`asr_loss` of a model output already computed (an :class:`ASROutput`)."""
    total = None
    if out.att_logits is not None:
        att, _, _ = label_smoothed_nll(out.att_logits, batch.tgt_out, label_smoothing)
        total = att if arch == "attention" else (1.0 - ctc_weight) * att
    if out.ctc_log_probs is not None:
        ctc = ctc_loss(
            out.ctc_log_probs,
            out.enc.lengths,
            batch.targets.to(out.ctc_log_probs.device),
            batch.target_lengths,
        )
        total = ctc if arch == "ctc" else total + ctc_weight * ctc
    assert total is not None
    return total
