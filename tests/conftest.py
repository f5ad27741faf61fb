"""Shared fixtures: the offline data mirror, small recipes, running the CLI in a subprocess."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if not os.environ.get("SEQPIPE_MIRROR"):
    os.environ["SEQPIPE_MIRROR"] = str((REPO / ".." / "shared" / "data").resolve())
MIRROR = Path(os.environ["SEQPIPE_MIRROR"])
# Tests never write outside their temporary folders, whatever the environment: workspaces are
# the tests' own tmp folders (-w defaults to the cwd), downloads land in a temporary folder.
os.environ.pop("SEQPIPE_WORKSPACE", None)
os.environ["SEQPIPE_DOWNLOADS"] = tempfile.mkdtemp(prefix="seqpipe-test-downloads-")
atexit.register(shutil.rmtree, os.environ["SEQPIPE_DOWNLOADS"], ignore_errors=True)
# Subprocesses (`python -m seqpipe`, torchrun) import the checkout under test, whatever the
# shared venv's editable install points at.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))

# Tiny test models run fastest on one thread, and 2-thread OpenMP collapses when anything
# else shares the 2 cores. Benchmarks (make bench) use the configured threads instead.
torch.set_num_threads(1)

# mt_small shrunk to seconds: 400 training pairs, 32-unit GRUs, one thread
TINY_MT = [
    "data.max_train_lines=400",
    "data.max_eval_lines=40",
    "tokenize.vocab_size=300",
    "model.emb_size=32",
    "model.hidden_size=32",
    "train.max_tokens=1500",
    "train.max_minutes=null",
    "train.progress=false",
    "decode.beam_size=3",
    "train.threads=1",
    "decode.threads=1",
]


def run_cli(
    *args: str,
    cwd: Path,
    check: bool | None = None,
    timeout: float = 600,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m seqpipe ARGS`` in ``cwd``; returns the completed process."""
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run(
        [sys.executable, "-m", "seqpipe", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"seqpipe {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


# mt_small's quality floor: 300 updates on 2,000 Multi30k pairs, BLEU ~6, outputs that differ
# between searches
MT_FLOOR = [
    "data.max_train_lines=2000",
    "data.max_eval_lines=200",
    "tokenize.vocab_size=500",
    "model.emb_size=64",
    "model.hidden_size=64",
    "train.max_tokens=1500",
    "train.max_minutes=null",
    "train.max_steps=300",
    "train.valid_every=100",
    "train.progress=false",
    "train.threads=1",
    "decode.threads=1",
]


@pytest.fixture(scope="session")
def mt_floor_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with exp/beam: mt_small under MT_FLOOR, decoded with a beam of 3, run once
    through the CLI (the floor test checks its scores; the compare tests add runs beside it)."""
    ws = tmp_path_factory.mktemp("floor")
    recipe = str(REPO / "recipes" / "mt_small.yaml")
    run_cli("run", recipe, *MT_FLOOR, "decode.beam_size=3", "name=beam", cwd=ws, check=True)
    return ws


YESNO = REPO / "recipes" / "asr_yesno.yaml"


@pytest.fixture(scope="session")
def yesno_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """recipes/asr_yesno.yaml as shipped, run once through the CLI: its workspace and that run's
    output, for the tests that check the run and those that read its experiment."""
    ws = tmp_path_factory.mktemp("yesno")
    return ws, run_cli("run", str(YESNO), cwd=ws, timeout=300)


def write_recipe(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


SMALL_MT = """\
name: {name}
task: mt
seed: 7
data:
  dataset: multi30k
  src_lang: en
  tgt_lang: de
  max_train_lines: {train_lines}
  max_eval_lines: {eval_lines}
tokenize:
  vocab_size: {vocab}
"""


@pytest.fixture
def small_mt(tmp_path: Path):
    """Factory for a small Multi30k recipe in ``tmp_path`` (the workspace)."""

    def make(
        name: str = "tiny",
        train_lines: int = 2000,
        eval_lines: int = 100,
        vocab: int = 500,
        extra: str = "",
    ) -> Path:
        text = SMALL_MT.format(
            name=name, train_lines=train_lines, eval_lines=eval_lines, vocab=vocab
        )
        return write_recipe(tmp_path / f"{name}.yaml", text + extra)

    return make
