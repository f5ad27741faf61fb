"""score (task: asr): WER and CER (jiwer, via ``seqpipe.asr.scoring``) of each decoded split.

Hypotheses are matched to the prepare manifest's references by utterance id, both normalised
with ``score.asr_normalization``. ``scores.json``::

    {"task": "asr", "splits": {split: {
        "sentences": n,
        "wer": {"score": <percent>, "normalization": ..., "errors": E, "ref_words": N,
                "substitutions": S, "insertions": I, "deletions": D},
        "cer": {"score": <percent>, "normalization": ..., "errors": ..., "ref_chars": ...},
        "first_pass": {"wer": <percent>, "cer": <percent>},   # decode.adapt only
        "confusions": {"substitutions": [[ref, hyp, n]...], "insertions": [[w, n]...],
                       "deletions": [[w, n]...]}}}}

plus ``{split}.errors.txt``, the per-utterance error report (icefall style).
"""

from __future__ import annotations

import json
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
        pass1 = dec / f"{split}.pass1"
        if pass1.is_file():  # decode.adapt: the first pass, before adapting to each speaker
            hyps1 = read_lines(pass1)
            if len(hyps1) != len(ids):
                raise InputError(f"{pass1}: {len(hyps1)} lines but {len(ids)} utterance ids")
            res1 = score_asr([refs[u] for u in ids], hyps1, normalization=cfg.asr_normalization)
            entry["first_pass"] = {m: round(100 * res1[m], 2) for m in metrics}
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
