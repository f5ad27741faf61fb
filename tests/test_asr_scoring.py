"""WER/CER, normalisation, per-utterance rows, confusions and the error report."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqpipe.asr.scoring import normalize, score_asr, write_error_report


def test_known_wer_and_cer() -> None:
    result = score_asr(["a b c d"], ["a x c"], ["u1"])
    assert result["wer"] == pytest.approx(0.5)  # 1 sub + 1 del over 4 words
    wc = result["word_counts"]
    counts = (wc["hits"], wc["substitutions"], wc["deletions"], wc["insertions"], wc["errors"])
    assert counts == (2, 1, 1, 0, 2)
    # characters "a b c d" (7) vs "a x c" (5): b->x, then " d" deleted -> 3 errors / 7
    assert result["cer"] == pytest.approx(3 / 7)
    assert result["num_ref_words"] == 4 and result["num_ref_chars"] == 7
    row = result["utterances"][0]
    assert (row["id"], row["S"], row["I"], row["D"], row["errors"]) == ("u1", 1, 0, 1, 2)
    assert row["alignment"] == "a (b->x) c (d->*)"


def test_corpus_level_counts_confusions_and_normalization() -> None:
    refs = ["Hello, World!", "the cat sat", "YES NO YES", ""]
    hyps = ["hello world", "the cat sat on", "yes yes yes", "uh"]
    result = score_asr(refs, hyps, ["a", "b", "c", "d"])
    assert result["normalization"] == "lower,strip_punct,collapse_space"
    # a: 0 errors; b: 1 ins; c: 1 sub; d: 1 ins (empty ref); 8 reference words
    assert result["word_counts"]["errors"] == 3 and result["num_ref_words"] == 8
    assert result["wer"] == pytest.approx(3 / 8)
    assert [r["errors"] for r in result["utterances"]] == [0, 1, 1, 1]
    conf = result["confusions"]
    assert conf["substitutions"] == [["no", "yes", 1]]
    assert conf["insertions"] == [["on", 1], ["uh", 1]] and conf["deletions"] == []
    raw = score_asr(refs[:1], hyps[:1], normalization="none")
    assert raw["wer"] == pytest.approx(1.0) and raw["normalization"] == "none"
    with pytest.raises(ValueError, match="unknown normalization"):
        score_asr(refs, hyps, normalization="lower,stem")
    with pytest.raises(ValueError, match="4 references but 3"):
        score_asr(refs, hyps[:3])


def test_normalize() -> None:
    assert normalize("  Don't  STOP -- now.  ") == "don't stop now"
    assert normalize("a\tb\n c", "collapse_space") == "a b c"
    assert normalize("Mixed Case", "upper") == "MIXED CASE"


def test_top_confusions_capped_at_20() -> None:
    refs = [" ".join(f"w{i}" for i in range(30))]
    hyps = [" ".join(f"v{i}" for i in range(30))]
    result = score_asr(refs, hyps)
    assert len(result["confusions"]["substitutions"]) == 20


def test_error_report(tmp_path: Path) -> None:
    result = score_asr(["a b c d", "yes"], ["a x c", "yes"], ["utt-1", "utt-2"])
    path = tmp_path / "errors.txt"
    write_error_report(result, path)
    text = path.read_text()
    assert text.startswith("%WER 40.00 [ 2 / 5, 0 ins, 1 del, 1 sub ]")
    assert "normalization: lower,strip_punct,collapse_space" in text
    assert "utt-1\t2 (1 0 1) / 4" in text and "ali: a (b->x) c (d->*)" in text
    assert "1\tb -> x" in text and "DELETIONS" in text and "INSERTIONS" in text
