"""The ASR pipeline end to end on real audio from the mirror: yesno to a low WER through the CLI,
connected FSDD digits with each architecture, bad audio in a TSV corpus, batched decoding."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from seqpipe.core.pipeline import Pipeline
from seqpipe.core.recipe import load_recipe

from .conftest import MIRROR, REPO, YESNO, run_cli

pytestmark = pytest.mark.slow

SMALL = REPO / "recipes" / "asr_small.yaml"

# connected digits, tiny: 24 train utterances, a small model, two updates
TINY_FSDD = [
    "data.utterances={train: 24, valid: 6, test: 6}",
    "data.valid_speakers=[jackson]",  # a held-out valid speaker (the recipe holds out yweweler)
    "features.speed_perturb=[1.0]",
    "model.hidden_size=32",
    "model.emb_size=32",
    "model.conv_channels=8",
    "model.enc_layers=1",
    "train.max_steps=2",
    "train.valid_every=2",
    "train.max_tokens=8000",
    "train.average_last=0",
    "decode.checkpoint=best",
    "decode.beam_size=2",
    "decode.max_len_a=0.3",
    "train.members=1",  # the recipe trains an ensemble of 2; one test below does
    "decode.adapt=none",  # the recipe adapts to the test speaker; one test below does
]


def _scores(ws: Path, name: str) -> dict:
    return json.loads((ws / "exp" / name / "scores.json").read_text())


def test_yesno_end_to_end_through_the_cli(yesno_run: tuple[Path, subprocess.CompletedProcess]):
    ws, proc = yesno_run
    assert proc.returncode == 0, proc.stderr
    assert "ran prepare, features, train, decode, score" in proc.stderr
    scores = _scores(ws, "asr_yesno")
    test = scores["splits"]["test"]
    assert scores["task"] == "asr" and test["sentences"] == 30
    assert test["wer"]["normalization"] == "lower,strip_punct,collapse_space"
    assert test["wer"]["ref_words"] == 240
    assert test["wer"]["score"] <= 5.0, proc.stdout  # the recipe reaches 0.83 %
    assert f"WER {test['wer']['score']:.2f}" in proc.stdout
    exp = ws / "exp" / "asr_yesno"
    # prepare: Kaldi split, valid held out of train (never the test half)
    prep = (exp / "prepare").resolve()
    ids = {
        s: [ln.split("\t")[0] for ln in (prep / f"{s}.tsv").read_text().splitlines()[1:]]
        for s in ("train", "valid", "test")
    }
    assert (len(ids["train"]), len(ids["valid"]), len(ids["test"])) == (24, 6, 30)
    assert not set(ids["valid"]) & set(ids["test"]) and not set(ids["valid"]) & set(ids["train"])
    assert json.loads((prep / "stats.json").read_text())["skipped"] == 0
    # decode/score artifacts
    dec = (exp / "decode").resolve()
    assert (dec / "test.ids").read_text().split() == ids["test"]
    assert 0 < json.loads((dec / "decode.json").read_text())["splits"]["test"]["rtf"] < 1
    feats = json.loads(((exp / "features").resolve() / "stats.json").read_text())["splits"]
    assert all(v["x_real_time"] > 1 and v["seconds"] > 0 for v in feats.values())
    report = (exp / "score" / "test.errors.txt").read_text()
    assert report.startswith("%WER") and all(i in report for i in ids["test"])
    # a second run is fully cached
    again = run_cli("run", str(YESNO), cwd=ws, check=True)
    assert "5 stage(s) up to date" in again.stderr


@pytest.fixture(scope="module")
def fsdd_ws(tmp_path_factory) -> Path:
    """One workspace for the tiny connected-digit runs (prepare/features are shared)."""
    return tmp_path_factory.mktemp("fsdd")


@pytest.mark.parametrize(
    "arch,extra",
    [
        ("ctc", ["decode.search=ctc_beam", "features.utterance_cvn=true"]),
        (
            "attention",
            ["model.subsampling=pyramid", "model.enc_layers=2", "model.attention=bahdanau"],
        ),
        ("ctc_attention", []),  # decode.search: auto -> joint
    ],
)
def test_fsdd_connected_each_arch_runs_and_scores(fsdd_ws: Path, arch: str, extra: list[str]):
    args = [*TINY_FSDD, f"model.arch={arch}", *extra]
    proc = run_cli("run", str(SMALL), *args, cwd=fsdd_ws, timeout=300)
    assert proc.returncode == 0, proc.stderr
    test = _scores(fsdd_ws, "asr_small")["splits"]["test"]
    assert test["sentences"] == 6 and test["wer"]["ref_words"] > 6 and "cer" in test
    pipe = Pipeline(load_recipe(SMALL, args), fsdd_ws)
    train = pipe.store.get("train", pipe.keys()["train"])
    spec = json.loads((train.path / "model.json").read_text())
    assert spec["arch"] == arch and spec["task"] == "asr"
    decode = pipe.store.get("decode", pipe.keys()["decode"]).manifest()["decode"]
    assert (
        decode["search"] == {"ctc": "ctc_beam", "attention": "beam", "ctc_attention": "joint"}[arch]
    )
    prep = pipe.store.get("prepare", pipe.keys()["prepare"]).path
    # held-out speakers; built audio lives in the artifact and the manifest points into it
    speakers = {
        s: {ln.split("\t")[4] for ln in (prep / f"{s}.tsv").read_text().splitlines()[1:]}
        for s in ("train", "valid", "test")
    }
    assert speakers["test"] == {"theo"} and speakers["valid"] == {"jackson"}
    assert not speakers["train"] & {"theo", "jackson"}
    first = (prep / "test.tsv").read_text().splitlines()[1].split("\t")
    assert not Path(first[1]).is_absolute() and (prep / first[1]).is_file()


def test_decode_search_must_fit_the_arch(fsdd_ws: Path):
    proc = run_cli(
        "run", str(SMALL), *TINY_FSDD, "model.arch=ctc", "decode.search=joint", cwd=fsdd_ws
    )
    assert proc.returncode == 2
    assert "decode.search: joint needs model.arch ctc_attention" in proc.stderr


def test_api_resolves_the_recipes_auto_search(fsdd_ws: Path, tmp_path: Path):
    """asr_small says decode.search: auto; the API decodes with what the stage used."""
    from seqpipe import load_model

    args = [*TINY_FSDD, "model.arch=ctc_attention"]
    run_cli("run", str(SMALL), *args, cwd=fsdd_ws, check=True)  # cached after the arch tests
    model = load_model(str(SMALL), workspace=str(fsdd_ws), overrides=args, device="cpu")
    assert model.decode_settings().search == "joint"
    assert model.decode_settings(search="ctc_greedy").search == "ctc_greedy"
    wavs = _fsdd_wavs(tmp_path, 2)
    assert len(model.transcribe([str(w) for w in wavs])) == 2


def _fsdd_wavs(dest: Path, n: int) -> list[Path]:
    """The first ``n`` FSDD recordings, read straight from the mirror's archive."""
    out = []
    with tarfile.open(MIRROR / "fsdd" / "fsdd_recordings_train_5spk.tar.gz") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".wav"):
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                path = dest / Path(member.name).name
                path.write_bytes(data)
                out.append(path)
                if len(out) == n:
                    break
    return out


def _tsv_recipe(ws: Path, on_error: str) -> Path:
    audio = ws / "audio"
    audio.mkdir(exist_ok=True)
    wavs = _fsdd_wavs(audio, 8)
    (audio / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(64))
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    lines = ["path\ttranscript"] + [f"audio/{w.name}\t{words[int(w.name[0])]}" for w in wavs]
    lines.insert(4, "audio/broken.wav\tseven")
    (ws / "corpus.tsv").write_text("\n".join(lines) + "\n")
    recipe = ws / f"tsv_{on_error}.yaml"
    recipe.write_text(
        f"task: asr\ndata:\n  dataset: tsv\n  path: corpus.tsv\n  on_error: {on_error}\n"
        "  sample_rate: 8000\n  valid_fraction: 0.2\n  test_fraction: 0.2\n"
    )
    return recipe


def test_corrupt_wav_in_tsv_stops_or_is_skipped(tmp_path: Path):
    stop = run_cli("run", str(_tsv_recipe(tmp_path, "stop")), "--to", "prepare", cwd=tmp_path)
    assert stop.returncode == 2
    err = stop.stderr.strip().splitlines()[-1]
    assert err.startswith("error: ") and "broken.wav" in err and "Traceback" not in stop.stderr
    skip = run_cli("run", str(_tsv_recipe(tmp_path, "skip")), "--to", "features", cwd=tmp_path)
    assert skip.returncode == 0, skip.stderr
    prep = (tmp_path / "exp" / "tsv_skip" / "prepare").resolve()
    stats = json.loads((prep / "stats.json").read_text())
    assert stats["skipped"] == 1 and "broken.wav" in " ".join(
        stats["splits"]["train"]["skipped_files"]
    )
    counts = {s: v["utterances"] for s, v in stats["splits"].items()}
    assert sum(counts.values()) == 8 and min(counts.values()) >= 1
    assert "broken" not in "".join((prep / f"{s}.tsv").read_text() for s in counts)


def test_batched_decoding_equals_one_at_a_time(fsdd_ws: Path):
    """Every search gives the same output whatever else is in the batch (and in input order)."""
    import torch

    from seqpipe.asr.features import FeatureStore
    from seqpipe.asr.transcribe import split_loader, transcribe
    from seqpipe.models.asr import build_asr_model, model_spec

    args = [*TINY_FSDD, "model.arch=ctc_attention"]
    recipe = load_recipe(SMALL, args)
    pipe = Pipeline(recipe, fsdd_ws)
    pipe.run(stop="features")
    feat_dir = pipe.store.get("features", pipe.keys()["features"]).path
    store = FeatureStore(feat_dir / "feats" / "valid")
    load = split_loader(feat_dir, store)
    torch.manual_seed(0)
    model = build_asr_model(model_spec(recipe.model.model_dump(), store.num_mel_bins, 20)).eval()
    for p in model.parameters():  # sharper than the init: fewer near-ties, a real test
        p.data.mul_(3.0)
    kw = dict(beam_size=3, max_len_a=0.5, max_len_b=2)
    for search in ("ctc_greedy", "ctc_beam", "greedy", "beam", "joint"):
        together, _ = transcribe(
            model, store.lengths, load, search=search, batch_frames=10**6, **kw
        )
        alone, _ = transcribe(model, store.lengths, load, search=search, batch_frames=1, **kw)
        assert [h[0][0] for h in together] == [h[0][0] for h in alone], search
        if search in ("beam", "joint"):
            np.testing.assert_allclose(
                [h[0][1] for h in together], [h[0][1] for h in alone], rtol=1e-4, atol=1e-4
            )
    # decode.quantize=int8 (CPU): the conv front end stays float, Linear/GRU become int8, and
    # every search runs on the quantized model
    from seqpipe.common.checkpoint import quantize_int8

    q = quantize_int8(model)
    assert "DynamicQuantizedGRU" in repr(q)
    for search in ("ctc_greedy", "ctc_beam", "beam", "joint"):
        out, _ = transcribe(q, store.lengths, load, search=search, **kw)
        assert len(out) == len(store) and all(h and h[0][0] is not None for h in out), search


def test_ensemble_members_train_apart_and_decode_together(fsdd_ws: Path, tmp_path: Path):
    """train.members=2: two members (seeds s, s+1) trained in two processes, merged into one
    artifact that the decode stage, the API and an exported bundle all decode the same way;
    an interrupted ensemble keeps its finished members."""
    import torch

    from seqpipe import load_model
    from seqpipe.asr.features import FeatureStore
    from seqpipe.asr.transcribe import split_loader, transcribe
    from seqpipe.common.checkpoint import load_trained as load_asr_model
    from seqpipe.models.asr import CTCEnsemble

    args = [*TINY_FSDD, "model.arch=ctc", "train.members=2", "train.max_steps=3"]
    proc = run_cli("run", str(SMALL), *args, cwd=fsdd_ws, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "[member 0]" in proc.stderr and "[member 1]" in proc.stderr
    board = run_cli("leaderboard", cwd=fsdd_ws)
    assert board.returncode == 0 and "biGRU 32x1 x2" in board.stdout, board.stdout
    bundle = tmp_path / "ens.spt"
    exported = run_cli("export", "exp/asr_small", "-o", str(bundle), cwd=fsdd_ws)
    assert exported.returncode == 0, exported.stderr
    pipe = Pipeline(load_recipe(SMALL, args), fsdd_ws)
    train = pipe.store.get("train", pipe.keys()["train"]).path
    info = json.loads((train / "train.json").read_text())
    assert info["members"] == 2 and info["member_seeds"] == [1234, 1235]
    assert [r["steps"] for r in info["member_runs"]] == [3, 3]
    spec = json.loads((train / "model.json").read_text())
    assert spec["members"] == 2
    ens, _ = load_asr_model(train, "best")
    assert isinstance(ens, CTCEnsemble) and len(ens.members) == 2
    a, b = (dict(m.named_parameters()) for m in ens.members)
    assert any(not torch.equal(a[k], b[k]) for k in a)  # two seeds, two models
    # member k is the model that train.seed=1234+k without members would have made
    for k in (0, 1):
        single = [*TINY_FSDD, "model.arch=ctc", "train.max_steps=3", f"train.seed={1234 + k}"]
        assert run_cli("run", str(SMALL), *single, "--to", "train", cwd=fsdd_ws).returncode == 0
        p1 = Pipeline(load_recipe(SMALL, single), fsdd_ws)
        one, _ = load_asr_model(p1.store.get("train", p1.keys()["train"]).path, "best")
        for name, v in one.state_dict().items():
            torch.testing.assert_close(ens.members[k].state_dict()[name], v)
    # the decode stage's output is the ensemble's, and so is the API's
    feat_dir = pipe.store.get("features", pipe.keys()["features"]).path
    store = FeatureStore(feat_dir / "feats" / "test")
    out, _ = transcribe(ens, store.lengths, split_loader(feat_dir, store), search="ctc_greedy")
    dec = pipe.store.get("decode", pipe.keys()["decode"]).path
    from seqpipe.common.vocab import load_target_tokenizer

    tok = load_target_tokenizer(feat_dir)
    assert (dec / "test.hyp").read_text().splitlines() == tok.decode_tgt([h[0][0] for h in out])
    model = load_model(str(SMALL), workspace=str(fsdd_ws), overrides=args, device="cpu")
    prep = pipe.store.get("prepare", pipe.keys()["prepare"]).path
    wavs = [str(w) for w in sorted((prep / "audio" / "test").glob("*.wav"))]
    assert load_model(str(bundle), device="cpu").transcribe(wavs) == model.transcribe(wavs)
    # killed (SIGKILL) after member 0 finished: the rerun trains member 1 only, and ends with
    # the ensemble an uninterrupted run made
    ws2 = tmp_path / "ws2"
    for stage in ("prepare", "features"):
        shutil.copytree(fsdd_ws / "cache" / stage, ws2 / "cache" / stage)
    one_at_a_time = [*args, "train.member_jobs=1"]  # (not part of the key)
    killer = [sys.executable, str(REPO / "tests" / "kill_at.py"), "first-member"]
    killed = subprocess.run(
        [*killer, "run", str(SMALL), *one_at_a_time, "--to", "train"],
        cwd=ws2,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9 and "[member 1]" not in killed.stderr, killed.stderr
    part = ws2 / "cache" / "train" / f"{train.name}.partial"
    assert (part / "member0" / "train.json").is_file()
    assert not (part / "member1" / "train.json").exists()
    proc = run_cli("run", str(SMALL), *one_at_a_time, "--to", "train", cwd=ws2, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "[member 1]" in proc.stderr and "[member 0]" not in proc.stderr, proc.stderr
    redone = ws2 / "cache" / "train" / train.name
    for name in ("model_best.pt", "model_last.pt"):
        assert (redone / name).read_bytes() == (train / name).read_bytes(), name
    # the attention archs train one model from the same recipe, and say so
    att = [*args, "model.arch=ctc_attention"]
    proc = run_cli("run", str(SMALL), *att, "--to", "train", cwd=fsdd_ws, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "ensembles are for model.arch ctc; ctc_attention trains one model" in proc.stderr


def test_speaker_adaptation_decodes_twice_and_scores_both_passes(fsdd_ws: Path):
    """decode.adapt=lin: the first pass is the plain decode, then one transform per speaker
    and a second pass; changing an adapt_* key reruns decoding and scoring only."""
    plain = [*TINY_FSDD, "model.arch=ctc"]
    assert run_cli("run", str(SMALL), *plain, cwd=fsdd_ws, timeout=300).returncode == 0
    p0 = Pipeline(load_recipe(SMALL, plain), fsdd_ws)
    plain_hyps = (p0.store.get("decode", p0.keys()["decode"]).path / "test.hyp").read_text()
    args = [*plain, "decode.adapt=lin", "decode.adapt_epochs=2", "decode.adapt_rounds=1"]
    proc = run_cli("run", str(SMALL), *args, cwd=fsdd_ws, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "adapt    theo: 6 utterances (" in proc.stderr and "round 1/1" in proc.stderr
    assert "ran decode, score" in proc.stderr  # the model is the plain run's
    pipe = Pipeline(load_recipe(SMALL, args), fsdd_ws)
    assert pipe.keys()["train"] == p0.keys()["train"]
    dec = pipe.store.get("decode", pipe.keys()["decode"]).path
    assert (dec / "test.pass1").read_text() == plain_hyps
    assert len((dec / "test.hyp").read_text().splitlines()) == 6
    info = json.loads((dec / "decode.json").read_text())
    assert info["adapt"] == {
        "method": "lin", "epochs": 2, "lr": 0.003, "rounds": 1, "targets": "agreed", "prior": 1.0,
        "confidence_penalty": 0.3,
    }  # fmt: skip
    split = info["splits"]["test"]
    assert split["speakers"] == 1 and split["seconds"] > split["first_pass_seconds"] > 0
    assert 0 < split["adapted_on"]["theo"][0] <= 6  # one model: all with a transcript
    test = _scores(fsdd_ws, "asr_small")["splits"]["test"]
    assert set(test["first_pass"]) == {"wer", "cer"}
    assert test["first_pass"]["wer"] == _scores_of(p0)["wer"]["score"]
    assert "first pass WER" in proc.stdout + proc.stderr
    again = run_cli("run", str(SMALL), *args, "decode.adapt_rounds=2", cwd=fsdd_ws, timeout=300)
    assert again.returncode == 0 and "ran decode, score" in again.stderr, again.stderr
    two = Pipeline(load_recipe(SMALL, [*args, "decode.adapt_rounds=2"]), fsdd_ws)
    dec2 = two.store.get("decode", two.keys()["decode"]).path
    rows = [line.split("\t") for line in (dec2 / "test.rounds.tsv").read_text().splitlines()]
    assert len(rows) == 6 and {len(r) for r in rows} == {2}  # round 1 is the one-round run's
    assert [r[0] for r in rows] == (dec / "test.hyp").read_text().splitlines()
    assert [r[1] for r in rows] == (dec2 / "test.hyp").read_text().splitlines()
    rounds = _scores(fsdd_ws, "asr_small")["splits"]["test"]["rounds"]
    assert rounds["wer"] == [test["wer"]["score"], _scores_of(two)["wer"]["score"]]
    board = run_cli("leaderboard", "--format", "csv", cwd=fsdd_ws)
    assert board.returncode == 0 and "+lin x2 prior 1," in board.stdout
    assert "+lin prior 1," in board.stdout
    # adapting needs gradients: not with an int8 model, and not for MT
    bad = run_cli("config", str(SMALL), *args, "decode.quantize=int8", cwd=fsdd_ws)
    assert bad.returncode == 2 and "set decode.quantize: none" in bad.stderr
    mt = run_cli("config", str(REPO / "recipes" / "mt_small.yaml"), "decode.adapt=lin", cwd=fsdd_ws)
    assert (
        mt.returncode == 2
        and "decode.adapt: an asr key; this recipe's task is mt" in mt.stderr.lower()
    )


def _scores_of(pipe: Pipeline) -> dict:
    score = pipe.store.get("score", pipe.keys()["score"]).path
    return json.loads((score / "scores.json").read_text())["splits"]["test"]


def test_members_are_for_asr(tmp_path: Path):
    proc = run_cli(
        "config", str(REPO / "recipes" / "mt_small.yaml"), "train.members=2", cwd=tmp_path
    )
    assert proc.returncode == 2
    assert "train.members: an asr key; this recipe's task is mt" in proc.stderr.lower()


def test_char_tokenizer_and_encoder_lengths():
    import torch

    from seqpipe.asr.config import ASRModelConfig as ModelConfig
    from seqpipe.common.vocab import CharTokenizer
    from seqpipe.models.asr import build_asr_model, model_spec

    tok = CharTokenizer.build(["NO YES", "yes  no"])
    assert tok.tokens[:4] == ["<pad>", "<unk>", "<s>", "</s>"] and "▁" in tok.tokens
    ids = tok.encode_tgt(["YES no", "NOx"])
    assert tok.decode_tgt(ids) == ["YES no", "NO⁇"]
    for sub, layers in (("conv2d", 1), ("conv2d8", 1), ("pyramid", 3), ("none", 1)):
        cfg = ModelConfig(
            arch="ctc",
            subsampling=sub,
            enc_layers=layers,
            hidden_size=16,
            emb_size=16,
            conv_channels=4,
        ).model_dump()
        model = build_asr_model(model_spec(cfg, 20, tok.tgt_vocab_size)).eval()
        lengths = torch.tensor([7, 8, 31, 100])
        enc = model.encode(torch.randn(4, 100, 20), lengths)
        assert enc.lengths.tolist() == model.encoder_lengths(lengths.numpy()).tolist(), sub
        assert enc.outputs.size(1) == int(enc.lengths.max())


def test_prepare_keeps_extracted_archives_out_of_the_repo(tmp_path: Path):
    proc = run_cli("run", str(YESNO), "--to", "prepare", "data.valid_fraction=0.1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    extracted = list((tmp_path / "cache" / "extract").iterdir())
    assert len(extracted) == 1 and (extracted[0] / "waves_yesno").is_dir()
    prep = (tmp_path / "exp" / "asr_yesno" / "prepare").resolve()
    assert len((prep / "valid.tsv").read_text().splitlines()) == 1 + 3
    path = Path((prep / "test.tsv").read_text().splitlines()[1].split("\t")[1])
    assert path.is_absolute() and path.is_relative_to(tmp_path / "cache" / "extract")
    assert not (REPO / "waves_yesno").exists()


def test_a_member_that_failed_to_train_is_named():
    from seqpipe.asr.training import lagging_members

    assert lagging_members([86.82, 1.53]) == [0]  # train.seed=7 without warmup
    assert lagging_members([7.67, 8.21]) == [] and lagging_members([None, 3.0]) == []
    assert lagging_members([None, None]) == []


def test_the_librispeech_recipe_runs_end_to_end_on_the_mirror_sample(tmp_path: Path):
    """recipes/asr_librispeech.yaml with tiny overrides on the mirror's LibriSpeech-layout
    sample (4 utterances pooled into train/valid/test) instead of OpenSLR's 100 hours."""
    tiny = [
        "data.dataset=librispeech",
        "features.speed_perturb=[1.0]",
        "features.workers=1",
        "tokenize.model_type=char",
        "model.hidden_size=16",
        "model.emb_size=16",
        "model.conv_channels=4",
        "model.enc_layers=1",
        "train.max_steps=2",
        "train.valid_every=2",
        "train.amp=none",
        "train.workers=0",
        "train.average_last=0",
        "train.threads=1",
        "decode.checkpoint=best",
        "decode.splits=[test]",
        "decode.beam_size=2",
        "decode.threads=1",
    ]
    recipe = str(REPO / "recipes" / "asr_librispeech.yaml")
    proc = run_cli("run", recipe, *tiny, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    test = _scores(tmp_path, "asr_librispeech")["splits"]["test"]
    assert test["sentences"] == 1 and test["wer"]["ref_words"] > 0


def test_transcribe_with_speakers_equals_the_decode_stage(fsdd_ws: Path, tmp_path: Path):
    """asr_small's way of decoding (speaker CMN on eval splits, a 2-member ensemble adapted to
    each speaker in two passes with the token prior): `seqpipe transcribe` given the same files
    and speakers (a list file's speaker column, --speaker, or utt2spk), from the experiment or
    from its exported file, writes what the decode stage wrote; without speakers it still
    transcribes with the recipe's defaults (search auto, one pass)."""
    from seqpipe.data.asr_datasets import read_manifest

    args = [
        *TINY_FSDD,
        "model.arch=ctc",
        "train.members=2",
        "features.speaker_cmn=eval",
        "decode.adapt=lin",
        "decode.adapt_epochs=2",
        "decode.adapt_rounds=2",
        "decode.adapt_prior=1.0",
        "data.utterances={train: 150, valid: 6, test: 12}",
        "train.max_steps=150",  # a model that says more than one thing
        "train.valid_every=150",
        "model.hidden_size=48",
        "name=spk",
    ]
    proc = run_cli("run", str(SMALL), *args, cwd=fsdd_ws, timeout=600)
    assert proc.returncode == 0, proc.stderr
    dec = fsdd_ws / "exp" / "spk" / "decode"
    ids = (dec / "test.ids").read_text().splitlines()
    hyp = (dec / "test.hyp").read_text().splitlines()
    assert len(set(hyp)) > 3, hyp
    utts = {u.utt_id: u for u in read_manifest(fsdd_ws / "exp" / "spk" / "prepare" / "test.tsv")}
    listed = tmp_path / "test.lst"
    listed.write_text("".join(f"{utts[i].path}\t{utts[i].speaker}\n" for i in ids))
    got = run_cli("transcribe", "exp/spk", str(listed), cwd=fsdd_ws)
    assert got.returncode == 0, got.stderr
    assert got.stdout.splitlines() == hyp
    paths = tmp_path / "paths.lst"
    paths.write_text("".join(f"{utts[i].path}\n" for i in ids))
    utt2spk = tmp_path / "utt2spk"
    utt2spk.write_text("".join(f"{Path(utts[i].path).stem} {utts[i].speaker}\n" for i in ids))
    bundle = tmp_path / "spk.spt"
    assert run_cli("export", "exp/spk", "-o", str(bundle), cwd=fsdd_ws).returncode == 0
    for model, extra in (
        ("exp/spk", ["--speaker", "theo"]),
        ("exp/spk", ["--utt2spk", str(utt2spk)]),
        (str(bundle), ["--speaker", "theo"]),  # the training token counts travel in the file
    ):
        again = run_cli("transcribe", model, str(paths), *extra, cwd=fsdd_ws)
        assert again.stdout.splitlines() == hyp, (model, extra, again.stderr)
    plain = run_cli("transcribe", "exp/spk", str(paths), cwd=fsdd_ws)
    assert plain.returncode == 0 and len(plain.stdout.splitlines()) == len(ids), plain.stderr
    off = run_cli("transcribe", "exp/spk", str(listed), "--adapt", "none", cwd=fsdd_ws)
    assert off.stdout.splitlines() == (dec / "test.pass1").read_text().splitlines()


def test_synthetic_voices_need_their_utterances(tmp_path: Path):
    small = str(REPO / "recipes" / "asr_small.yaml")
    alone = run_cli(
        "config", small, "data.synthetic_voices=3", "data.utterances.synthetic=0", cwd=tmp_path
    )
    assert alone.returncode == 2
    assert "synthetic_voices and utterances.synthetic: set both (> 0) or neither" in alone.stderr
    other = run_cli(
        "config", str(YESNO), "data.synthetic_voices=3", "data.utterances.synthetic=5", cwd=tmp_path
    )
    assert other.returncode == 2 and "only for dataset fsdd_connected" in other.stderr
    typo = run_cli("config", small, "data.utterances.tets=5", cwd=tmp_path)
    assert typo.returncode == 2 and "unknown split(s) ['tets']" in typo.stderr


def test_the_asr_recipe_schema_does_not_import_torch():
    """Loading a recipe (seqpipe config, cache keys) stays torch-free, synthesis included."""
    code = "import sys, seqpipe.asr.config; assert 'torch' not in sys.modules, 'torch imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
