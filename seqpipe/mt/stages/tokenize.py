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
    common = dict(
        model_type=cfg.model_type,
        vocab_size=cfg.vocab_size,
        character_coverage=cfg.character_coverage,
        seed=ctx.recipe.seed,
        input_sentence_size=cfg.max_sentencepiece_sentences,
        threads=cfg.threads,
    )
    if cfg.joint:
        train_sentencepiece([prep / "train.src", prep / "train.tgt"], ctx.out / "spm", **common)
    else:
        train_sentencepiece([prep / "train.src"], ctx.out / "src", **common)
        train_sentencepiece([prep / "train.tgt"], ctx.out / "tgt", **common)
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
