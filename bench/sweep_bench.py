"""Sweep benchmark (``make bench BENCH_ARGS='--parts sweep'``, or run alone): prints JSON.

A 4-variant sweep of a small MT recipe (mt_small on Multi30k, 1 thread per variant, variants
differing in ``train.lr``) run twice, side by side in this process's session, each in a fresh
workspace: ``--jobs 2`` (two variants at once on a local Ray) and ``--jobs 1`` (one variant
after another). Reports both wall-clock times, their ratio (jobs 2 / jobs 1), and how many
prepare and tokenize artifacts each sweep built (the variants share them: 1 each).

Usage: python bench/sweep_bench.py [--steps 150] [--workspace bench_out/sweep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LRS = "train.lr=5e-4,1e-3,2e-3,4e-3"


def sweep_args(steps: int) -> list[str]:
    return [
        str(REPO / "recipes" / "mt_small.yaml"),
        "data.max_eval_lines=200",
        f"train.max_steps={steps}",
        f"train.valid_every={steps}",
        "train.valid_max_sentences=100",
        "train.max_minutes=null",
        "train.progress=false",
        "train.threads=1",
        "decode.threads=1",
        "--grid",
        LRS,
        "--format",
        "json",
    ]


def timed_sweep(ws: Path, args: list[str], env: dict[str, str]) -> dict[str, object]:
    """One sweep in a fresh workspace ``ws``: wall seconds, builds of the shared stages, BLEU."""
    shutil.rmtree(ws, ignore_errors=True)
    ws.mkdir(parents=True)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "seqpipe", "sweep", *args],
        cwd=ws,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"sweep failed in {ws}")
    logs = [p.read_text() for p in (ws / "exp").glob("*/log.txt")]
    builds = {
        stage: {
            "artifacts": len(list((ws / "cache" / stage).glob("*/manifest.json"))),
            "built_by_runs": sum(log.count(f"{stage:<8} running") for log in logs),
        }
        for stage in ("prepare", "tokenize", "train")
    }
    rows = json.loads(proc.stdout)
    return {
        "wall_s": round(wall, 1),
        "builds": builds,
        "bleu": {r["overrides"]: r["bleu"] for r in rows},
    }


def bench_sweep(ws: Path, env: dict[str, str], steps: int) -> dict[str, object]:
    args = sweep_args(steps)
    parallel = timed_sweep(ws / "jobs2", [*args, "--jobs", "2", "--cpus-per-trial", "1"], env)
    serial = timed_sweep(ws / "jobs1", [*args, "--jobs", "1"], env)
    return {
        "variants": 4,
        "steps": steps,
        "threads_per_variant": 1,
        "jobs2": parallel,
        "jobs1": serial,
        "ratio_wall_jobs2_vs_jobs1": round(parallel["wall_s"] / serial["wall_s"], 3),
        "same_bleu": parallel["bleu"] == serial["bleu"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150, help="training updates per variant")
    ap.add_argument("--workspace", type=Path, default=REPO / "bench_out" / "sweep")
    a = ap.parse_args()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("SEQPIPE_MIRROR", str(REPO.parent / "shared" / "data"))
    print(json.dumps({"sweep": bench_sweep(a.workspace.resolve(), env, a.steps)}, indent=2))


if __name__ == "__main__":
    main()
