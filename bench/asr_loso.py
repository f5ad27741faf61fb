"""Leave-one-speaker-out for recipes/asr_small.yaml: how the recipe holds on a voice it has
never heard, measured as users run it. Prints JSON.

Each of the mirror's five FSDD voices is held out in turn as the test voice; the next voice
(cyclically) is the validation voice (checkpoint choice sees no test voice and no training
voice); the other three train. Each fold runs the recipe (its own training budget) into one
workspace, then `seqpipe transcribe` decodes the validation voice's utterances and the held-out
voice's test utterances from list files with a speaker column, as a user would (speaker
normalisation and adaptation as the recipe says); the transcripts are scored with the
recipe's normalisation. Reports per voice the test WER and the validation voice's WER, their
means and worsts, and each fold's training minutes. Settings are chosen on the validation
voices' mean (``--valid-only`` reads no test voice: for exploring); the test WER is read once
per recipe change (``--test-only`` after a decode-only change chosen that way). Decode-only
overrides (``decode.*``) reuse the folds' trained models.

``--all-voices``: each fold trains on all four other voices instead, its validation split their
takes 0-4 (``data.valid_speakers=[]``): one voice more to learn from, but checkpoints chosen on
voices already heard (the comparison behind the recipe's ``valid_speakers``; test voices only).

Usage: python bench/asr_loso.py [--workspace bench_out/loso] [--voices george,jackson]
                                [--seed 1234] [--valid-only | --test-only] [--all-voices]
                                [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = str(REPO / "recipes" / "asr_small.yaml")
VOICES = ["george", "jackson", "nicolas", "theo", "yweweler"]


def seqpipe(ws: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "seqpipe", *args], cwd=ws, capture_output=True, text=True
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"asr_loso: seqpipe {' '.join(args[:2])} failed")
    return proc


def fold(
    ws: Path, voice: str, valid: str | None, seed: int, overrides: list[str], splits: list[str]
) -> dict[str, object]:
    """Train with ``voice`` held out (``valid`` validating; ``None``: all four other voices
    train and validate on their takes 0-4); transcribe those of ``splits``: the validation
    voice's utterances (``valid``, if there is one) and the held-out voice's (``test``)."""
    from seqpipe.asr.scoring import score_asr
    from seqpipe.core.recipe import load_recipe
    from seqpipe.data.asr_datasets import read_manifest

    name = f"loso{'' if valid else '4'}-{voice}-s{seed}"
    args = [
        RECIPE,
        f"name={name}",
        f"seed={seed}",
        f"data.test_speakers=[{voice}]",
        f"data.valid_speakers=[{valid or ''}]",
        *overrides,
    ]
    t0 = time.perf_counter()
    seqpipe(ws, "run", *args, "--to", "train")
    train_s = time.perf_counter() - t0
    norm = load_recipe(RECIPE, args[1:]).score.asr_normalization
    info = json.loads((ws / "exp" / name / "train" / "train.json").read_text())
    best = info["best"] if isinstance(info["best"], list) else [info["best"]]
    out: dict[str, object] = {"valid_voice": valid}
    for split in [s for s in splits if s == "test" or valid]:
        utts = read_manifest(ws / "exp" / name / "prepare" / f"{split}.tsv")
        listing = ws / f"{name}.{split}.lst"
        listing.write_text("".join(f"{u.path}\t{u.speaker}\n" for u in utts))
        hyps = seqpipe(ws, "transcribe", f"exp/{name}", str(listing)).stdout.splitlines()
        res = score_asr([u.text for u in utts], hyps, normalization=norm)
        prefix = "" if split == "test" else "valid_"
        out[prefix + "utterances"] = len(utts)
        out[prefix + "wer"] = round(100 * res["wer"], 2)
        out[prefix + "cer"] = round(100 * res["cer"], 2)
    # each member's greedy WER on the validation voice (or takes) at its best checkpoint
    out["valid_member_wer"] = [round(b, 2) for b in best]
    out["train_minutes"] = round(train_s / 60, 1)
    return out


def main() -> None:
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
        "--all-voices",
        action="store_true",
        help="each fold trains on all four other voices, validating on their takes 0-4 "
        "(no validation voice; test voices only)",
    )
    ap.add_argument("overrides", nargs="*", help="recipe overrides, KEY=VALUE")
    a = ap.parse_args()
    if a.valid_only and (a.test_only or a.all_voices):
        ap.error("--valid-only: not with --test-only or --all-voices (no validation voice)")
    splits = ["valid"] * (not a.test_only) + ["test"] * (not a.valid_only)
    os.environ.setdefault("SEQPIPE_MIRROR", str(REPO.parent / "shared" / "data"))
    ws = a.workspace.resolve()
    ws.mkdir(parents=True, exist_ok=True)
    folds = {}
    for voice in a.voices.split(","):
        valid = None if a.all_voices else VOICES[(VOICES.index(voice) + 1) % len(VOICES)]
        folds[voice] = fold(ws, voice, valid, a.seed, a.overrides, splits)
        print(json.dumps({voice: folds[voice]}), file=sys.stderr, flush=True)
    out: dict[str, object] = {
        "recipe": "recipes/asr_small.yaml",
        "seed": a.seed,
        "training_voices": 4 if a.all_voices else 3,
        "overrides": a.overrides,
        "folds": folds,
    }
    if "valid" in splits and not a.all_voices:
        # choose settings on this: each fold's validation voice, transcribed as a test voice
        valid = [f["valid_wer"] for f in folds.values()]
        out["mean_valid_wer"] = round(sum(valid) / len(valid), 2)
        out["worst_valid_wer"] = max(valid)
    if "test" in splits:
        wers = [f["wer"] for f in folds.values()]
        out["mean_wer"] = round(sum(wers) / len(wers), 2)
        out["worst_wer"] = max(wers)
        out["worst_voice"] = max(folds, key=lambda v: folds[v]["wer"])
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
