"""score (task: asr): WER and CER (jiwer, via ``seqpipe.asr.scoring``) of each decoded split.

Hypotheses are matched to the prepare manifest's references by utterance id, both normalised
with ``score.asr_normalization``. ``scores.json``::

    {"task": "asr", "splits": {split: {
        "sentences": n,
        "wer": {"score": <percent>, "normalization": ..., "errors": E, "ref_words": N,
                "substitutions": S, "insertions": I, "deletions": D},
        "cer": {"score": <percent>, "normalization": ..., "errors": ..., "ref_chars": ...},
        "first_pass": {"wer": <percent>, "cer": <percent>},   # decode.adapt only
        "rounds": {"wer": [<percent> per round], "cer": [...]},  # decode.adapt_rounds > 1
        "confusions": {"substitutions": [[ref, hyp, n]...], "insertions": [[w, n]...],
                       "deletions": [[w, n]...]}}}}

plus ``{split}.errors.txt``, the per-utterance error report (icefall style).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from seqpipe.asr.scoring import score_asr, write_error_report
from seqpipe.core.stage import StageContext
from seqpipe.data.asr_datasets import read_manifest
from seqpipe.data.text import read_lines
from seqpipe.errors import InputError


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.recipe.score
    prep, dec = ctx.inputs["prepare"].path, ctx.inputs["decode"].path
    metrics = list(cfg.metrics) or ["wer", "cer"]
    out: dict[str, Any] = {"task": "asr", "splits": {}}
    for hyp_file in sorted(dec.glob("*.hyp")):
        split = hyp_file.name[: -len(".hyp")]
        manifest = prep / f"{split}.tsv"
        if not manifest.is_file():
            raise InputError(f"{hyp_file}: no references ({manifest} not found)")
        refs = {u.utt_id: u.text for u in read_manifest(manifest)}
        hyps = read_lines(hyp_file)
        ids = read_lines(dec / f"{split}.ids")
        if len(ids) != len(hyps):
            raise InputError(f"{hyp_file}: {len(hyps)} lines but {len(ids)} utterance ids")
        missing = [u for u in ids if u not in refs]
        if missing or len(ids) != len(refs):
            raise InputError(
                f"{hyp_file}: hypotheses for {len(ids)} utterances, references for {len(refs)}"
                + (f" (no reference for {missing[0]})" if missing else "")
            )
        res = score_asr([refs[u] for u in ids], hyps, ids, normalization=cfg.asr_normalization)
        write_error_report(res, ctx.out / f"{split}.errors.txt")
        entry: dict[str, Any] = {"sentences": len(ids)}
        for m, unit in (("wer", "words"), ("cer", "chars")):
            if m in metrics:
                counts = res[f"{unit[:-1]}_counts"]
                entry[m] = {
                    "score": round(100 * res[m], 2),
                    "normalization": res["normalization"],
                    "errors": counts["errors"],
                    f"ref_{unit}": res[f"num_ref_{unit}"],
                    **{k: counts[k] for k in ("substitutions", "insertions", "deletions")},
                }
        entry["utterances_with_errors"] = sum(1 for r in res["utterances"] if r["errors"])
        entry.update(_adaptation_passes(dec, split, [refs[u] for u in ids], metrics, cfg))
        entry["confusions"] = res["confusions"]
        out["splits"][split] = entry
        ctx.log.info(
            "score    %-6s %s  (%d utterances, %s)%s",
            split,
            "  ".join(f"{m.upper()} {entry[m]['score']:.2f}" for m in metrics),
            len(ids),
            cfg.asr_normalization,
            "; first pass "
            + "  ".join(f"{m.upper()} {v:.2f}" for m, v in entry["first_pass"].items())
            if "first_pass" in entry
            else "",
        )
    if not out["splits"]:
        raise InputError(f"{dec}: no decoded split (*.hyp) to score")
    (ctx.out / "scores.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    # the manifest gets the scores without the confusion lists (as MT: scores.json's splits)
    return {
        "scores": {
            s: {k: v for k, v in e.items() if k != "confusions"} for s, e in out["splits"].items()
        }
    }


def _adaptation_passes(
    dec: Path, split: str, refs: list[str], metrics: list[str], cfg: Any
) -> dict[str, Any]:
    """decode.adapt: the first pass's scores (``first_pass``: before adapting to each speaker)
    and, with several rounds, each round's (``rounds``: {metric: [per round]}, the last one the
    split's own figure); {} when the split was not adapted."""

    def scored(path: Path, hyps: list[str]) -> dict[str, float]:
        if len(hyps) != len(refs):
            raise InputError(f"{path}: {len(hyps)} lines but {len(refs)} utterance ids")
        res = score_asr(refs, hyps, normalization=cfg.asr_normalization)
        return {m: round(100 * res[m], 2) for m in metrics}

    out: dict[str, Any] = {}
    pass1, rounds = dec / f"{split}.pass1", dec / f"{split}.rounds.tsv"
    if pass1.is_file():
        out["first_pass"] = scored(pass1, read_lines(pass1))
    if rounds.is_file():
        rows = [line.split("\t") for line in read_lines(rounds)]
        if len({len(r) for r in rows}) > 1:
            raise InputError(f"{rounds}: lines of {sorted({len(r) for r in rows})} columns")
        per_round = [scored(rounds, list(col)) for col in zip(*rows, strict=True)] or [{}]
        out["rounds"] = {m: [r[m] for r in per_round] for m in per_round[0]}
    return out
