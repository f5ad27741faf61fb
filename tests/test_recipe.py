"""Recipe validation, overrides and key hygiene (no training here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqpipe.core.recipe import load_recipe
from seqpipe.errors import InputError

from .conftest import REPO, run_cli


def test_reference_recipe_loads_with_every_key_documented():
    r = load_recipe(REPO / "recipes" / "mt_small.yaml")
    assert r.name == "mt_small" and r.task == "mt"
    text = (REPO / "recipes" / "mt_small.yaml").read_text()
    # the reference config shows every key of every section
    for section in ("data", "tokenize", "model", "train", "decode", "score"):
        for key in type(getattr(r, section)).model_fields:
            if section == "data" and key in (
                "local",
                "path",
                "test_speakers",
                "valid_speakers",
                "utterances",
                "sample_rate",
                "on_error",
                "valid_fraction",
                "test_fraction",
            ):
                continue  # dataset-specific keys are documented in the README
            assert f"{key}:" in text, f"{section}.{key} missing from mt_small.yaml"


def test_unknown_key_did_you_mean(tmp_path: Path):
    p = tmp_path / "r.yaml"
    p.write_text("train:\n  lerning_rate: 0.1\n")
    with pytest.raises(InputError) as e:
        load_recipe(p)
    msg = str(e.value)
    assert "train.lerning_rate: unknown key; did you mean lr?" in msg
    assert f"{p}:2" in msg  # file and line


def test_did_you_mean_close_key(tmp_path: Path):
    p = tmp_path / "r.yaml"
    p.write_text("decode:\n  beam_sise: 4\n")
    with pytest.raises(InputError, match="did you mean beam_size"):
        load_recipe(p)


def test_wrong_type_names_key_file_and_expected_type(tmp_path: Path):
    p = tmp_path / "r.yaml"
    p.write_text("seed: 1\ntrain:\n  lr: fast\n")
    with pytest.raises(InputError) as e:
        load_recipe(p)
    msg = str(e.value)
    assert f"{p}:3" in msg and "train.lr" in msg and "number" in msg and "'fast'" in msg


def test_overrides_are_typed_and_checked(tmp_path: Path):
    p = tmp_path / "r.yaml"
    p.write_text("name: x\n")
    r = load_recipe(p, ["train.lr=5e-4", "decode.beam_size=10", "model.cell=lstm"])
    assert r.train.lr == 5e-4 and r.decode.beam_size == 10 and r.model.cell == "lstm"
    with pytest.raises(InputError, match="did you mean beam_size"):
        load_recipe(p, ["decode.beam=3"])
    with pytest.raises(InputError, match="decode.beam_size"):
        load_recipe(p, ["decode.beam_size=many"])
    with pytest.raises(InputError, match="expected KEY=VALUE"):
        load_recipe(p, ["decode.beam_size"])
    with pytest.raises(InputError, match="model.cell"):
        load_recipe(p, ["model.cell=transformer"])


def test_cache_key_ignores_threads_but_not_lr(tmp_path: Path):
    from seqpipe.core.pipeline import Pipeline

    p = tmp_path / "r.yaml"
    p.write_text("name: x\n")
    base = Pipeline(load_recipe(p), tmp_path).keys()
    threads = Pipeline(
        load_recipe(p, ["train.threads=1", "decode.batch_tokens=100"]), tmp_path
    ).keys()
    lr = Pipeline(load_recipe(p, ["train.lr=0.1"]), tmp_path).keys()
    beam = Pipeline(load_recipe(p, ["decode.beam_size=9"]), tmp_path).keys()
    assert threads == base
    assert lr["prepare"] == base["prepare"] and lr["tokenize"] == base["tokenize"]
    assert lr["train"] != base["train"] and lr["decode"] != base["decode"]
    assert beam["train"] == base["train"] and beam["decode"] != base["decode"]
    assert beam["score"] != base["score"]


def test_train_seed_enters_the_key_only_when_set(tmp_path: Path):
    import numpy as np

    from seqpipe.common.batching import recipe_train_batches
    from seqpipe.core.pipeline import Pipeline

    p = tmp_path / "r.yaml"
    p.write_text("name: x\n")
    base_recipe = load_recipe(p)
    base = Pipeline(base_recipe, tmp_path).keys()
    # a key added later (train.seed) leaves existing artifacts' keys alone at its default
    assert "seed" not in base_recipe.train.key_dict()
    assert Pipeline(load_recipe(p, ["train.seed=null"]), tmp_path).keys() == base
    other = load_recipe(p, ["train.seed=7"])
    keys = Pipeline(other, tmp_path).keys()
    assert keys["prepare"] == base["prepare"] and keys["tokenize"] == base["tokenize"]
    assert keys["train"] != base["train"] and keys["decode"] != base["decode"]
    # and it changes what training sees (same data, another batch order)
    lengths = np.arange(5, 305)
    a = recipe_train_batches(lengths, lengths, base_recipe, 0)
    b = recipe_train_batches(lengths, lengths, other, 0)
    same = recipe_train_batches(lengths, lengths, load_recipe(p, ["train.seed=1234"]), 0)
    assert [x.tolist() for x in a] == [x.tolist() for x in same]
    assert [x.tolist() for x in a] != [x.tolist() for x in b]


def test_config_command_prints_resolved_recipe(tmp_path: Path):
    proc = run_cli(
        "config", str(REPO / "recipes" / "mt_small.yaml"), "decode.beam_size=3", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "beam_size: 3" in proc.stdout and "max_tokens:" in proc.stdout


@pytest.mark.parametrize(
    "text, override, needle",
    [
        ("train: [unclosed\n", None, "invalid YAML"),
        ("train:\n  lerning_rate: 1\n", None, "unknown key"),
        ("train:\n  lr: abc\n", None, "train.lr"),
        ("name: x\n", "nope.key=1", "unknown key"),
        ("- a\n- b\n", None, "must be a mapping"),
    ],
)
def test_bad_recipe_exit_code_2_one_line(
    tmp_path: Path, text: str, override: str | None, needle: str
):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    args = ["config", str(p)] + ([override] if override else [])
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_recipe_file(tmp_path: Path):
    proc = run_cli("run", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert proc.returncode == 2 and "nope.yaml: recipe file not found" in proc.stderr


def test_each_task_has_its_own_schema(tmp_path: Path):
    """An MT recipe has no ASR key and an ASR recipe no MT-only key; a key of the other task is
    one line naming it, exit 2, nothing run."""
    from seqpipe.asr.config import ASRRecipe
    from seqpipe.mt.config import MTRecipe

    mt = run_cli("config", str(REPO / "recipes" / "mt_small.yaml"), cwd=tmp_path)
    assert mt.returncode == 0
    keys = (
        "subsampling",
        "conv_channels",
        "frontend_norm",
        "spec_augment",
        "members",
        "member_jobs",
        "ctc_weight",
        "adapt",
        "adapt_lr",
        "asr_normalization",
        "arch",
    )
    for key in (*keys, "features"):
        assert f"\n  {key}:" not in mt.stdout and f"\n{key}:" not in mt.stdout, key
    for recipe, bad, label, task in (
        ("mt_small.yaml", "train.spec_augment=false", "an ASR key", "mt"),
        ("mt_small.yaml", "model.subsampling=none", "an ASR key", "mt"),
        ("mt_small.yaml", "features.vtlp=0.1", "an ASR key", "mt"),
        ("asr_yesno.yaml", "decode.shortlist=5", "an MT key", "asr"),
        ("asr_yesno.yaml", "tokenize.bpe_dropout=0.1", "an MT key", "asr"),
    ):
        key = bad.split("=")[0].removesuffix(".vtlp")  # a whole section: named as such
        proc = run_cli("status", str(REPO / "recipes" / recipe), bad, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert f"{key}: {label}; this recipe's task is {task}" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "cache").exists()
    # in the file too: the line is named
    p = tmp_path / "r.yaml"
    p.write_text("task: mt\ntrain:\n  lr: 0.1\n  members: 2\n")
    with pytest.raises(InputError, match=r"r.yaml:4: train.members: an ASR key"):
        load_recipe(p)
    assert "spec_augment" not in MTRecipe.model_fields["train"].annotation.model_fields
    assert "shortlist" not in ASRRecipe.model_fields["decode"].annotation.model_fields
    with pytest.raises(InputError, match="task: 'nmt' is not a task; use mt or asr"):
        load_recipe(p, ["task=nmt"])


def test_a_stage_key_hashes_only_what_the_stage_reads(tmp_path: Path):
    from seqpipe.core.pipeline import Pipeline

    p = tmp_path / "r.yaml"
    p.write_text("name: x\n")
    base = Pipeline(load_recipe(p), tmp_path).keys()
    # the score section is read by score only; decode's length limits by training's
    # validation too (greedy BLEU picks the best checkpoint)
    score = Pipeline(load_recipe(p, ["score.lowercase=true"]), tmp_path).keys()
    assert {k for k in base if base[k] != score[k]} == {"score"}
    max_len = Pipeline(load_recipe(p, ["decode.max_len_a=2"]), tmp_path).keys()
    assert {k for k in base if base[k] != max_len[k]} == {"train", "decode", "score"}
    asr = tmp_path / "a.yaml"
    asr.write_text("name: a\ntask: asr\n")
    a = Pipeline(load_recipe(asr), tmp_path).keys()
    vtlp = Pipeline(load_recipe(asr, ["features.vtlp=0.1"]), tmp_path).keys()
    assert {k for k in a if a[k] != vtlp[k]} == {"features", "train", "decode", "score"}
    members = Pipeline(load_recipe(asr, ["train.members=1"]), tmp_path).keys()
    assert members == a  # a key added later enters a key only when set to a new value
