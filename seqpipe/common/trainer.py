"""The training loop shared by MT and ASR.

A ``Task`` knows its data and its loss; the ``Trainer`` does everything else: optimizer and LR
schedule, gradient clipping, AMP, DistributedDataParallel under ``torchrun``, NaN/inf
batches, validation and early stopping, the k best checkpoints and their average, progress
bar and metrics, and **resume**: ``checkpoint.pt`` holds model, optimizer, scheduler, grad
scaler, step, epoch, position in the epoch, the RNG states of python/numpy/torch, best score,
patience counter, NaN count and elapsed time, so a run killed at any moment and rerun ends with
the same weights as one never stopped (bit-identical on CPU).

Files written into the stage folder::

    checkpoint.pt        resume state  } dropped when the artifact is committed (a kill before
    best-<step>.pt       the k best    } that resumes or only finalises: nothing is retrained)
    model_best.pt, model_last.pt, model_averaged.pt (if train.average_last > 0)
    metrics.jsonl        one JSON object per log line / validation (appended)
    tb/                  the same as TensorBoard events (seqpipe.common.tensorboard)
    curve.png            learning curves
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from seqpipe.common.tensorboard import TensorBoardLog
from seqpipe.core.cache import write_json_atomic
from seqpipe.core.recipe import TrainConfig
from seqpipe.core.runtime import tune_allocator
from seqpipe.errors import StageError
from seqpipe.models.seq2seq import count_parameters

CHECKPOINT = "checkpoint.pt"

#: Called on rank 0 after each validation, once its checkpoint is written:
#: ``hook(step, score of train.valid_metric)``. ``seqpipe sweep --asha`` reports to Ray Tune
#: through it (the scheduler may end the process there; the run resumes from the checkpoint).
validation_hooks: list[Callable[[int, float], None]] = []


class Batch(Protocol):
    real_tokens: int  # source + target tokens without padding (for tokens/s)
    n_targets: int  # target tokens the loss is normalised by


class Task(Protocol):
    def num_batches_hint(self) -> int: ...
    def batches(self, epoch: int) -> list[Any]: ...
    def collate(self, item: Any) -> Batch: ...  # on the CPU; may run in a worker process
    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor: ...
    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]: ...


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    pos: int = 0  # batches of the current epoch already done
    best: float | None = None
    best_step: int = 0
    bad_validations: int = 0
    nan_batches: int = 0
    elapsed: float = 0.0  # training seconds (excludes validation), summed over resumes
    train_tokens: int = 0
    kept: list[tuple[float, int]] = field(default_factory=list)  # (score, step) of best-k
    finished: bool = False
    stop_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["kept"] = [list(x) for x in self.kept]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        d = dict(d)
        d["kept"] = [tuple(x) for x in d.get("kept", [])]
        return cls(**d)


def pick_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise StageError(f"train.device: {spec} requested but CUDA is not available")
    return torch.device(spec)


def distributed_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, world, local


def higher_is_better(metric: str) -> bool:
    return metric == "bleu"


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_gauss": [int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
        # the rank's own GPU only (another rank's device is not this process's to touch)
        "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_initialized() else [],
    }


def set_rng_state(s: dict[str, Any]) -> None:
    py = s["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np.random.set_state(
        ("MT19937", s["numpy_keys"].numpy().astype(np.uint32), s["numpy_pos"], *s["numpy_gauss"])
    )
    torch.set_rng_state(s["torch"])
    if s.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state(s["cuda"][0])


def save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def make_optimizer(cfg: TrainConfig, params: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
    # fused Adam/AdamW/SGD: one kernel per parameter group instead of a dozen ops per tensor
    # (CPU and CUDA both support it; ~10% of a CPU step for the 8M-parameter MT model), and
    # they skip a step on the device when told of a non-finite loss (no host sync)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=True
        )
    return torch.optim.RMSprop(
        params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )


def lr_factor(cfg: TrainConfig, step: int, total: int) -> float:
    """Multiplier of train.lr at update ``step`` (1-based) for the step-wise schedules."""
    w = cfg.warmup_steps
    if cfg.scheduler == "inverse_sqrt":
        w = max(1, w)
        return min(step / w, math.sqrt(w / max(step, 1)))
    warm = min(1.0, step / w) if w else 1.0
    if cfg.scheduler == "cosine":
        progress = min(1.0, max(0, step - w) / max(1, total - w))
        floor = cfg.min_lr / cfg.lr
        return warm * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
    return warm


class Trainer:
    def __init__(
        self, cfg: TrainConfig, model: nn.Module, task: Task, out: Path, log: Any, seed: int
    ):
        tune_allocator()
        self.cfg, self.task, self.out, self.log, self.seed = cfg, task, Path(out), log, seed
        self.rank, self.world, local = distributed_env()
        # under torchrun, the data-parallel path even with one process (the GPU check runs
        # NCCL's collectives that way on one GPU)
        self.dist = "RANK" in os.environ and "WORLD_SIZE" in os.environ
        if self.dist and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() and cfg.device != "cpu" else "gloo"
            # ranks 1..N wait in a collective while rank 0 validates: allow a long validation
            dist.init_process_group(backend, timeout=datetime.timedelta(minutes=cfg.dist_timeout))
        if self.dist and torch.cuda.is_available() and cfg.device != "cpu":
            self.device = torch.device(f"cuda:{local}")
            torch.cuda.set_device(self.device)
        else:
            self.device = pick_device(cfg.device)
        if self.device.type == "cuda":  # TF32 matmuls and convolutions (Ampere and later)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        if self.device.type == "cpu":
            torch.set_num_threads(
                max(1, cfg.threads if self.world == 1 else cfg.threads // self.world or 1)
            )
        self.model = model.to(self.device)
        self.ddp = (
            nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None
            )
            if self.dist
            else self.model
        )
        self.optimizer = make_optimizer(cfg, self.model.parameters())
        self.plateau = (
            torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer,
                mode="max" if higher_is_better(cfg.valid_metric) else "min",
                factor=cfg.plateau_factor,
                patience=cfg.plateau_patience,
                min_lr=cfg.min_lr,
            )
            if cfg.scheduler == "plateau"
            else None
        )
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
        self.amp_dtype = amp_dtype
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=(cfg.amp == "fp16" and self.device.type == "cuda")
        )
        self.state = TrainState()
        self.is_main = self.rank == 0
        self.total_steps = cfg.max_steps or 1
        self.tb = TensorBoardLog(self.out / "tb", enabled=cfg.tensorboard and self.is_main)

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "plateau": self.plateau.state_dict() if self.plateau else {},
            "scaler": self.scaler.state_dict(),
            "state": self.state.to_dict(),
            "rng": rng_state(),
        }

    def save(self) -> None:
        """Write the resume checkpoint, then drop best-k files it no longer lists (in this
        order, so a kill in between never leaves a checkpoint naming a missing file)."""
        if self.is_main:
            self.tb.flush()  # events up to this step on disk before the checkpoint says so
            save_atomic(self._checkpoint(), self.out / CHECKPOINT)
            kept = {f"best-{step}.pt" for _, step in self.state.kept}
            for p in self.out.glob("best-*.pt"):
                if p.name not in kept:
                    p.unlink()

    def try_resume(self) -> bool:
        path = self.out / CHECKPOINT
        if not path.is_file():
            return False
        ck = load_checkpoint(path)
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        if self.plateau and ck["plateau"]:
            self.plateau.load_state_dict(ck["plateau"])
        self.scaler.load_state_dict(ck["scaler"])
        self.state = TrainState.from_dict(ck["state"])
        set_rng_state(ck["rng"])
        self._drop_metrics_after(self.state.step)
        self.tb.resume_step = self.state.step
        self.log.info(
            "train    resuming at step %d (epoch %d, batch %d; best %s)",
            self.state.step,
            self.state.epoch + 1,
            self.state.pos,
            "-" if self.state.best is None else f"{self.state.best:.3f}",
        )
        return True

    # ------------------------------------------------------------------ metrics
    def _drop_metrics_after(self, step: int) -> None:
        """Forget the records of updates after the checkpoint (they are redone)."""
        path = self.out / "metrics.jsonl"
        if not self.is_main or not path.is_file():
            return
        rows = path.read_text(encoding="utf-8").splitlines(keepends=True)
        keep = [r for r in rows if r.endswith("\n") and json.loads(r).get("step", 0) <= step]
        if len(keep) < len(rows):
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(keep), encoding="utf-8")
            os.replace(tmp, path)

    def _metric(self, record: dict[str, Any]) -> None:
        if not self.is_main:
            return
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self.tb.write(record)

    # ------------------------------------------------------------------ validation
    def _validate(self) -> bool:
        """Validate, keep the k best, update patience. True = stop early. Rank 0 validates;
        the score and the decision reach every rank, whose plateau schedulers all step."""
        cfg, st = self.cfg, self.state
        shared = torch.zeros(2, device=self.device)  # (stop, score): collectives on the device
        if self.is_main:
            torch_rng = torch.get_rng_state()
            self.model.eval()
            with torch.no_grad():
                res = self.task.validate(self.model, self.device)
            self.model.train()
            torch.set_rng_state(torch_rng)
            score = self._last_score = res[cfg.valid_metric]
            better = st.best is None or (
                score > st.best if higher_is_better(cfg.valid_metric) else score < st.best
            )
            if better:
                st.best, st.best_step, st.bad_validations = score, st.step, 0
            else:
                st.bad_validations += 1
            self._keep_best(score)
            self._metric(
                {
                    "step": st.step,
                    "epoch": st.epoch + 1,
                    "valid": res,
                    "lr": self.optimizer.param_groups[0]["lr"],
                }
            )
            self.log.info(
                "valid    step %d: %s%s",
                st.step,
                "  ".join(f"{k} {v:.3f}" for k, v in res.items()),
                "  *best*" if better else f"  (no gain {st.bad_validations}/{cfg.patience})",
            )
            if cfg.patience and st.bad_validations >= cfg.patience:
                st.stop_reason = (
                    f"early stopping: no {cfg.valid_metric} gain in {cfg.patience} validations"
                )
                shared[0] = 1
            shared[1] = score
        if self.dist:
            dist.broadcast(shared, 0)
        stop, score = shared.tolist()  # once per validation
        if self.plateau is not None:  # on every rank: their learning rates stay equal
            self.plateau.step(score)
        return bool(stop)

    def _keep_best(self, score: float) -> None:
        st, k = self.state, self.cfg.keep_best
        sign = 1 if higher_is_better(self.cfg.valid_metric) else -1
        st.kept.append((score, st.step))
        st.kept.sort(key=lambda x: (-sign * x[0], -x[1]))
        st.kept = st.kept[:k]  # files of dropped ones are removed by save()
        if any(step == st.step for _, step in st.kept):
            save_atomic(self.model.state_dict(), self.out / f"best-{st.step}.pt")

    # ------------------------------------------------------------------ the loop
    def train(self) -> TrainState:
        self.try_resume()
        cfg, st = self.cfg, self.state
        if st.finished:
            return st
        self.model.train()
        # for the cosine schedule: its length in updates
        # (each rank takes every world-th batch: an epoch has 1/world of the batches)
        self.total_steps = cfg.max_steps or cfg.max_epochs * max(
            1, self.task.num_batches_hint() // self.world
        )
        from tqdm import tqdm

        self._show_bar = cfg.progress and self.is_main and sys.stderr.isatty()
        self._last_ckpt = time.time()
        self._window = [0, 0.0, 0]  # tokens, seconds, updates since the last log line
        self._sums = torch.zeros(2, device=self.device)  # summed loss per token, skipped batches
        stop = False
        while not stop and st.epoch < cfg.max_epochs:
            batches = self.task.batches(st.epoch)
            if self.world > 1:
                usable = len(batches) - len(batches) % self.world
                batches = batches[self.rank : usable : self.world]
            bar = tqdm(
                total=len(batches),
                initial=st.pos,
                desc=f"epoch {st.epoch + 1}",
                disable=not self._show_bar,
                leave=False,
                dynamic_ncols=True,
            )
            stop = self._epoch(batches, bar)
            bar.close()
            if not stop:
                st.epoch += 1
                st.pos = 0
                if st.step and (st.step % cfg.valid_every):
                    stop = self._validate()
                self.save()
                self._last_ckpt = time.time()
        if not st.stop_reason:
            st.stop_reason = f"max_epochs {cfg.max_epochs} reached"
        st.finished = True
        self.save()
        self.log.info("train    finished at step %d: %s", st.step, st.stop_reason)
        return st

    def _epoch(self, batches: list[Any], bar: Any) -> bool:
        """The rest of this epoch's batches from ``state.pos``; True when training stops.
        Nothing here waits for the device: the loss and the skipped-batch count stay on it
        and are read once per log line (``train.log_every``)."""
        st, w = self.state, self._window
        stream = self._batch_stream(batches, st.pos)
        augment = getattr(self.task, "augment", None)  # ASR: SpecAugment, on the device
        while st.pos < len(batches):
            t0 = time.perf_counter()
            batch = next(stream).to(self.device)
            self._update(augment(batch) if augment else batch)
            st.pos += 1
            st.step += 1
            log_due = st.step % self.cfg.log_every == 0 or st.pos == len(batches)
            # the one read-back per log line; it waits for the device, so it is timed here
            sums = self._sums.tolist() if log_due else None
            dt = time.perf_counter() - t0
            st.elapsed += dt
            tokens = batch.real_tokens * self.world
            st.train_tokens += tokens
            w[0], w[1], w[2] = w[0] + tokens, w[1] + dt, w[2] + 1
            bar.update(1)
            if sums is not None:
                self._log_window(bar, sums)
            if self._after_update():
                return True
        return False

    def _batch_stream(self, batches: list[Any], start: int) -> Iterator[Any]:
        """The collated batches from ``start``: built ahead in ``train.workers`` DataLoader
        processes (pinned for a non-blocking copy to a GPU), or here when it is 0. Collation
        draws no random numbers, so workers change no result."""
        if not self.cfg.workers:
            return (self.task.collate(item) for item in batches[start:])
        from torch.utils.data import DataLoader

        return iter(
            DataLoader(
                batches[start:],  # type: ignore[arg-type]
                batch_size=None,  # each item is one batch's indices
                collate_fn=self.task.collate,
                num_workers=self.cfg.workers,
                pin_memory=self.device.type == "cuda",
                prefetch_factor=4,
                # its own generator: the workers' seeds are not drawn from the training RNG
                generator=torch.Generator().manual_seed(0),
            )
        )

    def _log_window(self, bar: Any, sums: list[float]) -> None:
        """A metrics.jsonl record (and a log line without a bar) for the updates since the
        last one (``sums``: their summed loss per token and skipped batches, read from the
        device); the batches skipped for a non-finite loss are counted here."""
        cfg, st, (tokens, seconds, n) = self.cfg, self.state, self._window
        loss_sum, skipped = sums
        self._sums.zero_()
        if skipped:
            st.nan_batches += int(skipped)
            self.log.warning(
                "train    step %d: the loss was NaN/inf in %d of the last %d batches; they were "
                "skipped (%d so far)",
                st.step,
                skipped,
                n,
                st.nan_batches,
            )
            if st.nan_batches > cfg.max_nan_batches:
                raise StageError(
                    f"train: the loss was NaN/inf in {st.nan_batches} batches (more than "
                    f"train.max_nan_batches={cfg.max_nan_batches}); lower train.lr or use "
                    "train.amp=none"
                )
        self._window[:] = [0, 0.0, 0]
        if n == skipped:
            return
        loss = loss_sum / (n - skipped)
        rec = {
            "step": st.step,
            "epoch": st.epoch + 1,
            "loss": loss,
            "ppl": math.exp(min(loss, 50)),
            "lr": self.optimizer.param_groups[0]["lr"],
            "tok_s": tokens / max(seconds, 1e-9),
            "elapsed": round(st.elapsed, 2),
        }
        self._metric(rec)
        bar.set_postfix(loss=f"{loss:.3f}", ppl=f"{rec['ppl']:.1f}", tok_s=f"{rec['tok_s']:.0f}")
        if not self._show_bar and self.is_main:
            self.log.info(
                "train    epoch %d step %d  loss %.3f  ppl %.1f  %.0f tok/s  lr %.2e",
                rec["epoch"],
                rec["step"],
                rec["loss"],
                rec["ppl"],
                rec["tok_s"],
                rec["lr"],
            )

    def _out_of_time(self) -> bool:
        """The time budget is spent; with several ranks, rank 0's clock decides, read at log
        lines only (every rank stops at the same step, at most ``log_every`` updates late)."""
        cfg, st = self.cfg, self.state
        if not cfg.max_minutes:
            return False
        out = st.elapsed >= cfg.max_minutes * 60
        if not self.dist:
            return out
        if st.step % cfg.log_every:
            return False
        flag = torch.tensor([float(out)], device=self.device)
        dist.broadcast(flag, 0)
        return bool(flag.item())

    def _after_update(self) -> bool:
        """Validate and checkpoint when due; True when a budget, max_steps or early stopping
        ends training."""
        cfg, st = self.cfg, self.state
        out_of_time = self._out_of_time()
        out_of_steps = cfg.max_steps is not None and st.step >= cfg.max_steps
        stop = False
        if st.step % cfg.valid_every == 0 or out_of_time or out_of_steps:
            stop = self._validate()
            self.save()
            self._last_ckpt = time.time()
            if self.is_main:
                for hook in validation_hooks:
                    hook(st.step, self._last_score)
        elif time.time() - self._last_ckpt > 120:
            self.save()
            self._last_ckpt = time.time()
        if out_of_time:
            st.stop_reason, stop = f"time budget of {cfg.max_minutes} min reached", True
        if out_of_steps:
            st.stop_reason, stop = f"max_steps {cfg.max_steps} reached", True
        return stop

    def _update(self, batch: Batch) -> None:
        """One update, queued on the device without waiting for it. A batch whose loss (or
        gradient norm) is NaN/inf changes nothing: the fused optimizers skip the step on the
        device (``found_inf``); fp16's grad scaler does the same; rmsprop asks the host."""
        cfg, st = self.cfg, self.state
        self.optimizer.zero_grad(set_to_none=True)
        if self.plateau is None:
            factor = lr_factor(cfg, st.step + 1, self.total_steps)
            for g in self.optimizer.param_groups:
                g["lr"] = cfg.lr * factor
        with torch.autocast(
            self.device.type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
        ):
            loss = self.task.loss(self.ddp, batch)
        loss = loss.float()
        self.scaler.scale(loss / batch.n_targets).backward()
        bad = ~torch.isfinite(loss)
        if cfg.clip_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            norm = nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad_norm)
            bad |= ~torch.isfinite(norm)
        bad = bad.float().reshape(())
        if self.dist:  # a batch is skipped on every rank or on none
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        self._sums += torch.stack([torch.where(bad > 0, 0.0, loss.detach() / batch.n_targets), bad])
        if self.scaler.is_enabled():
            self.scaler.step(self.optimizer)  # skips steps with inf/NaN gradients itself
            self.scaler.update()
        elif getattr(self.optimizer, "_step_supports_amp_scaling", False):
            self.optimizer.found_inf = bad
            self.optimizer.step()
        elif not bad.item():  # rmsprop: no device-side skip
            self.optimizer.step()

    # ------------------------------------------------------------------ the end
    def finalize(self) -> dict[str, Any]:
        """Write model_best/last/averaged and the curve (the resume checkpoint stays)."""
        st = self.state
        info: dict[str, Any] = {
            "steps": st.step,
            "epochs": st.epoch + (0 if st.pos == 0 else 1),
            "best": st.best,
            "best_step": st.best_step,
            "stop_reason": st.stop_reason,
            "train_seconds": round(st.elapsed, 1),
            "train_tokens": st.train_tokens,
            "tokens_per_second": round(st.train_tokens / max(st.elapsed, 1e-9), 1),
            "nan_batches": st.nan_batches,
            "valid_metric": self.cfg.valid_metric,
        }
        if self.device.type == "cuda":
            info["cuda_peak_memory_mib"] = round(
                torch.cuda.max_memory_allocated(self.device) / 2**20
            )
        if self.dist:  # evidence that data-parallel ranks hold identical weights
            info["world_size"] = self.world
            digests: list[Any] = [None] * self.world
            dist.all_gather_object(digests, weights_digest(self.model))
            info["weights_sha256_per_rank"] = digests  # rank 0 writes train.json
        if not self.is_main:
            return info
        save_atomic(self.model.state_dict(), self.out / "model_last.pt")
        kept = [self.out / f"best-{step}.pt" for _, step in st.kept]
        kept = [p for p in kept if p.is_file()]
        if kept:
            save_atomic(load_checkpoint(kept[0]), self.out / "model_best.pt")
        else:
            save_atomic(self.model.state_dict(), self.out / "model_best.pt")
        if self.cfg.average_last and kept:
            states = [load_checkpoint(p) for p in kept[: self.cfg.average_last]]
            avg = {}
            for k, v in states[0].items():
                if v.is_floating_point():
                    avg[k] = sum(s[k] for s in states) / len(states)
                else:
                    avg[k] = v
            save_atomic(avg, self.out / "model_averaged.pt")
            info["averaged"] = [p.name for p in kept[: self.cfg.average_last]]
        # checkpoint.pt and best-*.pt stay until the artifact is committed (StageSpec.scratch)
        self.tb.close()
        plot_curves(self.out / "metrics.jsonl", self.out / "curve.png", self.cfg.valid_metric)
        return info


def train_and_report(
    cfg: TrainConfig,
    model: nn.Module,
    task: Task,
    out: Path,
    log: Any,
    seed: int,
    unit: str = "real tokens",
    **extra: Any,
) -> dict[str, Any]:
    """Train (resuming from ``out``), finalize, write ``train.json`` (with ``extra``) and log
    the summary line; ``unit`` names what ``tokens_per_second`` counts. :return: train.json"""
    trainer = Trainer(cfg, model, task, out, log, seed)
    trainer.train()
    info = trainer.finalize()
    info["parameters"] = count_parameters(model)
    info["device"] = str(trainer.device)
    info.update(extra)
    if unit == "frames":
        info["frames_per_second"] = info["tokens_per_second"]  # ASR: real feature frames
    if trainer.is_main:  # torchrun: rank 0 alone writes the artifact
        write_json_atomic(out / "train.json", info)
    log.info(
        "train    %d steps, %.0f s, %.0f %s/s, best valid %s %s at step %d",
        info["steps"],
        info["train_seconds"],
        info["tokens_per_second"],
        unit,
        cfg.valid_metric,
        "-" if info["best"] is None else f"{info['best']:.2f}",
        info["best_step"],
    )
    return info


def weights_digest(model: nn.Module) -> str:
    """sha256 over every parameter and buffer, in state_dict order."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def plot_curves(metrics: Path, png: Path, valid_metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, valid = [], []
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            r = json.loads(line)
            (valid if "valid" in r else train).append(r)
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss", lw=1)
    if valid and "loss" in valid[0]["valid"]:
        ax.plot(
            [r["step"] for r in valid],
            [r["valid"]["loss"] for r in valid],
            "o-",
            label="valid loss",
        )
    ax.set_xlabel("update")
    ax.set_ylabel("loss (per token)")
    if valid and valid_metric in valid[0]["valid"] and valid_metric != "loss":
        ax2 = ax.twinx()
        ax2.plot(
            [r["step"] for r in valid],
            [r["valid"][valid_metric] for r in valid],
            "s--",
            color="tab:green",
            label=f"valid {valid_metric}",
        )
        ax2.set_ylabel(valid_metric)
        ax2.legend(loc="upper right")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
