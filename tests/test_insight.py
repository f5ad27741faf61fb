"""Looking inside and comparing runs: significance (compare, leaderboard --baseline)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from seqpipe.tools.compare import RunOutput, compare

from .conftest import MT_FLOOR, REPO, run_cli

RECIPE = str(REPO / "recipes" / "mt_small.yaml")


@pytest.fixture(scope="module")
def two_runs(mt_floor_ws: Path) -> Path:
    """One model, decoded by beam search (exp/beam) and greedily (exp/greedy)."""
    ws = mt_floor_ws
    run_cli("run", RECIPE, *MT_FLOOR, "decode.search=greedy", "name=greedy", cwd=ws, check=True)
    return ws


def _sacrebleu_p_values(ws: Path) -> list[float]:
    """p-values of sacrebleu's own command line (--paired-bs) on the runs' files."""
    prep, beam, greedy = (ws / "exp" / n for n in ("beam/prepare", "beam/decode", "greedy/decode"))
    cmd = [sys.executable, "-m", "sacrebleu", str(prep / "test.tgt"), "-m", "bleu", "chrf"]
    cmd += ["-i", str(beam / "test.hyp"), str(greedy / "test.hyp"), "--paired-bs", "-f", "text"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [float(p) for p in re.findall(r"\(p = ([0-9.]+)\)", out)]


def test_compare_gives_sacrebleus_p_values_and_p_1_against_itself(two_runs: Path):
    got = run_cli("compare", "exp/beam", "exp/greedy", "--format", "json", cwd=two_runs)
    rows = json.loads(got.stdout)
    other = {r["metric"]: r for r in rows if r["run"] == "exp/greedy"}
    base = {r["metric"]: r for r in rows if r["run"] == "exp/beam"}
    ours = [round(other[m]["p_bootstrap"], 4) for m in ("bleu", "chrf")]
    assert ours == _sacrebleu_p_values(two_runs)  # (sacrebleu prints 4 decimals)
    scores = json.loads((two_runs / "exp" / "greedy" / "scores.json").read_text())["splits"]
    for m in ("bleu", "chrf"):
        assert other[m]["score"] == scores["test"][m]["score"]
        assert abs(other[m]["delta"] - (other[m]["score"] - base[m]["score"])) <= 0.011
        lo, hi = other[m]["ci"]
        assert lo <= other[m]["delta"] <= hi and lo < hi
        assert 0 < other[m]["p_randomization"] <= 1
    same = json.loads(
        run_cli("compare", "exp/beam", "exp/beam", "--format", "json", cwd=two_runs).stdout
    )
    for r in same[1::2]:
        assert r["delta"] == 0 and r["ci"] == [0, 0] and r["p_bootstrap"] == 1.0
        assert r["p_randomization"] == 1.0
    table = run_cli("compare", "exp/beam", "exp/greedy", cwd=two_runs, check=True).stdout
    assert "95% CI of Δ" in table and f"{other['bleu']['p_bootstrap']:.4f}" in table


def test_compare_refuses_other_references(two_runs: Path):
    short = ["data.max_eval_lines=100", "train.max_steps=20", "decode.search=greedy"]  # cheap
    run_cli("run", RECIPE, *MT_FLOOR, *short, "name=short", cwd=two_runs, check=True)
    proc = run_cli("compare", "exp/beam", "exp/short", cwd=two_runs)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "exp/short: its 'test' references differ from exp/beam's" in proc.stderr
    proc = run_cli("compare", "exp/beam", "exp/beam", "--test-set", "valid", cwd=two_runs)
    assert proc.returncode == 2 and "no test set 'valid'" in proc.stderr


def test_leaderboard_baseline_column(two_runs: Path):
    out = run_cli(
        "leaderboard", "--baseline", "exp/beam", "--format", "json", cwd=two_runs, check=True
    ).stdout
    rows = {r["run"]: r for r in json.loads(out)}
    cmp = json.loads(
        run_cli("compare", "exp/beam", "exp/greedy", "--format", "json", cwd=two_runs).stdout
    )
    assert rows["beam"]["p"] == 1.0
    assert rows["greedy"]["p"] == next(
        r["p_bootstrap"] for r in cmp if r["run"] == "exp/greedy" and r["metric"] == "bleu"
    )
    assert rows["short"]["p"] is None  # other references: no p-value


def test_asr_paired_bootstrap_over_utterances():
    from seqpipe.asr.scoring import score_asr, utterance_errors

    refs = [f"yes no yes {'no ' * (i % 4)}yes" for i in range(60)]
    good = list(refs)
    good[3] = "yes yes"
    bad = [r.replace("no", "know", 1) if i % 3 == 0 else r for i, r in enumerate(refs)]
    counts = utterance_errors(refs, bad)
    full = score_asr(refs, bad)
    assert counts["wer"][0].sum() == full["word_counts"]["errors"]
    assert counts["wer"][1].sum() == full["num_ref_words"]
    assert counts["cer"][0].sum() == full["char_counts"]["errors"]
    cfg = {"asr_normalization": "lower,strip_punct,collapse_space"}
    runs = [RunOutput(n, "asr", h, refs, cfg) for n, h in (("good", good), ("bad", bad))]
    rows = {(r["run"], r["metric"]): r for r in compare(runs)}
    wer = rows[("bad", "wer")]
    assert wer["score"] == round(100 * full["wer"], 2) and wer["delta"] > 0
    assert wer["ci"][0] > 0 and wer["p_bootstrap"] < 0.01  # 20 of 60 utterances worse
    same = compare([runs[1], runs[1]])
    assert all(r["p_bootstrap"] == 1.0 and r["delta"] == 0 for r in same if "delta" in r)


def test_word_alignment_from_piece_attention():
    import numpy as np

    from seqpipe.mt.alignment import pharaoh, word_index

    src = ["▁", "A", "▁gre", "en", "▁car", "."]  # "A green car." (3 words) + EOS column
    out = ["▁Ein", "▁gr", "ün", "es", "▁Auto", "."]  # "Ein grünes Auto." + a trailing piece
    assert word_index(src) == [None, 0, 1, 1, 2, 2]
    assert word_index(out + ["▁"]) == [0, 1, 1, 1, 2, 2, None]
    weights = np.zeros((len(out), len(src) + 1))
    for j, i in enumerate([1, 2, 3, 2, 4, 6]):  # "." looks at EOS: unaligned
        weights[j, i] = 1.0
    assert pharaoh(src, out, weights) == "0-0 1-1 2-2"
