"""The pipeline core on real Multi30k files from the mirror: caching, reruns, kills, locks,
bad input. No mocks of the cache or of SentencePiece."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seqpipe.common.vocab import IdArray, Tokenizer
from seqpipe.core.pipeline import Pipeline
from seqpipe.core.recipe import load_recipe

from .conftest import MIRROR, REPO, TINY_MT, run_cli


def _keys(recipe: Path, ws: Path, *ov: str) -> dict[str, str]:
    return Pipeline(load_recipe(recipe, list(ov)), ws).keys()


def test_status_shows_the_whole_stage_graph(small_mt, tmp_path: Path):
    proc = run_cli("status", str(small_mt()), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    stages = [line.split()[0] for line in proc.stdout.splitlines()[1:]]
    assert stages == ["prepare", "tokenize", "train", "decode", "score"]
    assert all(" missing " in line for line in proc.stdout.splitlines()[1:])


def test_prepare_tokenize_cache_and_rerun(small_mt, tmp_path: Path):
    recipe = small_mt()
    first = run_cli("run", str(recipe), "--to", "tokenize", cwd=tmp_path, check=True)
    assert "ran prepare, tokenize" in first.stderr
    keys = _keys(recipe, tmp_path)
    prep = tmp_path / "cache" / "prepare" / keys["prepare"]
    tok = tmp_path / "cache" / "tokenize" / keys["tokenize"]
    manifest = json.loads((tok / "manifest.json").read_text())
    assert manifest["key"] == keys["tokenize"] and manifest["inputs"] == {
        "prepare": keys["prepare"]
    }
    assert manifest["versions"]["sentencepiece"] and "spm.model" in manifest["files"]
    assert manifest["files"]["spm.model"]["sha256"]
    # real data: 2000 training pairs (none of the first 2000 is filtered), 100 valid/test
    assert len((prep / "train.src").read_text().splitlines()) == 2000
    assert len((prep / "test.tgt").read_text().splitlines()) == 100
    # ids decode back to exactly the prepared text
    t = Tokenizer(tok)
    arr = IdArray(tok, "valid.tgt")
    refs = (prep / "valid.tgt").read_text(encoding="utf-8").splitlines()
    assert t.decode_tgt([arr[i].tolist() for i in range(len(arr))]) == refs

    # a second run does no work, in well under a second (pipeline time, not interpreter start)
    mtimes = {p: p.stat().st_mtime_ns for p in (prep / "manifest.json", tok / "manifest.json")}
    t0 = time.perf_counter()
    Pipeline(load_recipe(recipe), tmp_path).run(stop="tokenize")
    assert time.perf_counter() - t0 < 0.5
    second = run_cli("run", str(recipe), "--to", "tokenize", cwd=tmp_path, check=True)
    assert "2 stage(s) up to date" in second.stderr
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes

    # changing tokenize.vocab_size reruns tokenize (and would rerun everything after), never prepare
    third = run_cli(
        "run", str(recipe), "--to", "tokenize", "tokenize.vocab_size=400", cwd=tmp_path, check=True
    )
    assert "\nran tokenize in" in third.stderr and "prepare  cached" in third.stderr
    new = _keys(recipe, tmp_path, "tokenize.vocab_size=400")
    assert new["prepare"] == keys["prepare"]
    assert all(new[s] != keys[s] for s in ("tokenize", "train", "decode", "score"))
    assert (prep / "manifest.json").stat().st_mtime_ns == mtimes[prep / "manifest.json"]
    # back to the first settings, all cached: exp/<name>/recipe.yaml (what transcribe and
    # translate read) is the recipe the links now point at, not the previous run's
    (exp_recipe,) = (tmp_path / "exp").glob("*/recipe.yaml")
    assert "vocab_size: 400" in exp_recipe.read_text()
    cached = run_cli("run", str(recipe), "--to", "tokenize", cwd=tmp_path, check=True)
    assert "2 stage(s) up to date" in cached.stderr
    assert "vocab_size: 400" not in exp_recipe.read_text()

    # --force reruns just that stage; status reports done
    forced = run_cli(
        "run", str(recipe), "--to", "tokenize", "--force", "tokenize", cwd=tmp_path, check=True
    )
    assert "ran tokenize" in forced.stderr
    status = run_cli("status", str(recipe), cwd=tmp_path, check=True).stdout
    assert (
        status.splitlines()[1].split()[2] == "done" and status.splitlines()[2].split()[2] == "done"
    )
    # exp/<name>/ links to the artifacts used and keeps an appended log
    exp = tmp_path / "exp" / "tiny"
    assert (exp / "tokenize").resolve() == tok.resolve()
    log = (exp / "log.txt").read_text()
    assert log.count("tokenize running") == 3


def test_stage_alone_without_inputs_says_what_to_run(small_mt, tmp_path: Path):
    proc = run_cli("run", str(small_mt()), "--only", "tokenize", cwd=tmp_path)
    assert proc.returncode == 2
    assert "needs the output of stage prepare" in proc.stderr and "--to prepare" in proc.stderr
    proc = run_cli("run", str(small_mt()), "--only", "nonsense", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown stage" in proc.stderr


def test_sigkill_mid_stage_leaves_no_finished_artifact(small_mt, tmp_path: Path):
    # the full training set makes tokenize take a few seconds: long enough to kill it inside
    recipe = small_mt(name="kill", train_lines=29000, vocab=4000)
    run_cli("run", str(recipe), "--to", "prepare", cwd=tmp_path, check=True)
    keys = _keys(recipe, tmp_path)
    partial = tmp_path / "cache" / "tokenize" / f"{keys['tokenize']}.partial"
    final = tmp_path / "cache" / "tokenize" / keys["tokenize"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "seqpipe", "run", str(recipe), "--to", "tokenize"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while not partial.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)  # inside SentencePiece training now
    assert proc.poll() is None, "tokenize finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not final.exists()
    status = run_cli("status", str(recipe), cwd=tmp_path, check=True).stdout
    assert status.splitlines()[2].split()[2] == "partial"
    # the next run repairs it
    run_cli("run", str(recipe), "--to", "tokenize", cwd=tmp_path, check=True)
    assert (final / "manifest.json").is_file() and not partial.exists()
    assert len(IdArray(final, "train.src")) == 28998


def test_an_artifact_being_built_is_refused_waited_for_and_shown_running(small_mt, tmp_path: Path):
    recipe = small_mt(name="conc")
    key = _keys(recipe, tmp_path)["prepare"]
    cmd = [sys.executable, "-m", "seqpipe", "run", str(recipe), "--to", "prepare"]
    lock = tmp_path / "cache" / "prepare" / f"{key}.lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "a+") as held:  # another process builds cache/prepare/<key>
        fcntl.lockf(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("the test's pid")
        held.flush()
        busy = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert busy.returncode == 75, busy.stderr
        assert busy.stderr.count("\n") == 1 and "being built by the test's pid" in busy.stderr
        status = run_cli("status", str(recipe), cwd=tmp_path, check=True).stdout.splitlines()
        assert status[1].split()[2] == "running" and status[1].endswith("(the test's pid)")
        waiting = subprocess.Popen(
            [*cmd, "--wait"], cwd=tmp_path, stderr=subprocess.PIPE, text=True
        )
        line = waiting.stderr.readline()
        assert "waiting  for the test's pid, which builds prepare" in line, line
        time.sleep(1)
        assert waiting.poll() is None and not (lock.parent / key).exists()
        fcntl.lockf(held, fcntl.LOCK_UN)
    assert waiting.wait(timeout=300) == 0, waiting.stderr.read()
    assert json.loads((lock.parent / key / "manifest.json").read_text())["key"] == key
    status = run_cli("status", str(recipe), cwd=tmp_path, check=True).stdout.splitlines()
    assert status[1].split()[2] == "done"


def test_two_recipes_run_at_once_and_build_a_shared_artifact_once(small_mt, tmp_path: Path):
    a, b = small_mt(name="a"), small_mt(name="b", vocab=300)  # same data, other tokenize
    assert _keys(a, tmp_path)["prepare"] == _keys(b, tmp_path)["prepare"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "seqpipe", "run", str(r), "--to", "tokenize", "--wait"],
            cwd=tmp_path,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (a, b)
    ]
    logs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    assert sum(log.count("prepare  running") for log in logs) == 1, logs
    assert sum(log.count("tokenize running") for log in logs) == 2, logs
    for r in (a, b):
        assert (tmp_path / "exp" / r.stem / "tokenize" / "manifest.json").is_file()
    assert len(list((tmp_path / "cache" / "prepare").glob("*/manifest.json"))) == 1


def _local_recipe(tmp_path: Path, src: str, tgt: str) -> Path:
    r = tmp_path / "local.yaml"
    r.write_text(
        "name: local\ndata:\n  dataset: local\n  local:\n"
        f"    train: {{src: {src}, tgt: {tgt}}}\n    valid: {{src: {src}, tgt: {tgt}}}\n"
        "tokenize:\n  vocab_size: 30\n"
    )
    return r


@pytest.mark.parametrize(
    "src_bytes, tgt_bytes, needle",
    [
        (b"a b\nc d\n", b"x y\n", "has 2 lines but"),
        (b"a b\n\xff\xfe oops\n", b"x\ny\n", "a.txt:2: invalid UTF-8"),
        (None, b"x\n", "a.txt: file not found (data.local.train)"),
    ],
)
def test_bad_parallel_data_is_a_clear_error(tmp_path: Path, src_bytes, tgt_bytes, needle):
    if src_bytes is not None:
        (tmp_path / "a.txt").write_bytes(src_bytes)
    (tmp_path / "b.txt").write_bytes(tgt_bytes)
    proc = run_cli(
        "run", str(_local_recipe(tmp_path, "a.txt", "b.txt")), "--to", "prepare", cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert needle in lines[-1] and "Traceback" not in proc.stderr, proc.stderr
    assert not list((tmp_path / "cache" / "prepare").glob("[0-9a-f]*[0-9a-f]"))


def test_local_parallel_files_prepare_and_tokenize(tmp_path: Path):
    src = "\n".join(f"das ist satz nummer {i}  mit  Leerzeichen" for i in range(60)) + "\n"
    tgt = "\n".join(f"this is sentence number {i}" for i in range(60)) + "\n"
    (tmp_path / "a.txt").write_text(src)
    (tmp_path / "b.txt").write_text(tgt)
    proc = run_cli(
        "run", str(_local_recipe(tmp_path, "a.txt", "b.txt")), "--to", "tokenize", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    prep = (tmp_path / "exp" / "local" / "prepare").resolve()
    assert (prep / "train.src").read_text().splitlines()[
        0
    ] == "das ist satz nummer 0 mit Leerzeichen"


def test_checksum_mismatch_in_mirror_is_reported(tmp_path: Path):
    import shutil

    mirror = tmp_path / "mirror"
    (mirror / "multi30k" / "raw").mkdir(parents=True)
    for f in (MIRROR / "multi30k" / "raw").iterdir():
        shutil.copy(f, mirror / "multi30k" / "raw" / f.name)
    (mirror / "multi30k" / "raw" / "val.de.gz").write_bytes(b"corrupt")
    r = tmp_path / "r.yaml"
    r.write_text("name: r\n")
    proc = run_cli(
        "run", str(r), "--to", "prepare", cwd=tmp_path, env={"SEQPIPE_MIRROR": str(mirror)}
    )
    assert proc.returncode == 2 and "val.de.gz: sha256 mismatch" in proc.stderr


def test_tatoeba_split_is_deterministic_and_english_disjoint(tmp_path: Path):
    r = tmp_path / "tat.yaml"
    r.write_text(
        "name: tat\ndata:\n  dataset: tatoeba_deu_eng\n  src_lang: de\n  tgt_lang: en\n"
        "  splits: {train: train, valid: valid, test: test}\n  valid_fraction: 0.02\n  test_fraction: 0.02\n"
    )
    run_cli("run", str(r), "--to", "prepare", cwd=tmp_path, check=True)
    prep = (tmp_path / "exp" / "tat" / "prepare").resolve()
    train_en = set((prep / "train.tgt").read_text(encoding="utf-8").splitlines())
    test_en = set((prep / "test.tgt").read_text(encoding="utf-8").splitlines())
    assert 2000 < len(test_en) < 4000 and len(train_en) > 100_000
    assert not train_en & test_en
    stats = json.loads((prep / "stats.json").read_text())
    assert stats["train"]["read"] + stats["valid"]["read"] + stats["test"]["read"] == 169_813


def test_sweep_jobs_runs_variants_at_once_on_a_local_ray(tmp_path: Path):
    """--jobs 2: two variants (decode settings only) as Ray tasks at once; the stages they
    share are built once, by whichever variant gets there first."""

    recipe = REPO / "recipes" / "mt_small.yaml"
    args = [*TINY_MT, "train.max_steps=20", "train.valid_every=10"]
    proc = run_cli(
        "sweep",
        str(recipe),
        *args,
        "--grid",
        "decode.beam_size=1,3",
        "--jobs",
        "2",
        "--format",
        "json",
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert len(rows) == 2 and {r["beam"] for r in rows} == {1, 3}
    assert proc.stderr.count(": done (ran ") == 2
    logs = [(d / "log.txt").read_text() for d in (tmp_path / "exp").iterdir()]
    assert len(logs) == 2
    for stage in ("prepare", "tokenize", "train"):
        assert sum(log.count(f"{stage:<8} running") for log in logs) == 1, stage
        assert len(list((tmp_path / "cache" / stage).glob("*/manifest.json"))) == 1
    assert sum(log.count("decode   running") for log in logs) == 2
