"""Using what was trained: decode/translate/transcribe, the Python API, export, leaderboard,
sweep. One tiny MT model is trained once for the module and shared by the tests."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from .conftest import REPO, TINY_MT, run_cli

RECIPE = str(REPO / "recipes" / "mt_small.yaml")
TINY = [
    *TINY_MT,
    "train.valid_every=50",
    "train.log_every=50",
    "train.max_steps=100",
    "train.lr=0.01",  # enough for varied, non-empty (if poor) translations
]


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with the tiny recipe run end to end (exp/mt_small)."""
    ws = tmp_path_factory.mktemp("use")
    run_cli("run", RECIPE, *TINY, cwd=ws, check=True)
    return ws


@pytest.fixture(scope="module")
def cli_nbest(ws: Path) -> list[list[str]]:
    """`seqpipe translate RECIPE --set ... - --nbest 2 --beam 3` of the test set read from stdin
    (the model found through the recipe's keys), split into columns."""
    sets = [a for o in TINY for a in ("--set", o)]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "seqpipe",
            "translate",
            RECIPE,
            *sets,
            "-",
            "--nbest",
            "2",
            "--beam",
            "3",
        ],
        cwd=ws,
        input=(_exp(ws) / "prepare" / "test.src").read_text(encoding="utf-8"),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return [line.split("\t") for line in proc.stdout.splitlines()]


def _exp(ws: Path) -> Path:
    return ws / "exp" / "mt_small"


def _test_src(ws: Path) -> list[str]:
    return (_exp(ws) / "prepare" / "test.src").read_text(encoding="utf-8").splitlines()


def _stage_hyp(ws: Path) -> list[str]:
    return (_exp(ws) / "decode" / "test.hyp").read_text(encoding="utf-8").splitlines()


def test_importing_seqpipe_does_not_import_torch():
    code = (
        "import sys, seqpipe; assert 'torch' not in sys.modules; "
        "f = seqpipe.load_model; assert 'torch' not in sys.modules; print(f.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "load_model"


def test_decode_file_equals_the_decode_stage(ws: Path):
    src = _exp(ws) / "prepare" / "test.src"
    out = ws / "out" / "test.hyp"
    proc = run_cli("decode", "exp/mt_small", str(src), "-o", str(out), cwd=ws, check=True)
    assert "40 sentences" in proc.stderr
    assert out.read_text(encoding="utf-8").splitlines() == _stage_hyp(ws)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp file left


def test_an_experiment_folder_takes_decode_overrides(ws: Path):
    """``--set decode.*`` on an experiment folder changes how it decodes (not ignored): the same
    output as the option it stands for."""
    src = str(_exp(ws) / "prepare" / "test.src")
    by_set = run_cli(
        "decode", "exp/mt_small", src, "--set", "decode.beam_size=1", cwd=ws, check=True
    )
    by_option = run_cli("decode", "exp/mt_small", src, "--beam", "1", cwd=ws, check=True)
    assert by_set.stdout == by_option.stdout
    assert by_set.stdout.splitlines() != _stage_hyp(ws)  # beam 1 is not the run's beam 3


def test_order_and_line_count_are_kept(ws: Path):
    src = _test_src(ws)
    hyp = _stage_hyp(ws)
    long_line = " ".join(src[:30])  # several hundred tokens: a batch of its own
    lines = [src[0], "", src[1], "   \t ", src[2], long_line, "", *src[3:20], "  " + src[20] + "  "]
    inp = ws / "mixed.txt"
    inp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # two input files are read one after the other; small batches and chunks
    proc = run_cli(
        "decode",
        "exp/mt_small",
        str(inp),
        str(_exp(ws) / "prepare" / "test.src"),
        "--batch-tokens",
        "40",
        "--chunk-lines",
        "4",
        cwd=ws,
        check=True,
    )
    out = proc.stdout.split("\n")
    assert out[-1] == "" and len(out) - 1 == len(lines) + len(hyp)
    out, rest = out[: len(lines)], out[len(lines) : -1]
    assert out[0] == hyp[0] and out[2] == hyp[1] and out[4] == hyp[2]
    assert out[1] == out[3] == out[6] == "" and out[5]
    assert out[7 : 7 + 17] == hyp[3:20]
    assert out[-1] == hyp[20]  # normalised exactly as the prepare stage does
    assert rest == hyp


def test_nbest_output(ws: Path, cli_nbest: list[list[str]]):
    rows = cli_nbest
    assert len(rows) == 80 and all(len(r) == 4 for r in rows)
    assert [(int(r[0]), int(r[1])) for r in rows] == [(i, k) for i in range(1, 41) for k in (1, 2)]
    # the recipe's model from stdin, best of the n-best == the decode stage's output (beam 3)
    assert [r[3] for r in rows if r[1] == "1"] == _stage_hyp(ws)
    for a, b in zip(rows[::2], rows[1::2], strict=True):
        assert float(a[2]) >= float(b[2])


def test_api_equals_cli(ws: Path, cli_nbest: list[list[str]]):
    from seqpipe import load_model

    src = _test_src(ws)
    m = load_model(_exp(ws))
    assert m.translate(src) == _stage_hyp(ws)
    assert m.translate(src[0]) == _stage_hyp(ws)[0]
    assert m.translate(["", src[1]]) == ["", _stage_hyp(ws)[1]]
    # beam 1 is routed to greedy search (test_search checks beam_search(beam_size=1) == greedy)
    assert m.decode_settings(beam=1).greedy and not m.decode_settings(beam=2).greedy
    nb = m.translate(src[:5], beam=3, nbest=2)
    mine = [
        [str(i), str(k), f"{h.score:.4f}", h.text]
        for i, hyps in enumerate(nb, 1)
        for k, h in enumerate(hyps, 1)
    ]
    assert mine == cli_nbest[:10]
    with pytest.raises(ValueError, match="speech recognition|translation"):
        m.transcribe(["x.wav"])


def test_export_then_decode_without_the_cache(ws: Path, tmp_path: Path):
    out = tmp_path / "model.spt"
    proc = run_cli("export", "exp/mt_small", "-o", str(out), cwd=ws, check=True)
    assert "model.spt" in proc.stderr
    bundle = torch.load(out, weights_only=True)  # plain containers and tensors only
    assert bundle["format"] == "seqpipe-model" and bundle["task"] == "mt"
    assert bundle["tokenizer"]["files"]["spm.model"].dtype == torch.uint8
    assert "mt_small" in bundle["recipe"] and bundle["versions"]["torch"]
    # decode from the file in a folder with no cache at all
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    src = _exp(ws) / "prepare" / "test.src"
    got = run_cli("decode", str(out), str(src), cwd=elsewhere, check=True).stdout.splitlines()
    assert got == _stage_hyp(ws)
    from seqpipe import load_model

    assert load_model(out).translate(_test_src(ws)[:7]) == _stage_hyp(ws)[:7]
    with pytest.raises(ValueError, match="export again with --checkpoint last"):
        load_model(out, checkpoint="last")


def _cli_in_process(args: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch):
    """Invoke the CLI in this process (fast: no interpreter or torch start-up)."""
    import logging

    from click.testing import CliRunner

    from seqpipe.cli import main

    monkeypatch.chdir(cwd)
    logger = logging.getLogger("seqpipe")
    before = list(logger.handlers)
    try:
        return CliRunner().invoke(main, args)
    finally:
        for h in logger.handlers[:]:
            if h not in before:
                logger.removeHandler(h)


def test_clear_errors(ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from seqpipe.cli import _text_lines
    from seqpipe.errors import InputError

    cases = [
        (["decode", RECIPE, "x.txt"], "the train stage has not finished"),
        (["decode", "exp/mt_small", "missing.txt"], "missing.txt: file not found"),
        (["decode", "exp/nothing", "x.txt"], "no such experiment folder"),
        (["decode", str(_exp(ws) / "prepare" / "test.src"), "x"], "not a recipe"),
        (["transcribe", "exp/mt_small", "x.wav"], "use `seqpipe translate`"),
        (["decode", "exp/mt_small", "x", "--search", "ctc_greedy"], "decodes with beam, greedy"),
        (["decode", "exp/mt_small", "x", "--nbest", "5", "--beam", "3"], "larger than the beam"),
        (["export", "exp/nothing", "-o", "m.spt"], "no such experiment folder"),
        (["leaderboard", "nowhere"], "nowhere: no such workspace"),
        (["decode", "exp/mt_small", "x", "--set", "train.lr=1"], "decode.* overrides only"),
        (["decode", "exp/mt_small", "x", "--set", "decode.beam_sise=2"], "did you mean beam_size"),
    ]
    for args, msg in cases:
        res = _cli_in_process(args, ws, monkeypatch)
        assert res.exit_code == 2, (args, res.output)
        err = res.stderr
        assert msg in err and err.count("\n") == 1 and "Traceback" not in err, (args, err)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"good line\n\xff\xfe bad\n")
    with pytest.raises(InputError, match="bad.txt:2: invalid UTF-8"):
        list(_text_lines((str(bad),)))


def test_interactive_prompt(ws: Path):
    src = _test_src(ws)
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "seqpipe", "translate", "exp/mt_small"],
        cwd=ws,
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(slave)
    os.write(master, (src[0] + "\n" + src[1] + "\n").encode())
    time.sleep(0.2)
    os.write(master, b"\x04")  # Ctrl-D: end of input
    out, err = proc.communicate(timeout=120)
    os.close(master)
    assert proc.returncode == 0, err
    assert out.splitlines() == _stage_hyp(ws)[:2]
    assert "Ctrl-D" in err


def test_distributed_decode_merges_in_input_order(ws: Path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed")
    src = _test_src(ws)
    inp = ws / "dist.txt"
    lines = [*src[:25], "", *src[25:]]
    inp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = ws / "dist.hyp"
    proc = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node=2",
            "-m",
            "seqpipe",
            "decode",
            "exp/mt_small",
            str(inp),
            "-o",
            str(out),
            "--chunk-lines",
            "6",
        ],
        cwd=ws,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    hyp = _stage_hyp(ws)
    assert out.read_text(encoding="utf-8").splitlines() == [*hyp[:25], "", *hyp[25:]]


def test_sweep_and_leaderboard(ws: Path):
    dry = run_cli(
        "sweep", RECIPE, *TINY, "--grid", "decode.beam_size=1,2", "--dry-run", cwd=ws, check=True
    )
    names = [line.split("\t")[0] for line in dry.stdout.splitlines()]
    assert len(names) == 2 and all(n.startswith("mt_small-") for n in names)
    proc = run_cli("sweep", RECIPE, *TINY, "--grid", "decode.beam_size=1,2", cwd=ws, check=True)
    assert "train    running" not in proc.stderr  # training is shared with exp/mt_small
    assert proc.stderr.count("decode   running") == 2
    for n in names:
        assert n in proc.stdout and (ws / "exp" / n / "decode").is_dir()
    logs = [(ws / "exp" / n / "log.txt").read_text() for n in names]
    assert [log.count("decode   running") for log in logs] == [1, 1]  # each its own log
    assert "decode.beam_size=1" in proc.stdout

    rows = json.loads(run_cli("leaderboard", "--format", "json", cwd=ws, check=True).stdout)
    assert sorted(r["run"] for r in rows) == sorted(["mt_small", *names])
    assert sorted(r["beam"] for r in rows) == [1, 2, 3]
    r0 = rows[0]
    assert r0["task"] == "mt" and r0["test_set"] == "test" and r0["dataset"] == "multi30k en-de"
    assert r0["bleu_signature"].startswith("nrefs:1|") and r0["chrf_signature"]
    assert r0["params"] > 0 and r0["steps"] == 100 and r0["model"].startswith("biGRU 32x1")
    assert r0["checkpoint"] == "best" and r0["date"] and r0["decode_speed"] > 0
    assert len({r["train_key"] for r in rows}) == 1  # one training shared by all three
    bleu = [r["bleu"] for r in rows]
    assert bleu == sorted(bleu, reverse=True)
    chrf = [
        r["chrf"]
        for r in json.loads(
            run_cli("leaderboard", "--format", "json", "--sort", "chrf", cwd=ws, check=True).stdout
        )
    ]
    assert chrf == sorted(chrf, reverse=True)

    table = run_cli("leaderboard", cwd=ws, check=True).stdout  # not a TTY: no colour
    assert "\x1b[" not in table and "BLEU" in table and "* best" in table
    assert all(n in table for n in names) and "nrefs:1|" in table
    colour = run_cli("leaderboard", "--color", cwd=ws, check=True).stdout
    assert "\x1b[1m" in colour
    md = run_cli("leaderboard", "--format", "markdown", cwd=ws, check=True).stdout
    assert md.startswith("| run |") and "**" in md and md.count("\n| mt_small") == 3
    table_rows = list(
        csv.DictReader(
            io.StringIO(run_cli("leaderboard", "--format", "csv", cwd=ws, check=True).stdout)
        )
    )
    assert len(table_rows) == 3 and {"bleu", "chrf", "beam", "commit"} <= set(table_rows[0])
    assert run_cli("leaderboard", "--task", "asr", cwd=ws, check=True).stdout.startswith(
        "no scored"
    )
    one = json.loads(
        run_cli("leaderboard", "exp/mt_small", "--format", "json", cwd=ws, check=True).stdout
    )
    assert [r["run"] for r in one] == ["mt_small"]
    assert run_cli("leaderboard", "--sort", "nope", cwd=ws).returncode == 2

    # a corrupted score manifest and a corrupted upstream manifest: warned about, skipped
    copy = ws.parent / (ws.name + "-corrupt")
    shutil.copytree(
        ws / "cache", copy / "cache", symlinks=True, ignore=shutil.ignore_patterns("*.pt", "*.npy")
    )
    shutil.copytree(ws / "exp", copy / "exp", symlinks=True)
    score_keys = sorted(p.name for p in (copy / "cache" / "score").iterdir() if p.is_dir())
    (copy / "cache" / "score" / score_keys[0] / "manifest.json").write_text('{"key": ')
    decode_key = json.loads(
        (copy / "cache" / "score" / score_keys[1] / "manifest.json").read_text()
    )["inputs"]["decode"]
    (copy / "cache" / "decode" / decode_key / "manifest.json").write_bytes(b"\xff\x00")
    proc = run_cli("leaderboard", "--format", "json", cwd=copy)
    assert proc.returncode == 0, proc.stderr
    warnings = proc.stderr.strip().splitlines()
    assert len(warnings) == 2 and all(w.startswith("warning: ") for w in warnings)
    assert score_keys[0] in warnings[0] and decode_key in warnings[1]
    rows = json.loads(proc.stdout)
    assert len(rows) == 2
    damaged = [r for r in rows if r["score_key"] == score_keys[1]][0]
    assert damaged["bleu"] is not None and damaged["search"] is None


def test_report(ws: Path):
    import re

    from seqpipe.data.text import normalize
    from seqpipe.tools.report import write_report

    md = write_report(_exp(ws), ws / "report", worst=3)
    text = md.read_text(encoding="utf-8")
    assert text.startswith("# Report: mt_small") and "BLEU by source length" in text
    assert "the 3 worst sentences" in text and text.count("   - reference: ") == 3
    assert (ws / "report" / "curve.png").is_file()
    assert (ws / "report" / "test_length_bleu.png").stat().st_size > 1000
    # attention heatmaps: output pieces x source pieces + </s>, the decode stage's outputs
    from seqpipe.common.vocab import Tokenizer

    tok = Tokenizer((_exp(ws) / "tokenize").resolve())
    src, hyp = _test_src(ws), _stage_hyp(ws)
    maps = sorted((ws / "report").glob("test_attention_*.json"))
    assert len(maps) == 4 and text.count("](test_attention_") == 4
    lines = []
    for m in maps:
        data = json.loads(m.read_text(encoding="utf-8"))
        assert m.with_suffix(".png").stat().st_size > 1000
        line = int(re.search(r"line (\d+)", data.get("title", "")).group(1)) - 1
        lines.append(line)
        pieces = tok.src.encode(normalize(src[line]), out_type=str)
        assert data["columns"] == [*pieces, "</s>"]
        assert tok.tgt.decode_pieces(data["rows"]) == hyp[line]  # the decode stage's output
        w = data["weights"]
        assert len(w) == len(data["rows"]) and all(len(r) == len(data["columns"]) for r in w)
        assert all(abs(sum(r) - 1) < 1e-2 for r in w)  # each row: a distribution
    words = [len(x.split()) for x in src]
    assert lines[0] == words.index(min(words)) and len(set(lines)) == 4


def test_sweep_variants_and_bad_grids(tmp_path: Path):
    grids = ["--grid", "train.lr=1e-4:1e-3", "--grid", "model.cell=gru,lstm"]
    args = [*grids, "--grid", "model.hidden_size=16:64", "--seed", "3", "--dry-run"]
    untied = "model.tied_embeddings=false"  # (tied embeddings need emb_size == hidden_size)
    proc = run_cli("sweep", RECIPE, untied, "--random", "4", *args, cwd=tmp_path, check=True)
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert len(rows) == 4 and len({r[0] for r in rows}) == 4
    for _, label in rows:
        ov = dict(kv.split("=") for kv in label.split())
        assert 1e-4 <= float(ov["train.lr"]) <= 1e-3 and ov["model.cell"] in ("gru", "lstm")
        assert 16 <= int(ov["model.hidden_size"]) <= 64
    again = run_cli("sweep", RECIPE, untied, "--random", "4", *args, cwd=tmp_path, check=True)
    assert again.stdout == proc.stdout  # seeded
    grid = run_cli(
        "sweep",
        RECIPE,
        untied,
        "--grid",
        "model.hidden_size=16,32",
        "--grid",
        "train.lr=1e-3,5e-4",
        "--dry-run",
        cwd=tmp_path,
        check=True,
    )
    assert len(grid.stdout.splitlines()) == 4
    for args, msg in [
        (["--grid", "train.lr=1e-4:1e-3"], "a range needs --random"),
        (["--grid", "train.lerning_rate=1,2"], "lerning_rate"),
        (["--grid", "model.cell=gru,transformer"], "model.cell"),
        (["--grid", "model.hidden_size=16,32"], "model.tied_embeddings: needs"),
        ([], "at least one --grid"),
    ]:
        bad = run_cli("sweep", RECIPE, *args, "--dry-run", cwd=tmp_path)
        assert bad.returncode == 2 and msg in bad.stderr, (args, bad.stderr)


def test_shortlist_stage_cli_export_and_api_agree(ws: Path, tmp_path: Path):
    """decode.shortlist: the decode stage, `seqpipe decode`, an exported file and the API give
    the same output; only decode and score rerun. Restores the workspace's plain run after."""
    sl = ["decode.shortlist=3", "decode.shortlist_frequent=20"]
    try:
        proc = run_cli("run", RECIPE, *TINY, *sl, cwd=ws, check=True)
        assert "ran decode, score in" in proc.stderr  # nothing upstream reran
        info = json.loads((_exp(ws) / "decode" / "decode.json").read_text())
        assert (info["shortlist"], info["shortlist_frequent"]) == (3, 20)
        stage = _stage_hyp(ws)
        src = _exp(ws) / "prepare" / "test.src"
        got = run_cli("decode", "exp/mt_small", str(src), cwd=ws, check=True).stdout
        assert got.splitlines() == stage  # the exp's recipe carries the shortlist settings
        out = tmp_path / "sl.spt"
        run_cli("export", "exp/mt_small", "-o", str(out), cwd=ws, check=True)
        assert torch.load(out, weights_only=True)["shortlist"]["starts"].dtype == torch.int32
        from seqpipe import load_model

        m = load_model(out)
        assert m.translate(_test_src(ws)[:9]) == stage[:9]
        off = m.translate(_test_src(ws), shortlist=0)
        assert len(off) == len(stage)
        with pytest.raises(ValueError, match="shortlist"):
            m.translate(["a"], shortlist=101)
    finally:
        run_cli("run", RECIPE, *TINY, cwd=ws, check=True)  # cached: the plain decode again


def test_int8_decoding_stage_and_cli_agree(ws: Path):
    """decode.quantize=int8 reruns only decode and score, records itself in decode.json, and
    `seqpipe decode` of the experiment (whose recipe carries the setting) gives the same lines.
    Restores the workspace's plain run after."""
    try:
        proc = run_cli("run", RECIPE, *TINY, "decode.quantize=int8", cwd=ws, check=True)
        assert "ran decode, score in" in proc.stderr
        info = json.loads((_exp(ws) / "decode" / "decode.json").read_text())
        assert info["quantize"] == "int8"
        stage = _stage_hyp(ws)
        assert len(stage) == len(_test_src(ws))
        src = _exp(ws) / "prepare" / "test.src"
        got = run_cli("decode", "exp/mt_small", str(src), cwd=ws, check=True).stdout
        assert got.splitlines() == stage
        plain = run_cli("decode", "exp/mt_small", str(src), "--quantize", "none", cwd=ws)
        assert len(plain.stdout.splitlines()) == len(stage)
    finally:
        run_cli("run", RECIPE, *TINY, cwd=ws, check=True)  # cached: the plain decode again


def test_transcribe_equals_the_asr_decode_stage(
    yesno_run: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
):
    ws, run = yesno_run  # asr_yesno as shipped (WER 0.83 %): the outputs differ
    assert run.returncode == 0, run.stderr
    exp = ws / "exp" / "asr_yesno"
    ids = (exp / "decode" / "test.ids").read_text().splitlines()
    manifest = (exp / "prepare" / "test.tsv").read_text().splitlines()
    path_of = {line.split("\t")[0]: line.split("\t")[1] for line in manifest[1:]}
    wavs = tmp_path / "wavs.lst"
    wavs.write_text("\n".join(path_of[u] for u in ids) + "\n")
    hyp = (exp / "decode" / "test.hyp").read_text().splitlines()
    assert len(set(hyp)) > 10 and sum(h.count("YES") + h.count("NO") for h in hyp) > 100
    got = run_cli("transcribe", "exp/asr_yesno", str(wavs), cwd=ws, check=True)
    assert got.stdout.splitlines() == hyp
    (tmp_path / "t.txt").write_text("hello world\n")  # a text file, not a list of audio files
    bad = run_cli("transcribe", str(exp), "t.txt", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert bad.stderr.startswith("error: t.txt:1: 'hello world' is not an audio file"), bad.stderr
    # export, then the API on the file (in this process: no second torch start-up)
    from seqpipe import load_model
    from seqpipe.tools.leaderboard import collect
    from seqpipe.use.api import resolve_model
    from seqpipe.use.export import export_model

    spt = export_model(resolve_model(exp), tmp_path / "asr.spt")
    m = load_model(spt)
    assert m.task == "asr" and m.transcribe([path_of[u] for u in ids[:3]]) == hyp[:3]
    assert m.transcribe(path_of[ids[0]]) == hyp[0]
    with pytest.raises(ValueError, match="use transcribe"):
        m.translate(["hello"])
    rows = collect([ws], warn=pytest.fail)
    assert rows[0]["task"] == "asr" and rows[0]["wer"] is not None and rows[0]["normalization"]
    # the report's CTC posteriorgrams: a row per output token (+ blank), a column per frame
    from seqpipe.tools.report import write_report

    write_report(exp, tmp_path / "report")
    grams = sorted((tmp_path / "report").glob("test_attention_*.json"))
    assert len(grams) == 4
    for g in grams:
        data = json.loads(g.read_text(encoding="utf-8"))
        utt = data["title"].split()[1].rstrip(":")
        tokens = data["rows"][:-1]
        assert (
            data["rows"][-1] == "<blank>"
            and "".join(tokens).replace("▁", " ") == hyp[ids.index(utt)]
        )
        assert len(data["marks"]) == len(tokens) and [r for r, _ in data["marks"]] == list(
            range(len(tokens))
        )
        cols = [c for _, c in data["marks"]]
        assert cols == sorted(cols) and len(data["weights"][0]) == len(data["columns"]) > cols[-1]


def test_alignment_output(ws: Path):
    """--alignment: TEXT<TAB>PAIRS, Pharaoh pairs within the source and output word counts,
    the same in a batch as alone, for every hypothesis of an n-best list."""
    from seqpipe import load_model
    from seqpipe.data.text import normalize

    src = _test_src(ws)[:20] + [""]
    m = load_model(_exp(ws), quantize="none")  # (an earlier test may leave int8 in the recipe)
    batched = m.translate(src, beam=3, nbest=2, alignment=True, shortlist=0)
    linked = shared = same = 0
    for line, hyps in zip(src, batched, strict=True):
        # the same hypothesis gets the same alignment in a batch and alone. This tiny model's
        # attention is nearly flat, so float32 rounding between batch shapes can reorder an
        # n-best list or flip an argmax between two near-equal source positions: test_search
        # checks that the attention itself is the same batched and alone (to 1e-5)
        alone = {
            h.text: h.alignment
            for h in m.translate([line], beam=3, nbest=2, alignment=True, shortlist=0)[0]
        }
        common = [h for h in hyps if h.text in alone]
        same += sum(h.alignment == alone[h.text] for h in common)
        shared += len(common)
        for h in hyps:
            pairs = [tuple(map(int, p.split("-"))) for p in h.alignment.split()]
            assert all(
                0 <= s < len(normalize(line).split()) and 0 <= t < len(h.text.split())
                for s, t in pairs
            )
            assert pairs == sorted(set(pairs))
            linked += len(pairs)
    assert linked > 40 and batched[-1][0].alignment == ""
    assert shared >= 0.9 * 2 * len(src) and same >= 0.95 * shared, (same, shared)
    (ws / "few.txt").write_text("\n".join(src[:5]) + "\n")
    args = ["few.txt", "--alignment", "--quantize", "none", "--shortlist", "0"]
    out = run_cli("translate", "exp/mt_small", *args, cwd=ws, check=True)
    one_best = m.translate(src[:5], alignment=True, shortlist=0)
    assert out.stdout.splitlines() == [f"{h[0].text}\t{h[0].alignment}" for h in one_best]
    bad = run_cli("translate", "exp/mt_small", "few.txt", "--alignment", "--search", "x", cwd=ws)
    assert bad.returncode == 2
