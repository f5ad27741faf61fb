"""Leave-one-speaker-out for recipes/asr_small.yaml: how the recipe holds on a voice it has
never heard, measured as users run it. Prints JSON.

Each of the mirror's five FSDD voices is held out in turn as the test voice; the next voice
(cyclically) gives the validation figure, never a voice the model trained on. Checkpoints are
chosen on the recipe's validation voice: if that is a voice outside the five (``lucas``, FSDD's
sixth speaker, ``data.extra_speakers``), each fold trains on the four other voices, and the
validation figure is nested: a second model, trained with the test voice and the next voice
both kept out (``data.exclude_speakers``), transcribes the next voice. Otherwise the next voice
validates and the other three train. Each fold runs the recipe (its own training budget) into
one workspace, its decode stage transcribing the validation voice's and the held-out voice's
utterances (speaker normalisation and adaptation as the recipe says; the same transcripts as
`seqpipe transcribe` with a speaker column, a test says so) and its score stage scoring them
with the recipe's normalisation. Every stage is cached in the workspace, so a rerun of an
interrupted run trains and decodes only the folds not finished. Reports per voice the test WER
and the validation voice's WER, their means and worsts, and each fold's training minutes.
Settings are chosen on the validation voices' mean (``--valid-only`` reads no test voice: for
exploring); the test WER is read once per recipe change (``--test-only`` after a decode-only
change chosen that way). Decode-only overrides (``decode.*``) reuse the folds' trained models.

``--by-round`` (with ``--valid-only``): the validation voices' first pass and every adaptation
round scored, per voice and round, and the mean and worst per round, so one run with
``decode.adapt_rounds=N`` shows rounds 1..N.

``--all-voices``: each fold trains on all four other voices instead, its validation split their
takes 0-4 (``data.valid_speakers=[]``): one voice more to learn from, but checkpoints chosen on
voices already heard (the comparison behind the recipe's ``valid_speakers``; test voices only).

Usage: python bench/asr_loso.py [--workspace bench_out/loso] [--voices george,jackson]
                                [--seed 1234] [--valid-only [--by-round] | --test-only]
                                [--all-voices]
                                [--decode-jobs 2] [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = str(REPO / "recipes" / "asr_small.yaml")
VOICES = ["george", "jackson", "nicolas", "theo", "yweweler"]


def seqpipe(ws: Path, *args: str, nice: int = 0) -> subprocess.CompletedProcess[str]:
    """``seqpipe ARGS`` in ``ws`` (``nice``: at that lower CPU priority, by nice(1))."""
    argv = [sys.executable, "-m", "seqpipe", *args]
    proc = subprocess.run(
        ["nice", "-n", str(nice), *argv] if nice else argv, cwd=ws, capture_output=True, text=True
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"asr_loso: seqpipe {' '.join(args[:2])} failed")
    return proc


def run_args(name: str, seed: int, data: list[str], overrides: list[str]) -> list[str]:
    """A fold's ``seqpipe run`` arguments after the recipe: into ``exp/<name>``, at ``seed``."""
    return [f"name={name}", f"seed={seed}", *data, *overrides]


def train(ws: Path, name: str, args: list[str]) -> dict:
    """``seqpipe run`` the recipe with ``args`` (``run_args``: into ``exp/<name>``) up to
    training: its training minutes and each member's greedy WER on its validation split at its
    best checkpoint."""
    t0 = time.perf_counter()
    seqpipe(ws, "run", RECIPE, *args, "--to", "train")
    info = json.loads((ws / "exp" / name / "train" / "train.json").read_text())
    best = info["best"] if isinstance(info["best"], list) else [info["best"]]
    return {
        "valid_member_wer": [round(b, 2) for b in best],
        "train_minutes": round((time.perf_counter() - t0) / 60, 1),
    }


def decoded(
    ws: Path,
    name: str,
    args: list[str],
    splits: list[str],
    by_round: bool = False,
    valid: str = "valid",
    nice: int = 0,
) -> dict[str, object]:
    """The recipe's decode and score stages on ``exp/<name>``'s ``splits`` (``args``: its
    ``run_args``), cached in the workspace like any stage: a rerun after an interruption decodes
    only what is unfinished. Each split's utterances, WER and CER, the keys of ``valid`` (the
    split holding the validation voice) prefixed ``valid_``; ``by_round``: that split's first
    pass and every adaptation round's WER too (never a test voice's: it is read once, at the
    chosen round)."""
    seqpipe(ws, "run", RECIPE, *args, f"decode.splits=[{','.join(splits)}]", nice=nice)
    scores = json.loads((ws / "exp" / name / "scores.json").read_text())["splits"]
    out: dict[str, object] = {}
    for split in splits:
        s, prefix = scores[split], "valid_" if split == valid else ""
        out[prefix + "utterances"] = s["sentences"]
        out[prefix + "wer"] = s["wer"]["score"]
        out[prefix + "cer"] = s["cer"]["score"]
        if by_round and split == valid:
            out["valid_first_pass_wer"] = s["first_pass"]["wer"]
            out["valid_wer_by_round"] = s["rounds"]["wer"]
    print(json.dumps({f"exp/{name} {','.join(splits)}": out}), file=sys.stderr, flush=True)
    return out


# later(out, decoded, *args, **kw): out.update(decoded(*args, **kw)), now or in a worker thread
Later = Callable[..., None]


def fold(
    ws: Path,
    voice: str,
    mode: str,
    seed: int,
    overrides: list[str],
    splits: list[str],
    later: Later,
    by_round: bool = False,
) -> dict:
    """Hold out ``voice``; the validation figure comes from the next voice (cyclically), never
    from a training voice. ``mode``:

    - ``next``: the next voice validates (checkpoints and settings), the other three train;
    - ``fixed``: the recipe's own validation voice (not one of the five) chooses checkpoints and
      the other four train; the settings' figure is nested: a second model, trained with both
      ``voice`` and the next voice kept out (``data.exclude_speakers``), transcribes the next;
    - ``all``: the other four train and validate on their takes 0-4 (test only).
    """
    nxt = VOICES[(VOICES.index(voice) + 1) % len(VOICES)]
    valid = {"next": [f"data.valid_speakers=[{nxt}]"], "all": ["data.valid_speakers=[]"]}
    name = f"loso{'4' if mode == 'all' else ''}-{voice}-s{seed}"
    data = [f"data.test_speakers=[{voice}]", *valid.get(mode, [])]
    out: dict[str, object] = {"valid_voice": None if mode == "all" else nxt}
    if "valid" in splits and mode == "fixed":
        nested = f"loso-{voice}-{nxt}-s{seed}"
        nested_data = [f"data.test_speakers=[{nxt}]", f"data.exclude_speakers=[{voice}]"]
        nested_args = run_args(nested, seed, nested_data, overrides)
        out["nested"] = train(ws, nested, nested_args)
        later(out, decoded, ws, nested, nested_args, ["test"], by_round=by_round, valid="test")
    args = run_args(name, seed, data, overrides)
    if "test" in splits or mode == "next":
        out.update(train(ws, name, args))
    # one decode stage a model: two runs of one experiment at once would share exp/<name>
    own = [s for s in splits if s == "test" or mode == "next"]
    if own:
        later(out, decoded, ws, name, args, own, by_round=by_round)
    return out


def parse_args() -> tuple[argparse.Namespace, str]:
    """The command line, checked; and the validation mode it means (``fold``'s ``mode``)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, default=REPO / "bench_out" / "loso")
    ap.add_argument("--voices", default=",".join(VOICES), help="the voices to hold out")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument(
        "--valid-only",
        action="store_true",
        help="transcribe the validation voices only (exploring settings: no test WER read)",
    )
    ap.add_argument(
        "--test-only",
        action="store_true",
        help="transcribe the test voices only (a decode-only change chosen with --valid-only)",
    )
    ap.add_argument(
        "--by-round",
        action="store_true",
        help="with --valid-only: the validation voices' every adaptation round scored "
        "(choosing decode.adapt_rounds in one run)",
    )
    ap.add_argument(
        "--all-voices",
        action="store_true",
        help="each fold trains on all four other voices, validating on their takes 0-4 "
        "(no validation voice; test voices only)",
    )
    ap.add_argument(
        "--decode-jobs",
        type=int,
        default=0,
        help="N > 0: up to N folds' decodes (one thread each) at once, at nice 19 beside the "
        "next folds' trainings, which keep their cores and train.max_minutes: the same WERs "
        "sooner (0: each fold decoded after its training)",
    )
    ap.add_argument("overrides", nargs="*", help="recipe overrides, KEY=VALUE")
    a = ap.parse_args()
    if a.decode_jobs < 0:
        ap.error("--decode-jobs: 0 or more")
    if a.valid_only and (a.test_only or a.all_voices):
        ap.error("--valid-only: not with --test-only or --all-voices (no validation voice)")
    if a.by_round and not a.valid_only:
        ap.error("--by-round: with --valid-only")
    from seqpipe.core.recipe import load_recipe

    own = load_recipe(RECIPE, a.overrides).data.valid_speakers
    mode = "all" if a.all_voices else "fixed" if own and not set(own) & set(VOICES) else "next"
    return a, mode


def main() -> None:
    os.environ.setdefault("SEQPIPE_MIRROR", str(REPO.parent / "shared" / "data"))
    a, mode = parse_args()
    splits = ["valid"] * (not a.test_only) + ["test"] * (not a.valid_only)
    ws = a.workspace.resolve()
    ws.mkdir(parents=True, exist_ok=True)
    pool = ThreadPoolExecutor(max_workers=max(a.decode_jobs, 1))
    pending: list[tuple[dict, Future]] = []

    def later(out: dict, fn: Callable[..., dict], *args: object, **kw: object) -> None:
        if a.decode_jobs:
            pending.append((out, pool.submit(fn, *args, **kw, nice=19)))
        else:
            out.update(fn(*args, **kw))

    folds = {}
    for voice in a.voices.split(","):
        folds[voice] = fold(ws, voice, mode, a.seed, a.overrides, splits, later, a.by_round)
        if not a.decode_jobs:
            print(json.dumps({voice: folds[voice]}), file=sys.stderr, flush=True)
    for out, job in pending:
        out.update(job.result())
    pool.shutdown()
    if a.decode_jobs:
        print(json.dumps(folds), file=sys.stderr, flush=True)
    print(json.dumps(summary(a, mode, splits, folds), indent=2))


def summary(a: argparse.Namespace, mode: str, splits: list[str], folds: dict) -> dict:
    """The printed JSON: the folds and their means and worsts."""
    out: dict[str, object] = {
        "recipe": "recipes/asr_small.yaml",
        "seed": a.seed,
        "training_voices": 3 if mode == "next" else 4,
        "validation": mode,
        "overrides": a.overrides,
        "folds": folds,
    }
    if "valid" in splits and not a.all_voices:
        # choose settings on this: each fold's validation voice, transcribed as a test voice
        valid = [f["valid_wer"] for f in folds.values()]
        out["mean_valid_wer"] = round(sum(valid) / len(valid), 2)
        out["worst_valid_wer"] = max(valid)
    if a.by_round:
        by_round = list(zip(*(f["valid_wer_by_round"] for f in folds.values()), strict=True))
        out["mean_valid_wer_by_round"] = [round(sum(r) / len(r), 2) for r in by_round]
        out["worst_valid_wer_by_round"] = [max(r) for r in by_round]
    if "test" in splits:
        wers = [f["wer"] for f in folds.values()]
        out["mean_wer"] = round(sum(wers) / len(wers), 2)
        out["worst_wer"] = max(wers)
        out["worst_voice"] = max(folds, key=lambda v: folds[v]["wer"])
    return out


if __name__ == "__main__":
    main()
