"""score: BLEU and chrF (sacrebleu) of each decoded split.

Hypotheses are scored detokenized against the prepared references (NFC/whitespace-normalised
raw text, never filtered). ``scores.json`` holds, per split, each metric's score and its
sacrebleu signature.
"""

from __future__ import annotations

import json
from typing import Any

import sacrebleu

from seqpipe.core.stage import StageContext
from seqpipe.data.text import read_lines
from seqpipe.errors import InputError


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.recipe.score
    prep, dec = ctx.inputs["prepare"].path, ctx.inputs["decode"].path
    out: dict[str, Any] = {"task": "mt", "splits": {}}
    for hyp_file in sorted(dec.glob("*.hyp")):
        split = hyp_file.name[: -len(".hyp")]
        refs = read_lines(prep / f"{split}.tgt")
        hyps = read_lines(hyp_file)
        if len(refs) != len(hyps):
            raise InputError(f"{hyp_file}: {len(hyps)} lines but {len(refs)} references")
        res: dict[str, Any] = {"sentences": len(refs)}
        if "bleu" in cfg.metrics:
            bleu = sacrebleu.metrics.BLEU(tokenize=cfg.bleu_tokenize, lowercase=cfg.lowercase)
            s = bleu.corpus_score(hyps, [refs])
            res["bleu"] = {
                "score": round(s.score, 2),
                "signature": str(bleu.get_signature()),
                "detail": str(s),
            }
        if "chrf" in cfg.metrics:
            chrf = sacrebleu.metrics.CHRF(lowercase=cfg.lowercase)
            s = chrf.corpus_score(hyps, [refs])
            res["chrf"] = {"score": round(s.score, 2), "signature": str(chrf.get_signature())}
        out["splits"][split] = res
        ctx.log.info(
            "score    %-6s %s",
            split,
            "  ".join(f"{m.upper()} {res[m]['score']:.2f}" for m in ("bleu", "chrf") if m in res),
        )
    (ctx.out / "scores.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return {"scores": out["splits"]}
