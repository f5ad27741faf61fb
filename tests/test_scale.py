"""Scaling out (issue 16): concurrent runs in one workspace share artifacts through
per-artifact locks; sweeps run variants at once on Ray (a local Ray, or a Ray cluster started
here); ASHA stops the weakest variants of a random search early."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seqpipe.core.pipeline import Pipeline
from seqpipe.core.recipe import load_recipe

from .conftest import MIRROR, REPO, TINY_MT, run_cli

pytest.importorskip("ray")

RECIPE = str(REPO / "recipes" / "mt_small.yaml")
SHORT = [*TINY_MT, "train.max_steps=20", "train.valid_every=10"]


def _popen(ws: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "seqpipe", *args],
        cwd=ws,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _manifests(ws: Path, stage: str) -> list[Path]:
    return list((ws / "cache" / stage).glob("*/manifest.json"))


def test_concurrent_runs_share_what_they_have_in_common(tmp_path: Path):
    """Two runs differing only in train.lr at once: one builds prepare and tokenize, the other
    waits and reuses them; a third run identical to the first does no work."""
    runs = [
        _popen(tmp_path, "run", RECIPE, *SHORT, f"train.lr={lr}", f"name=lr{i}", "--wait")
        for i, lr in enumerate(("1e-3", "2e-3"))
    ]
    errs = [p.communicate(timeout=600)[1] for p in runs]
    assert [p.returncode for p in runs] == [0, 0], errs
    for stage in ("prepare", "tokenize"):
        assert len(_manifests(tmp_path, stage)) == 1, stage
        builders = [e for e in errs if f"{stage:<8} running" in e]
        assert len(builders) == 1, errs
        other = errs[1 - errs.index(builders[0])]
        assert f"which builds {stage}" in other or f"{stage:<8} cached" in other, other
        assert "(built by another run)" in other
    assert len(_manifests(tmp_path, "train")) == 2
    again = run_cli("run", RECIPE, *SHORT, "train.lr=1e-3", "name=lr0", cwd=tmp_path, check=True)
    assert again.stderr.startswith("5 stage(s) up to date"), again.stderr


def test_a_killed_concurrent_run_leaves_the_other_alone_and_resumes(tmp_path: Path):
    run_cli("run", RECIPE, *TINY_MT, "--to", "tokenize", cwd=tmp_path, check=True)
    victim_args = [*TINY_MT, "train.max_steps=400", "train.valid_every=10"]
    victim_args += ["train.lr=1e-3", "name=victim"]
    # the victim's own train folder (not the other run's): keys and paths from the pipeline
    pipe = Pipeline(load_recipe(RECIPE, victim_args), tmp_path)
    part = pipe.store.partial_dir("train", pipe.keys()["train"])
    victim = _popen(tmp_path, "run", RECIPE, *victim_args, "--wait")
    other = _popen(tmp_path, "run", RECIPE, *SHORT, "train.lr=2e-3", "name=other", "--wait")
    deadline = time.time() + 300
    while time.time() < deadline and victim.poll() is None:
        if (part / "checkpoint.pt").is_file() and (part / "metrics.jsonl").is_file():
            break
        time.sleep(0.05)
    time.sleep(0.5)
    assert victim.poll() is None, "the run ended before it could be killed"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert other.wait(timeout=600) == 0, other.communicate()[1]
    assert (tmp_path / "exp" / "other" / "score" / "manifest.json").is_file()
    status = run_cli("status", RECIPE, *victim_args, cwd=tmp_path)
    assert [ln.split()[2] for ln in status.stdout.splitlines()[1:5]] == [
        "done",
        "done",
        "partial",
        "missing",
    ], status.stdout
    again = run_cli("run", RECIPE, *victim_args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "train    resuming at step" in again.stderr, again.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_cluster(tmp_path: Path):
    """A Ray head on this machine (2 CPUs), as `ray start --head` starts one on a cluster:
    (its address, the environment that connects to it: Ray's token authentication)."""
    ray = str(Path(sys.executable).parent / "ray")
    port = _free_port()
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", **auth)
    subprocess.run(
        [ray, "start", "--head", "--num-cpus=2", f"--port={port}", "--include-dashboard=false"],
        check=True,
        capture_output=True,
        env=env,
        timeout=180,
    )
    try:
        yield f"127.0.0.1:{port}", auth
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=120)


def _sweep(ws: Path, *args: str, env: dict[str, str] | None = None) -> list[dict]:
    ws.mkdir(exist_ok=True)
    proc = run_cli(
        "sweep",
        RECIPE,
        *SHORT,
        "--grid",
        "train.lr=1e-3,2e-3",
        *args,
        "--format",
        "json",
        cwd=ws,
        env={"SEQPIPE_MIRROR": str(MIRROR), **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr
    return sorted(json.loads(proc.stdout), key=lambda r: r["run"])


def test_sweeps_on_a_local_ray_and_on_a_cluster_match_the_variants_run_alone(
    tmp_path: Path, ray_cluster: tuple[str, dict[str, str]]
):
    address, auth = ray_cluster
    local = _sweep(tmp_path / "jobs", "--jobs", "2")
    cluster = _sweep(tmp_path / "cluster", "--ray", address, "--cpus-per-trial", "1", env=auth)
    fields = ("run", "score_key", "train_key", "bleu", "chrf", "overrides")
    assert [[r[f] for f in fields] for r in local] == [[r[f] for f in fields] for r in cluster]
    alone = tmp_path / "alone"
    alone.mkdir()
    for row in local:
        run_cli(
            "run", RECIPE, *SHORT, row["overrides"], f"name={row['run']}", cwd=alone, check=True
        )
        models = [
            ws / "cache" / "train" / row["train_key"] / "model_best.pt"
            for ws in (tmp_path / "jobs", tmp_path / "cluster", alone)
        ]
        assert len({_sha(m) for m in models}) == 1, row["overrides"]


def test_asha_stops_the_weakest_variants_and_they_resume(tmp_path: Path):
    args = [*TINY_MT, "train.max_steps=40", "train.valid_every=10", "train.valid_metric=loss"]
    proc = run_cli(
        "sweep",
        RECIPE,
        *args,
        "--random",
        "4",
        "--grid",
        "train.lr=1e-5:3e-2",
        "--asha",
        "--jobs",
        "2",
        "--format",
        "json",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    stopped = [r for r in rows if r.get("status")]
    assert len(rows) == 4 and stopped, proc.stdout
    assert "stopped early" in proc.stderr
    for r in stopped:
        assert (
            r["status"] == f"stopped at step {r['steps']}" and r["steps"] < 40 and r["bleu"] is None
        )
    done = [r for r in rows if not r.get("status")]
    assert done and all(r["bleu"] is not None and r["steps"] == 40 for r in done)
    r = stopped[0]
    log = (tmp_path / "exp" / r["run"] / "log.txt").read_text()
    assert f"stopped by ASHA at step {r['steps']}" in log
    again = run_cli("run", RECIPE, *args, r["overrides"], f"name={r['run']}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"train    resuming at step {r['steps']}" in again.stderr, again.stderr
