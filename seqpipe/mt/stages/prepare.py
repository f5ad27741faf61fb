"""prepare: find the dataset's files (mirror first), normalise, split, filter.

Text output (task: mt): ``{split}.src`` / ``{split}.tgt`` (UTF-8, one sentence a line) for each
split named in ``data.splits`` (train, valid, test, ...) and ``stats.json`` with what was read,
kept and dropped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from seqpipe.core.stage import StageContext
from seqpipe.data.registry import dataset_entry, fetch, safe_read_zip_member
from seqpipe.data.text import clean_pairs, iter_tsv_pairs, read_parallel, split_of, write_lines
from seqpipe.errors import InputError


def run(ctx: StageContext) -> dict[str, Any]:
    d = ctx.recipe.data
    if d.dataset == "local":
        pairs = _local_pairs(ctx)
    elif d.dataset == "multi30k":
        pairs = _multi30k_pairs(ctx)
    elif d.dataset.startswith("tatoeba_"):
        pairs = _tatoeba_pairs(ctx)
    else:
        entry = dataset_entry(d.dataset)
        raise InputError(
            f"data.dataset: {d.dataset} is a {entry.get('task')} dataset, but the recipe's task is mt"
        )
    if "train" not in pairs:
        raise InputError("data.splits: a 'train' split is required")
    stats: dict[str, Any] = {}
    for split, split_pairs in pairs.items():
        is_train = split == "train"
        limit = d.max_train_lines if is_train else d.max_eval_lines
        src, tgt, st = clean_pairs(
            split_pairs,
            filter_=is_train,
            max_words=d.max_words,
            max_ratio=d.max_length_ratio,
            limit=limit,
        )
        if not src:
            raise InputError(f"data: split {split} is empty after cleaning")
        write_lines(ctx.out / f"{split}.src", src)
        write_lines(ctx.out / f"{split}.tgt", tgt)
        stats[split] = st.as_dict()
        dropped = sum(st.dropped.values())
        ctx.log.info(
            "prepare  %-6s %6d pairs kept (%d dropped: %s)",
            split,
            st.kept,
            dropped,
            ", ".join(f"{k} {v}" for k, v in st.dropped.items() if v) or "none",
        )
    (ctx.out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return {"splits": {s: v["kept"] for s, v in stats.items()}, "filter": stats}


def _local_pairs(ctx: StageContext) -> dict[str, list[tuple[str, str]]]:
    out = {}
    for split, files in (ctx.recipe.data.local or {}).items():
        out[split] = read_parallel(Path(files.src), Path(files.tgt), f"data.local.{split}")
    return out


def _multi30k_pairs(ctx: StageContext) -> dict[str, list[tuple[str, str]]]:
    d = ctx.recipe.data
    entry = dataset_entry("multi30k")
    for lang in (d.src_lang, d.tgt_lang):
        if lang not in entry["languages"]:
            raise InputError(
                f"data.src_lang/tgt_lang: multi30k has {', '.join(entry['languages'])}, not {lang!r}"
            )
    if d.src_lang == d.tgt_lang:
        raise InputError("data: src_lang and tgt_lang must differ")
    out = {}
    for ours, theirs in d.splits.items():
        if theirs not in entry["splits"]:
            raise InputError(
                f"data.splits.{ours}: multi30k has splits {', '.join(entry['splits'])}, not {theirs!r}"
            )
        src = fetch("multi30k", f"multi30k/raw/{theirs}.{d.src_lang}.gz")
        tgt = fetch("multi30k", f"multi30k/raw/{theirs}.{d.tgt_lang}.gz")
        out[ours] = read_parallel(src, tgt)
    return out


def _tatoeba_pairs(ctx: StageContext) -> dict[str, list[tuple[str, str]]]:
    d = ctx.recipe.data
    entry = dataset_entry(d.dataset)
    langs = entry["languages"]
    if {d.src_lang, d.tgt_lang} != set(langs):
        raise InputError(
            f"data.src_lang/tgt_lang: {d.dataset} pairs {' and '.join(langs)}, "
            f"not {d.src_lang} and {d.tgt_lang}"
        )
    (rel,) = entry["files"].keys()
    archive = fetch(d.dataset, rel)
    data = safe_read_zip_member(archive, entry["member"])
    wanted = set(d.splits)
    unknown = wanted - {"train", "valid", "test"}
    if unknown:
        raise InputError(
            f"data.splits: tatoeba splits are train, valid, test (not {sorted(unknown)})"
        )
    out: dict[str, list[tuple[str, str]]] = {s: [] for s in d.splits}
    for eng, other in iter_tsv_pairs(data, f"{archive}:{entry['member']}"):
        split = split_of(eng, d.valid_fraction, d.test_fraction, ctx.recipe.seed)
        if split in out:
            out[split].append((eng, other) if d.src_lang == "en" else (other, eng))
    return out
