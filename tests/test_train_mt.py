"""MT training end to end on small Multi30k subsets: every stage, variants, resume, NaN."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from seqpipe.core.pipeline import Pipeline
from seqpipe.core.recipe import load_recipe

from .conftest import REPO, TINY_MT, run_cli

RECIPE = str(REPO / "recipes" / "mt_small.yaml")
TINY = [*TINY_MT, "train.valid_every=10", "train.log_every=5"]


def _train_dir(ws: Path, *ov: str) -> Path:
    key = Pipeline(load_recipe(RECIPE, list(ov)), ws).keys()["train"]
    return ws / "cache" / "train" / key


def test_mt_learns_beyond_a_floor(mt_floor_ws: Path):
    """A quality floor: 300 updates on 2,000 Multi30k pairs (conftest's MT_FLOOR) reach BLEU
    5.98 / chrF 20.99 on 200 test sentences (CPU, torch 2.9.1); an untrained or broken model
    gives BLEU ~0."""
    scores = json.loads((mt_floor_ws / "exp" / "beam" / "scores.json").read_text())
    test = scores["splits"]["test"]
    assert test["bleu"]["score"] >= 4.0 and test["chrf"]["score"] >= 17.0, test


@pytest.mark.parametrize(
    "variant",
    [
        [],  # the recipe's own model: Luong attention without input feeding (the fast path)
        ["model.cell=lstm"],
        ["model.attention=bahdanau", "model.input_feeding=true"],
        [
            "model.attention=luong",
            "model.input_feeding=true",
            "model.luong_score=dot",
            "model.bidirectional=false",
        ],
    ],
    ids=["fast", "lstm", "bahdanau", "luong-if-dot"],
)
def test_mt_small_variants_run_end_to_end(tmp_path: Path, variant: list[str]):
    proc = run_cli("run", RECIPE, *TINY, "train.max_steps=12", *variant, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "BLEU" in proc.stdout and "nrefs:1|case:mixed|eff:no|tok:13a" in proc.stdout
    scores = json.loads((tmp_path / "exp" / "mt_small" / "scores.json").read_text())
    test = scores["splits"]["test"]
    hyp = (tmp_path / "exp" / "mt_small" / "decode" / "test.hyp").read_text().splitlines()
    assert test["sentences"] == len(hyp) == 40 and test["chrf"]["score"] > 0
    tdir = (tmp_path / "exp" / "mt_small" / "train").resolve()
    assert (tdir / "curve.png").stat().st_size > 1000
    assert not (tdir / "checkpoint.pt").exists()  # resume state dropped once finished
    info = json.loads((tdir / "train.json").read_text())
    assert info["steps"] == 12 and info["tokens_per_second"] > 0
    # a changed beam reruns only decode and score
    again = run_cli(
        "run", RECIPE, *TINY, "train.max_steps=12", *variant, "decode.beam_size=2", cwd=tmp_path
    )
    assert again.returncode == 0 and "ran decode, score in" in again.stderr


def test_killed_training_resumes_bit_identical(tmp_path: Path):
    ov = [*TINY, "train.max_steps=60", "train.valid_every=7", "model.dropout=0.3"]
    ref_ws, ws = tmp_path / "ref", tmp_path / "killed"
    ref_ws.mkdir()
    ws.mkdir()
    run_cli("run", RECIPE, *ov, "--to", "train", cwd=ref_ws, check=True)
    # the same recipe, killed with SIGKILL after its second checkpoint, then rerun
    run_cli("run", RECIPE, *ov, "--to", "tokenize", cwd=ws, check=True)
    partial = Path(str(_train_dir(ws, *ov)) + ".partial")
    proc = subprocess.Popen(
        [sys.executable, "-m", "seqpipe", "run", RECIPE, *ov, "--to", "train"],
        cwd=ws,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ck = partial / "checkpoint.pt"
    deadline = time.time() + 240
    seen = 0.0
    while time.time() < deadline and proc.poll() is None:
        if ck.exists() and ck.stat().st_mtime != seen:
            if seen:
                break  # second checkpoint written
            seen = ck.stat().st_mtime
        time.sleep(0.02)
    assert proc.poll() is None, "training ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = torch.load(ck, weights_only=True)["state"]
    assert 0 < state["step"] < 60
    out = run_cli("run", RECIPE, *ov, "--to", "train", cwd=ws, check=True)
    assert "resuming at step" in out.stderr
    a = torch.load(_train_dir(ref_ws, *ov) / "model_last.pt", weights_only=True)
    b = torch.load(_train_dir(ws, *ov) / "model_last.pt", weights_only=True)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the log was appended to, not truncated: both runs are in it
    log = (ws / "exp" / "mt_small" / "log.txt").read_text()
    assert log.count("train    running") == 2
    # metrics.jsonl and the TensorBoard events hold each step once, as the uninterrupted run's
    for art in (_train_dir(ref_ws, *ov), _train_dir(ws, *ov)):
        rows = [json.loads(x) for x in (art / "metrics.jsonl").read_text().splitlines()]
        train_steps = [r["step"] for r in rows if "valid" not in r]
        valid_steps = [r["step"] for r in rows if "valid" in r]
        assert _tb_steps(art, "train/loss") == train_steps and len(set(train_steps)) > 5
        assert _tb_steps(art, "valid/bleu") == valid_steps == _tb_steps(art, "valid/loss")
    assert _tb_steps(ref_ws / "exp" / "mt_small" / "train", "train/lr") == train_steps


def _tb_steps(art: Path, tag: str) -> list[int]:
    """Steps of one scalar in an artifact's TensorBoard events (tensorboard's own reader)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(art / "tb"))
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


def test_nan_loss_stops_with_a_clear_error(tmp_path: Path):
    proc = run_cli(
        "run",
        RECIPE,
        *TINY,
        "train.max_steps=30",
        "train.lr=.inf",
        "train.max_nan_batches=3",
        "--to",
        "train",
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "NaN/inf in 4 batches" in last and "Traceback" not in proc.stderr
    assert (
        not [  # (a <key>.lock file stays: locks are never deleted, see ArtifactStore)
            p
            for p in (tmp_path / "cache" / "train").iterdir()
            if p.suffix not in (".partial", ".lock")
        ]
    )


def test_torchrun_two_cpu_processes_train_identical_weights(tmp_path: Path):
    """2 ranks on gloo, the plateau scheduler forced to cut the learning rate (BLEU stays 0:
    no gain) and training on after the cut: the ranks end with identical weights, and only
    rank 0 writes into the artifact."""
    import shutil

    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    ov = [
        *TINY,
        "train.max_steps=12",
        "train.valid_every=4",
        "train.device=cpu",
        "train.scheduler=plateau",
        "train.plateau_patience=0",
        "train.valid_max_sentences=5",
    ]
    run_cli("run", RECIPE, *ov, "--to", "tokenize", cwd=tmp_path, check=True)
    import socket

    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run(
        [
            torchrun,
            "--nproc_per_node=2",
            f"--master_port={port}",
            "-m",
            "seqpipe",
            "run",
            RECIPE,
            *ov,
            "--to",
            "train",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        start_new_session=True,  # torchrun signals its whole process group when it exits
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    tdir = _train_dir(tmp_path, *ov)
    info = json.loads((tdir / "train.json").read_text())
    assert info["world_size"] == 2 and info["steps"] == 12
    d0, d1 = info["weights_sha256_per_rank"]
    assert d0 == d1 and len(d0) == 64
    valid = [json.loads(r) for r in (tdir / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in valid if "valid" in r]
    assert lrs[-1] < lrs[0], lrs  # cut, and trained on after the cut
    assert not list(tdir.glob("weights_rank*"))


def test_the_training_loop_never_waits_for_the_device(tmp_path: Path, monkeypatch):
    """No host sync on the loss path: inside an update nothing reads a tensor back (.item(),
    float(), int(), bool(), .tolist()) but host-side lengths; the loss and skipped-batch sums
    are read once per log line."""
    import traceback
    from collections import Counter

    from seqpipe.common.trainer import Trainer

    ov = [*TINY, "train.max_steps=20", "train.valid_every=1000", "train.log_every=10"]
    Pipeline(load_recipe(RECIPE, ov), tmp_path).run(stop="tokenize")
    sites: Counter[tuple[str, str]] = Counter()
    inside = [False]
    originals = {
        n: getattr(torch.Tensor, n) for n in ("item", "tolist", "__float__", "__int__", "__bool__")
    }

    def counted(name: str):
        def read_back(self, *args, **kwargs):
            if inside[0]:
                frame = traceback.extract_stack(limit=2)[0]
                sites[(Path(frame.filename).name, frame.name)] += 1
            return originals[name](self, *args, **kwargs)

        return read_back

    for name in originals:
        monkeypatch.setattr(torch.Tensor, name, counted(name))
    logged = []
    for method in ("_update", "_log_window"):
        original = getattr(Trainer, method)

        def wrapped(self, *args, _original=original, _method=method):
            inside[0] = _method == "_update"
            if _method == "_log_window":
                logged.append(self.state.step)
            try:
                return _original(self, *args)
            finally:
                inside[0] = False

        monkeypatch.setattr(Trainer, method, wrapped)
    Pipeline(load_recipe(RECIPE, ov), tmp_path).run(stop="train")
    assert logged[0] == 10 and len(logged) <= 4  # every 10 updates and at the epoch end
    # host-side only: the source lengths (encoders.py) and a PackedSequence's batch sizes
    # (torch's rnn.py), both on the CPU whatever the device
    host = {("encoders.py", "forward"), ("rnn.py", "get_expected_hidden_size")}
    assert set(sites) <= host, sites
    assert all(sites[s] <= 20 for s in host)  # at most one each per update


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: run the check")
def test_the_gpu_check_refuses_without_cuda():
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("gpu_check: no CUDA device")


def test_batches_built_in_worker_processes_train_the_same_model(tmp_path: Path):
    """train.workers=2 (DataLoader processes build the batches ahead) changes no result."""
    ov = [*TINY, "train.max_steps=12"]
    digests = []
    for workers in (0, 2):
        ws = tmp_path / f"w{workers}"
        ws.mkdir()
        run_cli("run", RECIPE, *ov, f"train.workers={workers}", "--to", "train", cwd=ws, check=True)
        digests.append(
            hashlib.sha256((_train_dir(ws, *ov) / "model_last.pt").read_bytes()).digest()
        )
    assert digests[0] == digests[1]
