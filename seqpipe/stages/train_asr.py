"""train (task: asr): an ASR model (``seqpipe.models.asr``) on the features artifact, with the
shared :class:`seqpipe.trainer.Trainer` (checkpoints, resume, early stopping, averaging).

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

import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.tokenizer import BOS_ID, EOS_ID, IdArray, load_target_tokenizer
from ..errors import InputError
from ..pipeline import StageContext
from ..recipe import Recipe
from .train import pad_batch, recipe_train_batches, train_seed

# a member whose best valid WER/CER is this many points above the best member's gets a warning
LAGGING_MEMBER_POINTS = 10.0


def lagging_members(best: list[float | None]) -> list[int]:
    """Members whose best valid WER/CER (lower is better) is more than
    :data:`LAGGING_MEMBER_POINTS` above the best member's: most likely a failed training (e.g.
    stuck in CTC's all-blank plateau)."""
    scores = [b for b in best if b is not None]
    if not scores:
        return []
    return [
        k for k, b in enumerate(best) if b is not None and b > min(scores) + LAGGING_MEMBER_POINTS
    ]


def run(ctx: StageContext) -> dict[str, Any]:
    recipe = ctx.recipe
    if recipe.train.valid_metric == "bleu":
        raise InputError("train.valid_metric: bleu is for MT; use wer or loss for ASR")
    feat_dir = ctx.inputs["features"].path
    if recipe.train.members > 1 and recipe.model.arch == "ctc":
        return _train_members(recipe, feat_dir, ctx.out, ctx.log)
    if recipe.train.members > 1:
        ctx.log.warning(
            "train    train.members=%d: ensembles are for model.arch ctc; %s trains one model",
            recipe.train.members,
            recipe.model.arch,
        )
    info = train_model(recipe, feat_dir, ctx.out, train_seed(recipe), ctx.log)
    return {"train": info}


def train_model(recipe: Recipe, feat_dir: Path, out: Path, seed: int, log: Any) -> dict[str, Any]:
    """Train one model into ``out`` (resuming from its checkpoint there): ``model.json``,
    the checkpoints, ``metrics.jsonl``, ``curve.png`` and ``train.json``. :return: train.json"""
    from ..features import FeatureStore
    from ..models.asr import build_asr_model, model_spec, model_summary
    from ..models.seq2seq import count_parameters
    from ..trainer import Trainer

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    tok = load_target_tokenizer(feat_dir)
    train_store = FeatureStore(feat_dir / "feats" / "train")
    spec = model_spec(recipe.model.model_dump(), train_store.num_mel_bins, tok.tgt_vocab_size)
    try:
        model = build_asr_model(spec)
    except ValueError as e:
        raise InputError(f"model: {e}") from None
    spec["parameters"] = count_parameters(model)
    (out / "model.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    log.info("train    %s parameters, %s", f"{spec['parameters']:,}", model_summary(spec))
    task = ASRTask(recipe, feat_dir, model, tok, log)
    trainer = Trainer(recipe.train, model, task, out, log, seed)
    trainer.train()
    info = trainer.finalize()
    info["parameters"] = spec["parameters"]
    info["device"] = str(trainer.device)
    info["dropped_utterances"] = task.dropped
    info["frames_per_second"] = info["tokens_per_second"]  # ASR: real feature frames
    (out / "train.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    log.info(
        "train    %d steps, %.0f s, %.0f frames/s, best valid %s %s at step %d",
        info["steps"],
        info["train_seconds"],
        info["tokens_per_second"],
        recipe.train.valid_metric,
        "-" if info["best"] is None else f"{info['best']:.2f}",
        info["best_step"],
    )
    return info


MEMBER_FILES = ("model_best.pt", "model_last.pt", "model_averaged.pt")


def _train_members(recipe: Recipe, feat_dir: Path, out: Path, log: Any) -> dict[str, Any]:
    """``train.members`` models, member k in ``out/member{k}`` with seed ``train_seed + k``,
    ``train.member_jobs`` at a time in spawned processes (each resumes on its own). Then the
    members' checkpoints are merged into the ensemble's ``model_*.pt`` (state dicts of a
    :class:`~seqpipe.models.asr.CTCEnsemble`) beside its ``model.json``."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from ..trainer import save_atomic

    n, seed = recipe.train.members, train_seed(recipe)
    jobs = min(n, recipe.train.member_jobs or n)
    dirs = [out / f"member{k}" for k in range(n)]
    for d in dirs:
        d.mkdir(exist_ok=True)
    log_file = next(
        (
            h.baseFilename
            for h in logging.getLogger("seqpipe").handlers
            if hasattr(h, "baseFilename")
        ),
        None,
    )
    member_recipes = []
    for k in range(n):  # member k is exactly the single model of train.seed = seed + k
        r = recipe.model_copy(deep=True)
        r.train.seed = seed + k
        r.train.members = 1
        r.train.progress = False  # several bars would garble the terminal
        member_recipes.append(r)
    log.info(
        "train    %d ensemble members, %d at a time (seeds %d-%d)", n, jobs, seed, seed + n - 1
    )
    # a member that finished (its train.json written) before an interruption is not retrained
    done = {
        k: json.loads((d / "train.json").read_text())
        for k, d in enumerate(dirs)
        if (d / "train.json").is_file()
    }
    todo = [k for k in range(n) if k not in done]
    if jobs == 1 or len(todo) <= 1:
        for k in todo:
            done[k] = train_model(
                member_recipes[k], feat_dir, dirs[k], seed + k, _MemberLog(log, k)
            )
    else:
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=spawn) as pool:
            futures = {
                k: pool.submit(
                    _member_main,
                    member_recipes[k],
                    str(feat_dir),
                    str(dirs[k]),
                    seed + k,
                    k,
                    log_file,
                    os.getpid(),
                )
                for k in todo
            }
            for k, f in futures.items():
                done[k] = f.result()
    infos = [done[k] for k in range(n)]
    spec = json.loads((dirs[0] / "model.json").read_text())
    spec["members"] = n
    spec["parameters"] = sum(i["parameters"] for i in infos)
    for name in MEMBER_FILES:  # merge all, then delete (a rerun after a kill finds either)
        if all((d / name).is_file() for d in dirs):
            merged = {}
            for k, d in enumerate(dirs):
                state = torch.load(d / name, map_location="cpu", weights_only=True)
                merged.update({f"members.{k}.{key}": v for key, v in state.items()})
            save_atomic(merged, out / name)
    for name in MEMBER_FILES:
        for d in dirs:
            if (out / name).is_file():
                (d / name).unlink(missing_ok=True)
    (out / "model.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    info: dict[str, Any] = {
        "members": n,
        "member_seeds": [seed + k for k in range(n)],
        "steps": max(i["steps"] for i in infos),
        "epochs": max(i["epochs"] for i in infos),
        "best": [i["best"] for i in infos],
        "best_step": [i["best_step"] for i in infos],
        "stop_reason": [i["stop_reason"] for i in infos],
        # members train side by side: the stage's training time is the slowest member's
        "train_seconds": max(i["train_seconds"] for i in infos),
        "train_tokens": sum(i["train_tokens"] for i in infos),
        "valid_metric": recipe.train.valid_metric,
        "parameters": spec["parameters"],
        "device": infos[0]["device"],
        "dropped_utterances": infos[0]["dropped_utterances"],
        "member_runs": infos,
    }
    info["tokens_per_second"] = round(info["train_tokens"] / max(info["train_seconds"], 1e-9), 1)
    info["frames_per_second"] = info["tokens_per_second"]
    if all("averaged" in i for i in infos):
        info["averaged"] = infos[0]["averaged"]  # per member: see member_runs
    (out / "train.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    log.info(
        "train    ensemble of %d: %d steps max, %.0f s (slowest member), best valid %s %s",
        n,
        info["steps"],
        info["train_seconds"],
        recipe.train.valid_metric,
        ", ".join("-" if b is None else f"{b:.2f}" for b in info["best"]),
    )
    if recipe.train.valid_metric in ("wer", "cer"):
        for k in lagging_members(info["best"]):
            log.warning(
                "train    member %d did not train like the others (best valid %s %.2f vs "
                "%.2f): it still votes in the ensemble; another train.seed may do better",
                k,
                recipe.train.valid_metric,
                info["best"][k],
                min(b for b in info["best"] if b is not None),
            )
    return {"train": info}


class _MemberLog(logging.LoggerAdapter):
    """Prefixes a member's log lines with ``[member k]``."""

    def __init__(self, logger: Any, k: int) -> None:
        super().__init__(logger, {"member": k})

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[member {self.extra['member']}] {msg}", kwargs  # type: ignore[index]


def _member_main(
    recipe: Recipe,
    feat_dir: str,
    out: str,
    seed: int,
    k: int,
    log_file: str | None,
    parent: int,
) -> dict[str, Any]:
    """One member in a spawned process: its log lines go to stderr and the experiment log.
    It stops when the stage's process is gone (killed), leaving its last checkpoint."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(3)

    threading.Thread(target=watch, daemon=True).start()
    logger = logging.getLogger("seqpipe")
    logger.setLevel(logging.INFO)
    if not logger.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(h)
        if log_file:
            f = logging.FileHandler(log_file, mode="a", encoding="utf-8")
            f.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            logger.addHandler(f)
    return train_model(recipe, Path(feat_dir), Path(out), seed, _MemberLog(logger, k))


@dataclass
class ASRBatch:
    feats: torch.Tensor  # batch x frames x bins (CMVN applied, maybe SpecAugment-ed)
    lengths: torch.Tensor  # batch
    targets: torch.Tensor  # batch x tgt_len (PAD-padded, no BOS/EOS) for CTC
    target_lengths: torch.Tensor  # batch
    tgt_in: torch.Tensor  # batch x tgt_len+1: BOS + target
    tgt_out: torch.Tensor  # batch x tgt_len+1: target + EOS
    real_tokens: int  # feature frames (for the speed log)
    n_targets: int


class ASRTask:
    """Training rows (utterance x speed) of the features artifact, and validation."""

    def __init__(
        self,
        recipe: Recipe,
        feat_dir: Path,
        model: torch.nn.Module,
        tok: Any,
        log: Any,
    ):
        from ..asr_inference import split_loader
        from ..features import FeatureStore, SpecAugment

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
        self, feats: list[np.ndarray], tgts: list[np.ndarray], device: torch.device, augment: bool
    ) -> ASRBatch:
        augment_fn = self.spec_augment.train() if augment and self.spec_augment else None
        return make_asr_batch(feats, tgts, self.model.min_frames, self.arch, device, augment_fn)

    def collate(self, idx: np.ndarray, device: torch.device) -> ASRBatch:
        rows = self.rows[idx]
        return self.make_batch(
            [self.load_train(int(r)) for r in rows],
            [self.tgt[int(r)] for r in rows],
            device,
            augment=True,
        )

    def loss(
        self, model: torch.nn.Module, batch: ASRBatch
    ) -> tuple[torch.Tensor, dict[str, float]]:
        return asr_loss(model, batch, self.arch, self.cfg.ctc_weight, self.cfg.label_smoothing)

    def validate(self, model: torch.nn.Module, device: torch.device) -> dict[str, float]:
        """Greedy WER/CER (%) and the loss per target token on the valid split."""
        from ..asr_inference import transcribe
        from ..asr_scoring import score_asr

        n = len(self.valid_tgt)
        lengths = self.valid_store.lengths[:n]
        # ctc_attention: the CTC branch (aligned early) picks checkpoints; decoding is joint
        search = "greedy" if self.arch == "attention" else "ctc_greedy"
        dec = self.recipe.decode
        nbest, _ = transcribe(
            model,
            lengths,
            self.load_valid,
            search=search,
            max_len_a=dec.max_len_a,
            max_len_b=dec.max_len_b,
            batch_frames=dec.batch_tokens,
            device=device,
        )
        hyps = self.tok.decode_tgt([h[0][0] if h else [] for h in nbest])
        res = score_asr(self.valid_refs, hyps, normalization=self.recipe.score.asr_normalization)
        # teacher-forced / CTC loss over the utterances that can be trained on
        loss_sum, n_tok = 0.0, 0
        ok = [i for i in range(n) if lengths[i] >= model.min_frames and len(self.valid_tgt[i])]
        for start in range(0, len(ok), 32):
            chunk = ok[start : start + 32]
            batch = self.make_batch(
                [self.load_valid(i) for i in chunk],
                [self.valid_tgt[i] for i in chunk],
                device,
                augment=False,
            )
            loss, _ = asr_loss(model, batch, self.arch, self.cfg.ctc_weight, 0.0)
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
    augment: Any = None,
) -> ASRBatch:
    """A padded batch of normalised features and their targets (``augment``: e.g.
    SpecAugment, applied to the padded features)."""
    from ..models.asr import pad_features

    x, x_len = pad_features(feats, min_frames)
    if augment is not None:
        x = augment(x, x_len)
    targets, target_lengths = pad_batch(tgts)
    tgt_in, _ = pad_batch(tgts, prefix=BOS_ID)
    tgt_out, _ = pad_batch(tgts, suffix=EOS_ID)
    n_t = int(target_lengths.sum()) + (0 if arch == "ctc" else len(tgts))
    return ASRBatch(
        x.to(device, non_blocking=True),
        x_len,
        targets.to(device),
        target_lengths,
        tgt_in.to(device),
        tgt_out.to(device),
        int(x_len.sum()),
        n_t,
    )


def asr_loss(
    model: torch.nn.Module, batch: ASRBatch, arch: str, ctc_weight: float, label_smoothing: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Summed loss of a batch (see the module docstring) and its parts."""
    from ..models.ctc import ctc_loss
    from ..models.seq2seq import label_smoothed_nll

    out = model(batch.feats, batch.lengths, None if arch == "ctc" else batch.tgt_in)
    stats: dict[str, float] = {}
    total = None
    if out.att_logits is not None:
        att, nll, _ = label_smoothed_nll(out.att_logits, batch.tgt_out, label_smoothing)
        stats["att_nll"] = float(nll)
        total = att if arch == "attention" else (1.0 - ctc_weight) * att
    if out.ctc_log_probs is not None:
        ctc = ctc_loss(
            out.ctc_log_probs,
            out.enc.lengths,
            batch.targets.to(out.ctc_log_probs.device),
            batch.target_lengths,
        )
        stats["ctc"] = float(ctc.detach())
        total = ctc if arch == "ctc" else total + ctc_weight * ctc
    assert total is not None
    return total, stats
