"""tokenize: train SentencePiece on the training split, encode every split to ids.

Output: ``spm.model``/``spm.vocab`` (joint) or ``src.*``/``tgt.*``; for each split and side
``{split}.{side}.ids.npy`` + ``{split}.{side}.offsets.npy``; ``stats.json`` (vocab sizes,
tokens per split). Training reads these ids and never re-tokenizes (except for BPE-dropout,
which samples new segmentations of the training targets each epoch).
"""

from __future__ import annotations

import json
from typing import Any

from seqpipe.common.vocab import Tokenizer, save_ids, train_sentencepiece
from seqpipe.core.stage import StageContext
from seqpipe.data.text import read_lines


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.recipe.tokenize
    prep = ctx.inputs["prepare"].path
    splits = sorted({p.name.split(".")[0] for p in prep.glob("*.src")})
    inputs = (
        {"spm": ["train.src", "train.tgt"]}
        if cfg.joint
        else {"src": ["train.src"], "tgt": ["train.tgt"]}
    )
    for prefix, files in inputs.items():
        train_sentencepiece([prep / f for f in files], ctx.out / prefix, cfg, ctx.recipe.seed)
    tok = Tokenizer(ctx.out)
    stats: dict[str, Any] = {
        "src_vocab_size": tok.src_vocab_size,
        "tgt_vocab_size": tok.tgt_vocab_size,
        "joint": cfg.joint,
        "splits": {},
    }
    for split in splits:
        src = tok.encode_src(read_lines(prep / f"{split}.src"))
        tgt = tok.encode_tgt(read_lines(prep / f"{split}.tgt"))
        save_ids(ctx.out, f"{split}.src", src)
        save_ids(ctx.out, f"{split}.tgt", tgt)
        stats["splits"][split] = {
            "sentences": len(src),
            "src_tokens": sum(map(len, src)),
            "tgt_tokens": sum(map(len, tgt)),
        }
        ctx.log.info(
            "tokenize %-6s %6d sentences, %d src / %d tgt tokens",
            split,
            len(src),
            stats["splits"][split]["src_tokens"],
            stats["splits"][split]["tgt_tokens"],
        )
    if cfg.vocab_size > tok.tgt_vocab_size:
        ctx.log.warning(
            "tokenize: the corpus supports only %d pieces (tokenize.vocab_size=%d)",
            tok.tgt_vocab_size,
            cfg.vocab_size,
        )
    (ctx.out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return {"vocab": {"src": tok.src_vocab_size, "tgt": tok.tgt_vocab_size}}
