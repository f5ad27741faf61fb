"""Trust the cache: kills while an artifact is finalised, corrupt artifacts, and bad input that
must be refused with one line (exit 2) before anything runs."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from seqpipe.core.pipeline import Pipeline
from seqpipe.core.recipe import load_recipe
from tests.conftest import REPO, TINY_MT, run_cli

TRAIN = [*TINY_MT, "train.max_steps=20", "train.valid_every=10", "train.log_every=5"]


def _keys(recipe: Path, *overrides: str) -> dict[str, str]:
    return Pipeline(load_recipe(recipe, list(overrides))).keys()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _logged(art: Path) -> list[tuple[int, bool]]:
    """(step, is a validation) of each metrics.jsonl record of a train artifact."""
    rows = [json.loads(x) for x in (art / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], "valid" in r) for r in rows]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A workspace with a tiny MT model trained without interruption: (workspace, recipe)."""
    ws = tmp_path_factory.mktemp("ref")
    recipe = ws / "r.yaml"
    recipe.write_text(
        "name: r\ntask: mt\nseed: 7\ndata: {dataset: multi30k, src_lang: en, tgt_lang: de}\n"
    )
    run_cli("run", str(recipe), *TRAIN, "--to", "train", cwd=ws, check=True)
    return ws, recipe


@pytest.mark.parametrize(
    "point", ["before-curve", "after-curve", "train-json", "commit", "manifest", "renamed"]
)
def test_a_kill_while_training_is_finalised_keeps_the_training(trained, tmp_path, point):
    ref_ws, recipe = trained
    for stage in ("prepare", "tokenize"):
        shutil.copytree(ref_ws / "cache" / stage, tmp_path / "cache" / stage)
    key = _keys(recipe, *TRAIN)["train"]
    killed = subprocess.run(
        [sys.executable, str(REPO / "tests" / "kill_at.py"), point, "run", str(recipe), *TRAIN]
        + ["--to", "train"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr
    assert "train    finished at step 20" in killed.stderr
    rerun = run_cli("run", str(recipe), *TRAIN, "--to", "train", cwd=tmp_path, check=True)
    assert "resuming at step 0" not in rerun.stderr and "epoch 1 step 5 " not in rerun.stderr
    art, ref = tmp_path / "cache" / "train" / key, ref_ws / "cache" / "train" / key
    assert not (tmp_path / "cache" / "train" / f"{key}.partial").exists()
    seen, expected = _logged(art), _logged(ref)
    assert len(seen) == len(set(seen)), f"steps logged twice: {seen}"
    assert seen == expected
    for name in ("model_best.pt", "model_last.pt"):
        assert _sha(art / name) == _sha(ref / name)
    files = json.loads((art / "manifest.json").read_text())["files"]
    on_disk = {p.relative_to(art).as_posix() for p in art.rglob("*") if p.is_file()}
    assert on_disk - {"manifest.json"} == set(files)
    assert "checkpoint.pt" not in files and not any(f.startswith("best-") for f in files)
