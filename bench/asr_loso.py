"""Leave-one-speaker-out for recipes/asr_small.yaml: how the recipe holds on a voice it has
never heard, measured as users run it. Prints JSON.

Each of the mirror's five FSDD voices is held out in turn as the test voice; the next voice
(cyclically) gives the validation figure, never a voice the model trained on. Checkpoints are
chosen on the recipe's validation voice: if that is a voice outside the five (``lucas``, FSDD's
sixth speaker, ``data.extra_speakers``), each fold trains on the four other voices, and the
validation figure is nested: a second model, trained with the test voice and the next voice
both kept out (``data.exclude_speakers``), transcribes the next voice. Otherwise the next voice
validates and the other three train. Each fold runs the recipe (its own training budget) into
one workspace, then `seqpipe transcribe` decodes the validation voice's utterances and the
held-out voice's test utterances from list files with a speaker column, as a user would
(speaker normalisation and adaptation as the recipe says); the transcripts are scored with the
recipe's normalisation. Reports per voice the test WER and the validation voice's WER, their
means and worsts, and each fold's training minutes. Settings are chosen on the validation
voices' mean (``--valid-only`` reads no test voice: for exploring); the test WER is read once
per recipe change (``--test-only`` after a decode-only change chosen that way). Decode-only
overrides (``decode.*``) reuse the folds' trained models.

``--by-round`` (with ``--valid-only``): the validation voices are decoded by the recipe's own
decode stage instead (``decode.splits=[valid]``; the same transcripts as ``seqpipe transcribe``,
a test says so), which scores the first pass and every adaptation round: per voice and round, and
the mean and worst per round, so one run with ``decode.adapt_rounds=N`` shows rounds 1..N.

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


def transcribe(
    ws: Path, name: str, split: str, prefix: str = "", nice: int = 0
) -> dict[str, object]:
    """`seqpipe transcribe` the utterances of ``split`` of ``exp/<name>`` from a list file with a
    speaker column, as a user would; scored with the recipe's normalisation."""
    from seqpipe.asr.scoring import score_asr
    from seqpipe.core.recipe import load_recipe
    from seqpipe.data.asr_datasets import read_manifest

    norm = load_recipe(str(ws / "exp" / name / "recipe.yaml"), []).score.asr_normalization
    utts = read_manifest(ws / "exp" / name / "prepare" / f"{split}.tsv")
    listing = ws / f"{name}.{split}.lst"
    listing.write_text("".join(f"{u.path}\t{u.speaker}\n" for u in utts))
    hyps = seqpipe(ws, "transcribe", f"exp/{name}", str(listing), nice=nice).stdout.splitlines()
    res = score_asr([u.text for u in utts], hyps, normalization=norm)
    # the transcripts kept beside the list, and each figure on stderr as it comes
    (ws / f"{name}.{split}.hyp").write_text("".join(h + "\n" for h in hyps))
    out = {
        prefix + "utterances": len(utts),
        prefix + "wer": round(100 * res["wer"], 2),
        prefix + "cer": round(100 * res["cer"], 2),
    }
    print(json.dumps({f"exp/{name} {split}": out}), file=sys.stderr, flush=True)
    return out


def stage_rounds(ws: Path, name: str, args: list[str], nice: int = 0) -> dict[str, object]:
    """The decode stage on ``exp/<name>``'s valid split (``args``: the fold's ``run_args``): its
    WER, its first pass's and each adaptation round's (``scores.json``)."""
    seqpipe(ws, "run", RECIPE, *args, "decode.splits=[valid]", nice=nice)
    split = json.loads((ws / "exp" / name / "scores.json").read_text())["splits"]["valid"]
    out = {
        "valid_wer": split["wer"]["score"],
        "valid_first_pass_wer": split["first_pass"]["wer"],
        "valid_wer_by_round": split["rounds"]["wer"],
    }
    print(json.dumps({f"exp/{name} valid": out}), file=sys.stderr, flush=True)
    return out


# later(out, transcribe, *args): out.update(transcribe(*args)), now or in a worker thread
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
        out["nested"] = train(ws, nested, run_args(nested, seed, nested_data, overrides))
        later(out, transcribe, ws, nested, "test", "valid_")
    args = run_args(name, seed, data, overrides)
    if "test" in splits or mode == "next":
        out.update(train(ws, name, args))
    if "valid" in splits and mode == "next" and by_round:
        later(out, stage_rounds, ws, name, args)
    elif "valid" in splits and mode == "next":
        later(out, transcribe, ws, name, "valid", "valid_")
    if "test" in splits:
        later(out, transcribe, ws, name, "test")
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
        help="with --valid-only: the decode stage decodes the validation voices, every "
        "adaptation round scored (choosing decode.adapt_rounds in one run)",
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
        help="N > 0: up to N transcriptions (one thread each) at once, at nice 19 beside the "
        "next folds' trainings, which keep their cores and train.max_minutes: the same WERs "
        "sooner (0: each fold transcribed after its training)",
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
    if a.by_round and mode != "next":
        ap.error("--by-round: the validation voice must be the next of the five (not nested)")
    return a, mode


def main() -> None:
    os.environ.setdefault("SEQPIPE_MIRROR", str(REPO.parent / "shared" / "data"))
    a, mode = parse_args()
    splits = ["valid"] * (not a.test_only) + ["test"] * (not a.valid_only)
    ws = a.workspace.resolve()
    ws.mkdir(parents=True, exist_ok=True)
    pool = ThreadPoolExecutor(max_workers=max(a.decode_jobs, 1))
    pending: list[tuple[dict, Future]] = []

    def later(out: dict, fn: Callable[..., dict], *args: object) -> None:
        if a.decode_jobs:
            pending.append((out, pool.submit(fn, *args, nice=19)))
        else:
            out.update(fn(*args))

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
