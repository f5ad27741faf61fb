"""WER/CER with the text normalisation recorded, per-utterance errors and the most frequent
confusions (icefall-style error reports).

WER = (S + D + I) / N over words, CER the same over characters (spaces count as characters,
as in ``jiwer.cer``), both computed with jiwer on the normalised texts and given as
fractions (0.05 = 5 %).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jiwer
import numpy as np

__all__ = ["NORMALIZATIONS", "normalize", "score_asr", "write_error_report"]

NORMALIZATIONS = ("lower", "upper", "strip_punct", "collapse_space")
DEFAULT_NORMALIZATION = "lower,strip_punct,collapse_space"
TOP_CONFUSIONS = 20


def _strip_punct(text: str) -> str:
    """Remove Unicode punctuation, except apostrophes inside words ("don't" stays)."""
    out = []
    for i, ch in enumerate(text):
        if unicodedata.category(ch).startswith("P"):
            inner = 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()
            if ch in "'’" and inner:
                out.append(ch)
            else:
                out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


def _parse_steps(normalization: str) -> list[str]:
    steps = [s.strip() for s in normalization.split(",") if s.strip() and s.strip() != "none"]
    unknown = [s for s in steps if s not in NORMALIZATIONS]
    if unknown:
        raise ValueError(
            f"unknown normalization step(s) {unknown}; known: {', '.join(NORMALIZATIONS)}, none"
        )
    return steps


def normalize(text: str, normalization: str = DEFAULT_NORMALIZATION) -> str:
    """Apply comma-separated steps in order: ``lower``, ``upper``, ``strip_punct``
    (punctuation -> space, in-word apostrophes kept), ``collapse_space`` (one space between
    words, none at the ends); ``none`` or ``""`` for no change. Leading/trailing whitespace
    is always stripped."""
    for step in _parse_steps(normalization):
        if step == "lower":
            text = text.lower()
        elif step == "upper":
            text = text.upper()
        elif step == "strip_punct":
            text = _strip_punct(text)
        elif step == "collapse_space":
            text = re.sub(r"\s+", " ", text)
    return text.strip()


def score_asr(
    refs: Sequence[str],
    hyps: Sequence[str],
    utt_ids: Sequence[str] | None = None,
    normalization: str = DEFAULT_NORMALIZATION,
) -> dict:
    """Score ASR hypotheses against references.

    :param refs: reference transcripts
    :param hyps: hypotheses, same order
    :param utt_ids: utterance ids (default ``"0", "1", ...``)
    :param normalization: see :func:`normalize`; stored in the result
    :return: dict with ``wer``, ``cer`` (fractions), ``num_utts``, ``num_ref_words``,
        ``num_ref_chars``, ``word_counts`` / ``char_counts`` (hits, substitutions,
        insertions, deletions, errors), ``normalization``, ``utterances`` (one row per
        utterance: id, ref, hyp (normalised), S, I, D, errors, ref_words, alignment) and
        ``confusions`` (the 20 most frequent substitutions ``[ref, hyp, count]``,
        insertions and deletions ``[word, count]``)
    """
    if len(refs) != len(hyps):
        raise ValueError(f"score_asr: {len(refs)} references but {len(hyps)} hypotheses")
    if utt_ids is None:
        utt_ids = [str(i) for i in range(len(refs))]
    if len(utt_ids) != len(refs):
        raise ValueError(f"score_asr: {len(utt_ids)} utterance ids for {len(refs)} references")
    _parse_steps(normalization)
    norm_refs = [normalize(r, normalization) for r in refs]
    norm_hyps = [normalize(h, normalization) for h in hyps]

    rows: list[dict] = []
    subs: Counter = Counter()
    ins: Counter = Counter()
    dels: Counter = Counter()
    wc = dict(hits=0, substitutions=0, insertions=0, deletions=0)
    cc = dict(hits=0, substitutions=0, insertions=0, deletions=0)
    if refs:
        words = jiwer.process_words(norm_refs, norm_hyps)
        chars = jiwer.process_characters(norm_refs, norm_hyps)
        for key in wc:
            wc[key] = int(getattr(words, key))
            cc[key] = int(getattr(chars, key))
        for i, chunks in enumerate(words.alignments):
            r_words, h_words = words.references[i], words.hypotheses[i]
            n, pieces = _align_row(chunks, r_words, h_words, subs, ins, dels)
            rows.append(
                dict(
                    id=str(utt_ids[i]),
                    ref=norm_refs[i],
                    hyp=norm_hyps[i],
                    S=n["S"],
                    I=n["I"],
                    D=n["D"],
                    errors=n["S"] + n["I"] + n["D"],
                    ref_words=len(r_words),
                    alignment=" ".join(pieces),
                )
            )
    wc["errors"] = wc["substitutions"] + wc["insertions"] + wc["deletions"]
    cc["errors"] = cc["substitutions"] + cc["insertions"] + cc["deletions"]
    n_words = wc["hits"] + wc["substitutions"] + wc["deletions"]
    n_chars = cc["hits"] + cc["substitutions"] + cc["deletions"]
    return {
        "wer": wc["errors"] / n_words if n_words else float(wc["errors"] > 0),
        "cer": cc["errors"] / n_chars if n_chars else float(cc["errors"] > 0),
        "num_utts": len(refs),
        "num_ref_words": n_words,
        "num_ref_chars": n_chars,
        "word_counts": wc,
        "char_counts": cc,
        "normalization": normalization,
        "utterances": rows,
        "confusions": {
            "substitutions": [[a, b, n] for (a, b), n in _top(subs)],
            "insertions": [[w, n] for w, n in _top(ins)],
            "deletions": [[w, n] for w, n in _top(dels)],
        },
    }


def utterance_errors(
    refs: Sequence[str], hyps: Sequence[str], normalization: str = DEFAULT_NORMALIZATION
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per utterance, as :func:`score_asr` counts them: ``{"wer": (word errors, reference
    words), "cer": (character errors, reference characters)}``, int arrays ``[utterances]``."""
    norm_refs = [normalize(r, normalization) for r in refs]
    norm_hyps = [normalize(h, normalization) for h in hyps]
    out = {}
    for key, process in (("wer", jiwer.process_words), ("cer", jiwer.process_characters)):
        errors, lengths = np.zeros(len(refs), np.int64), np.zeros(len(refs), np.int64)
        if refs:
            result = process(norm_refs, norm_hyps)
            for i, chunks in enumerate(result.alignments):
                for c in chunks:
                    span = c.ref_end_idx - c.ref_start_idx
                    if c.type == "insert":
                        errors[i] += c.hyp_end_idx - c.hyp_start_idx
                    elif c.type != "equal":
                        errors[i] += span
                    lengths[i] += span if c.type != "insert" else 0
        out[key] = (errors, lengths)
    return out


def _align_row(
    chunks: Any, r_words: list[str], h_words: list[str], subs: Counter, ins: Counter, dels: Counter
) -> tuple[dict[str, int], list[str]]:
    """One utterance's jiwer alignment: its S/I/D counts and ``(ref->hyp)`` pieces; the
    confusion counters are updated."""
    n = {"S": 0, "I": 0, "D": 0}
    pieces: list[str] = []
    for c in chunks:
        r_seg = r_words[c.ref_start_idx : c.ref_end_idx]
        h_seg = h_words[c.hyp_start_idx : c.hyp_end_idx]
        if c.type == "equal":
            pieces.extend(r_seg)
        elif c.type == "substitute":
            n["S"] += len(r_seg)
            for a, b in zip(r_seg, h_seg, strict=True):
                subs[(a, b)] += 1
                pieces.append(f"({a}->{b})")
        elif c.type == "delete":
            n["D"] += len(r_seg)
            for a in r_seg:
                dels[a] += 1
                pieces.append(f"({a}->*)")
        elif c.type == "insert":
            n["I"] += len(h_seg)
            for b in h_seg:
                ins[b] += 1
                pieces.append(f"(*->{b})")
    return n, pieces


def _top(counter: Counter) -> list:
    """The most frequent entries, ties in alphabetical order (deterministic)."""
    return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_CONFUSIONS]


def write_error_report(result: dict, path: str | Path) -> None:
    """Write a readable report: summary, per-utterance alignments (``(ref->hyp)``,
    ``(ref->*)`` deletion, ``(*->hyp)`` insertion), then the most frequent confusions."""
    wc, cc = result["word_counts"], result["char_counts"]
    lines = [
        f"%WER {100 * result['wer']:.2f} [ {wc['errors']} / {result['num_ref_words']}, "
        f"{wc['insertions']} ins, {wc['deletions']} del, {wc['substitutions']} sub ]",
        f"%CER {100 * result['cer']:.2f} [ {cc['errors']} / {result['num_ref_chars']}, "
        f"{cc['insertions']} ins, {cc['deletions']} del, {cc['substitutions']} sub ]",
        f"utterances: {result['num_utts']}   normalization: {result['normalization']}",
        "",
        "PER-UTTERANCE DETAILS: id  errors (S I D) / ref words",
    ]
    for row in result["utterances"]:
        lines.append(
            f"{row['id']}\t{row['errors']} ({row['S']} {row['I']} {row['D']}) / {row['ref_words']}"
        )
        lines.append(f"  ref: {row['ref']}")
        lines.append(f"  hyp: {row['hyp']}")
        if row["errors"]:
            lines.append(f"  ali: {row['alignment']}")
    conf = result["confusions"]
    lines += ["", "SUBSTITUTIONS: count ref -> hyp"]
    lines += [f"{n}\t{a} -> {b}" for a, b, n in conf["substitutions"]]
    lines += ["", "DELETIONS: count ref"]
    lines += [f"{n}\t{w}" for w, n in conf["deletions"]]
    lines += ["", "INSERTIONS: count hyp"]
    lines += [f"{n}\t{w}" for w, n in conf["insertions"]]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
