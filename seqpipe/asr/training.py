"""Training ASR models: one model, or an ensemble of ``train.members`` CTC models trained
side by side in spawned processes (member k exactly the single model of seed ``train.seed + k``;
each resumes on its own, a finished member is kept), merged into one
:class:`~seqpipe.models.asr.CTCEnsemble` checkpoint."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqpipe.asr.features import FeatureStore
from seqpipe.asr.task import ASRTask
from seqpipe.common.checkpoint import new_model
from seqpipe.common.trainer import save_atomic, train_and_report
from seqpipe.common.vocab import load_target_tokenizer
from seqpipe.core.recipe import model_summary
from seqpipe.models.asr import model_spec

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


def train_model(recipe: Any, feat_dir: Path, out: Path, seed: int, log: Any) -> dict[str, Any]:
    """Train one model into ``out`` (resuming from its checkpoint there): ``model.json``,
    the checkpoints, ``metrics.jsonl``, ``curve.png`` and ``train.json``. :return: train.json"""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    tok = load_target_tokenizer(feat_dir)
    train_store = FeatureStore(feat_dir / "feats" / "train")
    spec = model_spec(recipe.model.model_dump(), train_store.num_mel_bins, tok.tgt_vocab_size)
    model = new_model(spec, out, log, model_summary(recipe.model.model_dump()))
    task = ASRTask(recipe, feat_dir, model, tok, log)
    info = train_and_report(
        recipe.train, model, task, out, log, seed, "frames", dropped_utterances=task.dropped
    )
    return info


MEMBER_FILES = ("model_best.pt", "model_last.pt", "model_averaged.pt")


def train_members(recipe: Any, feat_dir: Path, out: Path, log: Any) -> dict[str, Any]:
    """``train.members`` models, member k in ``out/member{k}`` with seed ``train_seed + k``,
    ``train.member_jobs`` at a time in spawned processes (each resumes on its own). Then the
    members' checkpoints are merged into the ensemble's ``model_*.pt`` (state dicts of a
    :class:`~seqpipe.models.asr.CTCEnsemble`) beside its ``model.json``."""
    n, seed = recipe.train.members, recipe.train_seed()
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
        r.train.device = member_device(recipe.train.device, k)
        member_recipes.append(r)
    log.info(
        "train    %d ensemble members, %d at a time (seeds %d-%d)", n, jobs, seed, seed + n - 1
    )
    infos = _run_members(member_recipes, feat_dir, dirs, seed, jobs, log, log_file)
    spec = json.loads((dirs[0] / "model.json").read_text())
    spec["members"] = n
    spec["parameters"] = sum(i["parameters"] for i in infos)
    _merge_member_checkpoints(dirs, out)
    (out / "model.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    info = _ensemble_info(recipe, infos, seed, spec["parameters"])
    (out / "train.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    _log_ensemble(recipe, info, log)
    return {"train": info}


def _run_members(
    member_recipes: list[Any],
    feat_dir: Path,
    dirs: list[Path],
    seed: int,
    jobs: int,
    log: Any,
    log_file: str | None,
) -> list[dict[str, Any]]:
    """Train the members not finished yet, ``jobs`` at a time; :return: each one's train.json."""

    # a member that finished (its train.json written) before an interruption is not retrained
    done = {
        k: json.loads((d / "train.json").read_text())
        for k, d in enumerate(dirs)
        if (d / "train.json").is_file()
    }
    todo = [k for k in range(len(dirs)) if k not in done]
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
    return [done[k] for k in range(len(dirs))]


def member_device(device: str, k: int) -> str:
    """Member k's device: with ``auto`` or ``cuda`` and several GPUs, GPU k mod their number
    (members trained side by side each get their own); else ``device`` as given."""
    n = torch.cuda.device_count() if device in ("auto", "cuda") else 0
    return f"cuda:{k % n}" if n > 1 else device


def _merge_member_checkpoints(dirs: list[Path], out: Path) -> None:
    """Merge the members' ``MEMBER_FILES`` into ensemble state dicts in ``out``; delete theirs."""
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


def _ensemble_info(
    recipe: Any, infos: list[dict[str, Any]], seed: int, parameters: int
) -> dict[str, Any]:
    """The ensemble's train.json from its members' (``member_runs``)."""
    n = len(infos)
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
        "parameters": parameters,
        "device": infos[0]["device"],
        "dropped_utterances": infos[0]["dropped_utterances"],
        "member_runs": infos,
    }
    info["tokens_per_second"] = round(info["train_tokens"] / max(info["train_seconds"], 1e-9), 1)
    info["frames_per_second"] = info["tokens_per_second"]
    if all("averaged" in i for i in infos):
        info["averaged"] = infos[0]["averaged"]  # per member: see member_runs
    return info


def _log_ensemble(recipe: Any, info: dict[str, Any], log: Any) -> None:
    """Log the ensemble's summary line, and a warning per member that lags behind (WER/CER)."""
    log.info(
        "train    ensemble of %d: %d steps max, %.0f s (slowest member), best valid %s %s",
        info["members"],
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


class _MemberLog(logging.LoggerAdapter):
    """Prefixes a member's log lines with ``[member k]``."""

    def __init__(self, logger: Any, k: int) -> None:
        super().__init__(logger, {"member": k})

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[member {self.extra['member']}] {msg}", kwargs  # type: ignore[index]


def _member_main(
    recipe: Any,
    feat_dir: str,
    out: str,
    seed: int,
    k: int,
    log_file: str | None,
    parent: int,
) -> dict[str, Any]:
    """One member in a spawned process: its log lines go to stderr and the experiment log.
    It stops when the stage's process is gone (killed), leaving its last checkpoint."""

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
