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


def _copy_ws(src: Path, dst: Path) -> Path:
    for sub in ("cache", "exp"):
        shutil.copytree(src / sub, dst / sub, symlinks=True)
    return dst


def _one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    err = proc.stderr
    assert proc.returncode == 2, (proc.returncode, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)


def test_a_corrupt_artifact_is_detected_not_used_and_rebuilt(trained, tmp_path):
    ref_ws, recipe = trained
    ws = _copy_ws(ref_ws, tmp_path)
    key = _keys(recipe, *TRAIN)["train"]
    art = ws / "cache" / "train" / key
    good = _sha(art / "model_best.pt")
    (ws / "in.txt").write_text("A man is riding a bike.\n")
    data = (art / "model_best.pt").read_bytes()
    (art / "model_best.pt").write_bytes(data[: len(data) // 2])  # truncated
    _one_line_error(
        run_cli("decode", "exp/r", "in.txt", cwd=ws), "model_best.pt: corrupt", "seqpipe run"
    )
    status = run_cli("status", str(recipe), *TRAIN, cwd=ws)
    assert status.returncode == 2 and " train " in status.stdout.replace("train  ", " train ")
    assert [ln.split()[2] for ln in status.stdout.splitlines()[1:4]] == ["done", "done", "corrupt"]
    # a flipped byte keeps the size: only --verify (sha256) sees it
    (art / "model_best.pt").write_bytes(data)
    flipped = bytearray((art / "model_last.pt").read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF
    (art / "model_last.pt").write_bytes(bytes(flipped))
    assert run_cli("status", str(recipe), *TRAIN, cwd=ws).returncode == 0
    status = run_cli("status", str(recipe), *TRAIN, "--verify", cwd=ws)
    assert status.returncode == 2 and status.stdout.splitlines()[3].split()[2] == "corrupt"
    _one_line_error(
        run_cli("decode", "exp/r", "in.txt", "--checkpoint", "last", cwd=ws),
        "model_last.pt: corrupt (sha256 differs",
    )
    # run --verify sets it aside and rebuilds it: the same weights as before
    rerun = run_cli("run", str(recipe), *TRAIN, "--to", "train", "--verify", cwd=ws, check=True)
    assert "corrupt" in rerun.stderr and (art.parent / f"{key}.corrupt").is_dir()
    assert _sha(art / "model_best.pt") == good and _sha(art / "model_last.pt") == _sha(
        ref_ws / "cache" / "train" / key / "model_last.pt"
    )
    assert run_cli("status", str(recipe), *TRAIN, "--verify", cwd=ws).returncode == 0


def test_a_stage_checks_its_inputs_by_sha256_before_it_reads_them(trained, tmp_path):
    ref_ws, recipe = trained
    ws = _copy_ws(ref_ws, tmp_path)
    keys = _keys(recipe, *TRAIN)
    spm = ws / "cache" / "tokenize" / keys["tokenize"] / "spm.model"
    flipped = bytearray(spm.read_bytes())
    flipped[100] ^= 0xFF
    spm.write_bytes(bytes(flipped))
    # decode is not cached: it reads tokenize, which is found corrupt and rebuilt first
    out = run_cli("run", str(recipe), *TRAIN, "--to", "decode", cwd=ws, check=True)
    assert "tokenize corrupt" in out.stderr and "tokenize rebuilding" in out.stderr
    assert _sha(spm) != _sha(spm.parent.with_name(spm.parent.name + ".corrupt") / "spm.model")
    assert run_cli("status", str(recipe), *TRAIN, "--verify", cwd=ws).returncode == 0


BAD_INPUT = [  # (args after `seqpipe`, what the one line must name); {R}: the recipe
    (["run", "{R}", "train.lr=abc"], "override 'train.lr=abc': train.lr: input should be"),
    (["config", "{R}", "decode.splits=[test"], "override 'decode.splits=[test': value is not"),
    (["run", "{R}", "model.emb_size=32"], "model.tied_embeddings: needs model.emb_size (32)"),
    (["run", "{R}", "decode.nbest=9", "decode.beam_size=3"], "nbest 9 is larger than the beam"),
    (["run", "{A}", "model.arch=attention"], "decode.search: ctc_greedy needs model.arch ctc"),
    (["run", "{A}", "model.subsampling=pyramid"], "pyramid needs model.enc_layers >= 2"),
    (["run", "{R}", "model.attention=luong", "model.luong_score=dot"], "dot needs the encoder"),
    (["run", "{R}", "train.spec_augment=false"], "train.spec_augment: an ASR key"),
    (["run", "{R}", "train.lerning_rate=1"], "did you mean"),
    (["run", "{R}", "train.lr"], "expected KEY=VALUE"),
    (["run", "{R}", "task=nlp"], "'nlp' is not a task"),
    (["run", "."], "'RECIPE'"),
    (["run", "{R}", "-w", "{R}"], "'--workspace'"),
    (["run", "missing.yaml"], "missing.yaml: recipe file not found"),
    (["run", "dup.yaml"], "dup.yaml:4: invalid YAML: key 'lr' is given twice"),
    (["run", "broken.yaml"], "broken.yaml:3: invalid YAML"),
    (["run", "typed.yaml"], "typed.yaml:3: train.max_steps: input should be a valid integer"),
    (["run", "{R}", "--only", "nonsense"], "--only nonsense: unknown stage"),
    (["run", "{R}", "--from", "score", "--to", "train"], "comes after"),
    (["nonsense"], "No such command"),
]


def test_bad_input_gets_one_line_and_exit_2(tmp_path):
    recipe = tmp_path / "mt.yaml"
    shutil.copy(REPO / "recipes" / "mt_small.yaml", recipe)
    asr = shutil.copy(REPO / "recipes" / "asr_yesno.yaml", tmp_path / "asr.yaml")
    (tmp_path / "dup.yaml").write_text("task: mt\ntrain:\n  lr: 0.1\n  lr: 0.2\n")
    (tmp_path / "broken.yaml").write_text("task: mt\ntrain: [1\n")
    (tmp_path / "typed.yaml").write_text("task: mt\ntrain:\n  max_steps: many\n")
    for args, needle in BAD_INPUT:
        args = [a.replace("{R}", str(recipe)).replace("{A}", str(asr)) for a in args]
        proc = run_cli(*args, cwd=tmp_path)
        _one_line_error(proc, needle)
        assert not (tmp_path / "cache").exists(), args  # nothing ran


def test_the_missing_input_hint_is_a_command_that_works(trained, tmp_path):
    _, recipe = trained
    proc = run_cli("run", str(recipe), *TRAIN, "-w", "ws", "--only", "decode", cwd=tmp_path)
    _one_line_error(proc, "needs the output of stages tokenize and train", "--to train")
    cmd = proc.stderr.split("`")[1].split()
    assert cmd[:2] == ["seqpipe", "run"] and all(o in cmd for o in TRAIN) and "ws" in cmd
    assert run_cli(*cmd[1:], cwd=tmp_path).returncode == 0
    assert (
        run_cli("run", str(recipe), *TRAIN, "-w", "ws", "--only", "decode", cwd=tmp_path).returncode
        == 0
    )


def test_the_leaderboard_skips_a_manifest_that_is_not_an_artifacts(tmp_path):
    from seqpipe.tools.leaderboard import collect

    for key, manifest in (("a1", {}), ("b2", {"key": "other"})):
        art = tmp_path / "cache" / "score" / key
        art.mkdir(parents=True)
        (art / "manifest.json").write_text(json.dumps(manifest))
        (art / "scores.json").write_text(json.dumps({"splits": {"test": {"sentences": 1}}}))
    warnings: list[str] = []
    assert collect([tmp_path], warn=warnings.append) == []
    assert len(warnings) == 2 and all("not a manifest of this artifact" in w for w in warnings)
