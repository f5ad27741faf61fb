"""Peak memory of ``seqpipe decode`` does not grow with the input size.

Decodes a generated 2,000-line file and a generated 200,000-line file (Multi30k source
sentences repeated, so every line is real text) with the same model, each in its own
``python -m seqpipe decode`` process, and reads each process's peak RSS from ``wait4``.
``seqpipe decode`` streams its input in chunks of 10,000 lines, so both figures should be
within a few percent of each other. Prints JSON; asserts nothing (``ok`` says whether the
large run stayed within ``--tolerance`` of the small one).

Usage:
    python bench/decode_memory.py [--model exp/mt_small | model.spt] [--small 2000]
        [--large 200000] [--search greedy] [--tolerance 0.10]

Without ``--model`` a tiny MT model is trained first in a temporary workspace (about 30 s).
Greedy search by default keeps the large run to a few minutes on 2 cores; the chunked
streaming is the same for any search.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "mt_small.yaml"
# mt_small shrunk to seconds (the model whose decoding memory is measured)
TINY = (
    "data.max_train_lines=400 data.max_eval_lines=40 tokenize.vocab_size=300 model.emb_size=32 "
    "model.hidden_size=32 train.max_tokens=1500 train.valid_every=50 train.log_every=50 "
    "train.max_minutes=null train.progress=false train.threads=1 decode.threads=1 "
    "train.max_steps=100 train.lr=0.01"
).split()


def _seqpipe(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "seqpipe", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )


def _write_input(path: Path, sentences: list[str], n: int) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(sentences[i % len(sentences)])
            f.write("\n")


def _decode_peak(model: str, inp: Path, cwd: Path, extra: list[str]) -> dict[str, float]:
    """Run one decode process; its peak RSS (MiB) and wall time."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "seqpipe",
            "decode",
            model,
            str(inp),
            "-o",
            os.devnull,
            "--no-progress",
            *extra,
        ],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"decode failed ({proc.returncode}):\n{err}")
    secs = time.perf_counter() - t0
    return {"peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "seconds": round(secs, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model", help="exp folder, recipe or exported file (default: train a tiny one)"
    )
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--large", type=int, default=200_000)
    ap.add_argument("--search", default="greedy", choices=["greedy", "beam"])
    ap.add_argument("--tolerance", type=float, default=0.10)
    args = ap.parse_args()
    os.environ.setdefault("SEQPIPE_MIRROR", str((REPO / ".." / "shared" / "data").resolve()))
    with tempfile.TemporaryDirectory(prefix="seqpipe-decode-mem-") as tmp:
        ws = Path(tmp)
        if args.model:
            model = str(Path(args.model).resolve())
        else:
            _seqpipe("run", str(RECIPE), *TINY, "--to", "train", cwd=ws)
            model = str(ws / "exp" / "mt_small")
        # real source sentences: the Multi30k test set (prepared by the tiny recipe)
        if args.model:
            _seqpipe("run", str(RECIPE), *TINY, "--only", "prepare", cwd=ws)
        prep = ws / "exp" / "mt_small" / "prepare"
        sentences = (prep / "test.src").read_text(encoding="utf-8").splitlines()
        extra = ["--search", args.search, "--threads", "1"]
        out: dict[str, object] = {
            "model": model if args.model else "tiny (trained for this run)",
            "search": args.search,
            "chunk_lines": 10_000,
        }
        for label, n in (("small", args.small), ("large", args.large)):
            inp = ws / f"{label}.txt"
            _write_input(inp, sentences, n)
            out[label] = {
                "lines": n,
                "input_mib": round(inp.stat().st_size / 2**20, 2),
                **_decode_peak(model, inp, ws, extra),
            }
            inp.unlink()
        small, large = out["small"], out["large"]  # type: ignore[assignment]
        ratio = large["peak_rss_mib"] / small["peak_rss_mib"]  # type: ignore[index]
        out["large_over_small"] = round(ratio, 3)
        out["ok"] = ratio <= 1 + args.tolerance
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
