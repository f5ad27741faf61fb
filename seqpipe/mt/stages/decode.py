"""decode: translate the splits in ``decode.splits`` with the trained model.

Output per split: ``{split}.hyp`` (detokenized best hypothesis, one line per input line, input
order), ``{split}.nbest.tsv`` when ``decode.nbest > 1`` (line, rank, score, text), and
``decode.json`` with the settings, the checkpoint used and the speed (sentences/s).
``decode.shortlist`` > 0 restricts each sentence's output vocabulary to a lexical shortlist
built from the training split (:mod:`seqpipe.mt.shortlist`).
"""

from __future__ import annotations

import json
from typing import Any

from seqpipe.common.checkpoint import load_for_decoding
from seqpipe.common.settings import DecodeSettings
from seqpipe.common.vocab import IdArray, Tokenizer
from seqpipe.core.stage import StageContext
from seqpipe.data.text import write_lines, write_nbest
from seqpipe.errors import InputError
from seqpipe.mt.shortlist import LexicalShortlist
from seqpipe.mt.translate import decode_id_seqs


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.recipe.decode
    model, spec, device = load_for_decoding(ctx.inputs["train"].path, cfg)
    tok_dir = ctx.inputs["tokenize"].path
    tok = Tokenizer(tok_dir)
    s = DecodeSettings.from_config(cfg).resolve("mt")
    shortlist = None
    if s.shortlist > 0:
        shortlist = LexicalShortlist.from_tokenized(
            tok_dir, spec["src_vocab_size"], spec["tgt_vocab_size"]
        )
    info: dict[str, Any] = {
        "checkpoint": cfg.checkpoint,
        "search": s.search,
        "splits": {},
        "shortlist": cfg.shortlist,
        "shortlist_frequent": cfg.shortlist_frequent,
        "quantize": cfg.quantize,
    }
    for split in cfg.splits:
        if not (tok_dir / f"{split}.src.ids.npy").is_file():
            raise InputError(f"decode.splits: no split {split!r} in the data (see data.splits)")
        arr = IdArray(tok_dir, f"{split}.src")
        seqs = [arr[i] for i in range(len(arr))]
        nb, secs = decode_id_seqs(model, seqs, s, device=device, shortlist=shortlist)
        write_lines(ctx.out / f"{split}.hyp", tok.decode_tgt([h[0][0] if h else [] for h in nb]))
        if s.nbest > 1:
            lines = list(range(1, len(nb) + 1))
            write_nbest(ctx.out / f"{split}.nbest.tsv", lines, nb, tok.decode_tgt)
        info["splits"][split] = {
            "sentences": len(seqs),
            "seconds": round(secs, 3),
            "sentences_per_second": round(len(seqs) / max(secs, 1e-9), 2),
        }
        ctx.log.info(
            "decode   %-6s %d sentences in %.1f s (%.1f sent/s, %s)",
            split,
            len(seqs),
            secs,
            len(seqs) / max(secs, 1e-9),
            s.describe(),
        )
    (ctx.out / "decode.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return {"decode": info}
