"""Leaderboard: every scored run in a workspace, one row per (run, test set).

Reads manifests only (``cache/score/*/manifest.json`` and, following their ``inputs``, the
decode, train, tokenize|features and prepare manifests; ``exp/*/keys.json`` to name runs), so
it stays fast with hundreds of runs. A manifest that cannot be read is reported as one warning
line and skipped (a row whose upstream manifest is unreadable keeps its scores, with blanks for
what it would have said).

A row (the JSON/CSV fields)::

    run, task, test_set, dataset, model, arch, cell, emb_size, hidden_size, enc_layers,
    dec_layers, attention, params, bleu, bleu_signature, chrf, chrf_signature, wer, cer,
    normalization, sentences, search, beam, alpha, adapt (decode.adapt, e.g. "+lin x2 prior 1"),
    checkpoint, steps, train_seconds,
    decode_speed (sentences/s for MT, real-time factor for ASR), date, commit,
    score_key, decode_key, train_key
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from seqpipe.common.settings import BEAM_SEARCHES
from seqpipe.core.recipe import model_summary
from seqpipe.errors import InputError

# metric -> True when higher is better
METRICS = {"bleu": True, "chrf": True, "wer": False, "cer": False}
# sort key -> True when higher is better
SORT_KEYS = {**METRICS, **dict.fromkeys(("steps", "decode_speed", "date"), True)}
SORT_KEYS.update(dict.fromkeys(("params", "train_seconds", "run", "test_set", "beam"), False))
FORMATS = ("table", "markdown", "csv", "json")
MODEL_KEYS = ("arch", "cell", "emb_size", "hidden_size", "enc_layers", "dec_layers", "attention")
FIELDS = [
    *"run task test_set dataset model".split(),
    *MODEL_KEYS,
    *"params bleu bleu_signature chrf chrf_signature wer cer normalization sentences".split(),
    *"search beam alpha adapt checkpoint steps train_seconds decode_speed date commit".split(),
    *"score_key decode_key train_key".split(),
]

Warn = Callable[[str], None]


def _warn_stderr(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def _load_json(path: Path, warn: Warn, what: str = "") -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        warn(f"{path}: missing{what}; skipped")
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        warn(f"{path}: unreadable ({reason}){what}; skipped")
        return None
    if not isinstance(data, dict):
        warn(f"{path}: not a JSON object{what}; skipped")
        return None
    return data


# ------------------------------------------------------------------------------------ collect
def _score_dirs(paths: Sequence[Path]) -> list[tuple[Path, Path | None]]:
    """(cache root, score artifact or None for all of them) for each path given."""
    out: list[tuple[Path, Path | None]] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise InputError(f"{p}: no such workspace, experiment folder or score artifact")
        if (p / "cache").is_dir():  # a workspace
            out.append((p / "cache", None))
        elif (p / "score").is_dir() and not (p / "score" / "manifest.json").exists():  # cache/
            out.append((p, None))
        elif (p / "score" / "manifest.json").is_file() or (p / "recipe.yaml").is_file():  # exp/
            link = p / "score"
            if not link.exists():
                raise InputError(f"{p}: this experiment has not been scored yet")
            art = link.resolve()
            out.append((art.parent.parent, art))
        elif (p / "manifest.json").is_file() and p.resolve().parent.name == "score":
            art = p.resolve()
            out.append((art.parent.parent, art))
        else:
            raise InputError(
                f"{p}: not a workspace (no cache/), experiment folder or score artifact"
            )
    return out


def _run_names(cache: Path, warn: Warn) -> dict[str, list[str]]:
    """score key -> names of the experiments (exp/<name>/keys.json) that link to it."""
    names: dict[str, list[str]] = {}
    exp = cache.parent / "exp"
    if not exp.is_dir():
        return names
    for keys_file in sorted(exp.glob("*/keys.json")):
        data = _load_json(keys_file, warn)
        if data and isinstance(data.get("score"), str):
            names.setdefault(data["score"], []).append(keys_file.parent.name)
    return names


def collect(
    paths: Sequence[Path | str] = (".",),
    warn: Warn = _warn_stderr,
    score_keys: Iterable[str] | None = None,
) -> list[dict[str, Any]]:
    """Rows for every score artifact under ``paths`` (workspaces, ``cache/`` folders,
    experiment folders or score artifacts); ``score_keys`` keeps only those."""
    wanted = set(score_keys) if score_keys is not None else None
    rows: list[dict[str, Any]] = []
    seen: set[Path] = set()
    for cache, only in _score_dirs([Path(p) for p in paths]):
        cache = cache.resolve()
        names = _run_names(cache, warn)
        if only is not None:
            manifests = [only / "manifest.json"]
        else:
            d = cache / "score"
            manifests = sorted(d.glob("*/manifest.json")) if d.is_dir() else []
        upstream: dict[Path, dict[str, Any] | None] = {}

        def up(
            stage: str,
            key: Any,
            _cache: Path = cache,
            _up: dict[Path, dict[str, Any] | None] = upstream,
        ) -> dict[str, Any]:
            if not isinstance(key, str):
                return {}
            path = _cache / stage / key / "manifest.json"
            if path not in _up:
                _up[path] = _load_json(path, warn, f" ({stage} of a scored run)")
            return _up[path] or {}

        for mf in manifests:
            art = mf.parent
            if "." in art.name or art.resolve() in seen:  # .partial, .corrupt
                continue
            if wanted is not None and art.name not in wanted:
                continue
            seen.add(art.resolve())
            m = _load_json(mf, warn)
            if m is not None and m.get("key") != art.name:
                warn(f"{mf}: not a manifest of this artifact (key {m.get('key')!r}); skipped")
            elif m is not None:
                rows.extend(_rows_of(art, m, up, names.get(art.name), warn))
    return rows


def _rows_of(
    art: Path,
    m: dict[str, Any],
    up: Callable[[str, Any], dict[str, Any]],
    names: list[str] | None,
    warn: Warn,
) -> list[dict[str, Any]]:
    scores = m.get("scores")
    if not isinstance(scores, dict):
        sj = _load_json(art / "scores.json", warn)
        scores = (sj or {}).get("splits")
    if not isinstance(scores, dict):
        warn(f"{art / 'manifest.json'}: no scores; skipped")
        return []
    inputs = m.get("inputs") or {}
    dec = up("decode", inputs.get("decode"))
    train = up("train", (dec.get("inputs") or {}).get("train"))
    prep = up("prepare", inputs.get("prepare"))
    task = m.get("task") or dec.get("task") or "mt"
    model_cfg = (train.get("config") or {}).get("model") or {}
    tinfo = train.get("train") or {}
    dcfg = (dec.get("config") or {}).get("decode") or {}
    dinfo = dec.get("decode") or {}
    data = (prep.get("config") or {}).get("data") or {}
    dataset = data.get("dataset")
    if dataset and task == "mt" and data.get("src_lang"):
        dataset = f"{dataset} {data.get('src_lang')}-{data.get('tgt_lang')}"
    search = dinfo.get("search") or dcfg.get("search")
    members = int(tinfo.get("members") or 1)  # an ensemble (train.members)
    model_desc = model_summary(model_cfg, members) if model_cfg else None
    base = {
        "run": ",".join(names) if names else m.get("recipe"),
        "task": task,
        "dataset": dataset,
        "model": model_desc,
        **{k: model_cfg.get(k) for k in MODEL_KEYS},
        "params": tinfo.get("parameters"),
        "search": search,
        "beam": dcfg.get("beam_size") if search in BEAM_SEARCHES else None,
        "alpha": dcfg.get("alpha") if search in ("beam", "joint") else None,
        "adapt": _fmt_adapt(dinfo.get("adapt")),
        "checkpoint": dinfo.get("checkpoint") or dcfg.get("checkpoint"),
        "steps": tinfo.get("steps"),
        "train_seconds": tinfo.get("train_seconds"),
        "date": _date(m.get("finished")),
        "commit": _commit(m.get("git_commit")),
        "score_key": m.get("key", art.name),
        "decode_key": inputs.get("decode"),
        "train_key": (dec.get("inputs") or {}).get("train"),
    }
    if tinfo.get("averaged") and base["checkpoint"] == "averaged":
        base["checkpoint"] = f"averaged({len(tinfo['averaged'])})"
    rows = []
    for split, s in scores.items():
        if not isinstance(s, dict):
            continue
        row = dict(base, test_set=split, sentences=s.get("sentences"))
        for metric in METRICS:
            v = s.get(metric)
            row[metric] = v.get("score") if isinstance(v, dict) else None
        row["bleu_signature"] = (s.get("bleu") or {}).get("signature")
        row["chrf_signature"] = (s.get("chrf") or {}).get("signature")
        row["normalization"] = (s.get("wer") or s.get("cer") or {}).get("normalization")
        sp = (dinfo.get("splits") or {}).get(split) or {}
        row["decode_speed"] = sp.get("sentences_per_second") if task == "mt" else sp.get("rtf")
        rows.append({f: row.get(f) for f in FIELDS} | {"artifact": str(art)})
    return rows


def _date(stamp: Any) -> str | None:
    if not isinstance(stamp, str):
        return None
    return stamp[:16].replace("T", " ")


def _commit(commit: Any) -> str | None:
    if not isinstance(commit, str):
        return None
    base, _, dirty = commit.partition("+")
    return base[:8] + ("+" + dirty if dirty else "")


# ------------------------------------------------------------------------------------ select
def select(
    rows: list[dict[str, Any]],
    task: str | None = None,
    test_set: str | None = None,
    sort: str | None = None,
) -> list[dict[str, Any]]:
    """Filter by task and test set; sort by ``sort`` (best first; rows without it last).
    Default: BLEU when there are MT rows, else WER."""
    if task:
        rows = [r for r in rows if r["task"] == task]
    if test_set:
        rows = [r for r in rows if r["test_set"] == test_set]
    if sort is None:
        sort = "bleu" if any(r["task"] == "mt" for r in rows) else "wer"
    if sort not in SORT_KEYS:
        raise InputError(f"--sort {sort}: use one of {', '.join(SORT_KEYS)}")
    desc = SORT_KEYS[sort]
    have = [r for r in rows if r.get(sort) is not None]
    missing = [r for r in rows if r.get(sort) is None]
    have.sort(key=lambda r: (r.get("run") or "", r.get("test_set") or ""))
    have.sort(key=lambda r: r[sort], reverse=desc)  # stable: ties stay in run order
    return have + missing


def best_cells(rows: list[dict[str, Any]]) -> set[tuple[int, str]]:
    """(row index, metric) of the best value of each metric per test set."""
    best: set[tuple[int, str]] = set()
    for metric, higher in METRICS.items():
        by_set: dict[Any, list[int]] = {}
        for i, r in enumerate(rows):
            if r.get(metric) is not None:
                by_set.setdefault((r["task"], r["test_set"]), []).append(i)
        for idx in by_set.values():
            vals = [rows[i][metric] for i in idx]
            target = max(vals) if higher else min(vals)
            best.update((i, metric) for i in idx if rows[i][metric] == target)
    return best


# ------------------------------------------------------------------------------------ render
def _fmt_seconds(s: Any) -> str:
    if s is None:
        return ""
    s = float(s)
    return f"{s:.0f}s" if s < 60 else f"{s / 60:.1f}m" if s < 3600 else f"{s / 3600:.1f}h"


def _fmt_params(n: Any) -> str:
    if n is None:
        return ""
    n = int(n)
    return f"{n / 1e6:.1f}M" if n >= 1_000_000 else f"{n / 1e3:.0f}k" if n >= 1_000 else str(n)


def _fmt_cell(v: Any) -> str:
    """An extra column's cell: floats with 4 decimals (p-values), None blank."""
    return "" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def _fmt_adapt(adapt: dict[str, Any] | None) -> str | None:
    """decode.adapt as '+lin' (one round), '+lin x2', with a token prior '+lin x2 prior 1'."""
    if not adapt:
        return None
    rounds, prior = adapt.get("rounds", 1), adapt.get("prior", 0)
    return (
        f"+{adapt.get('method')}"
        + (f" x{rounds}" if rounds > 1 else "")
        + (f" prior {prior:g}" if prior else "")
    )


def _fmt_search(r: dict[str, Any]) -> str:
    s = r.get("search") or ""
    if r.get("beam") is not None:
        s += f" {r['beam']}"
    if r.get("alpha") is not None:
        s += f" α{r['alpha']:g}"
    if r.get("adapt"):
        s += f" {r['adapt']}"
    return s


def _columns(
    rows: list[dict[str, Any]], extra: Sequence[str]
) -> list[tuple[str, str, Callable[[dict[str, Any]], str]]]:
    """(header, metric or '', formatter) of the table columns that have any value."""
    tasks = {r["task"] for r in rows}

    def num(key: str, fmt: str = "{:.2f}") -> Callable[[dict[str, Any]], str]:
        return lambda r: "" if r.get(key) is None else fmt.format(r[key])

    cols: list[tuple[str, str, Callable[[dict[str, Any]], str]]] = [
        ("run", "", lambda r: r.get("run") or ""),
    ]
    for key in extra:
        cols.append((key, "", lambda r, k=key: _fmt_cell(r.get(k))))
    cols += [
        ("test set", "", lambda r: r.get("test_set") or ""),
        ("model", "", lambda r: r.get("model") or ""),
        ("params", "", lambda r: _fmt_params(r.get("params"))),
    ]
    if "mt" in tasks:
        cols += [("BLEU", "bleu", num("bleu")), ("chrF", "chrf", num("chrf"))]
    if "asr" in tasks:
        cols += [("WER", "wer", num("wer")), ("CER", "cer", num("cer"))]
    cols += [
        ("search", "", _fmt_search),
        ("ckpt", "", lambda r: r.get("checkpoint") or ""),
        ("steps", "", lambda r: "" if r.get("steps") is None else str(r["steps"])),
        ("train", "", lambda r: _fmt_seconds(r.get("train_seconds"))),
    ]
    for task, title, fmt in (("mt", "sent/s", "{:.1f}"), ("asr", "RTF", "{:.4f}")):
        if task in tasks:
            cols.append((title, "", _speed_cell(task, fmt)))
    cols += [
        ("date", "", lambda r: r.get("date") or ""),
        ("commit", "", lambda r: r.get("commit") or ""),
    ]
    return cols


def _speed_cell(task: str, fmt: str) -> Callable[[dict[str, Any]], str]:
    """A column's cell: a row's decoding speed when the row is of ``task``."""

    def cell(r: dict[str, Any]) -> str:
        speed = r.get("decode_speed")
        return "" if speed is None or r["task"] != task else fmt.format(speed)

    return cell


def _footnotes(rows: list[dict[str, Any]]) -> list[str]:
    notes = []
    for key, label in (
        ("bleu_signature", "BLEU"),
        ("chrf_signature", "chrF"),
        ("normalization", "WER/CER normalization"),
    ):
        vals = sorted({r[key] for r in rows if r.get(key)})
        if len(vals) == 1:
            notes.append(f"{label}: {vals[0]}")
        elif vals:
            notes.append(f"{label}: {len(vals)} different settings: " + "; ".join(vals))
    return notes


def render(
    rows: list[dict[str, Any]],
    fmt: str = "table",
    color: bool | None = None,
    extra_columns: Sequence[str] = (),
) -> str:
    """The rows as ``table`` (best per metric in bold when ``color``), ``markdown`` (best in
    ``**bold**``), ``csv`` or ``json`` (every field)."""
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt}: use one of {', '.join(FORMATS)}")
    fields = [*FIELDS, *[c for c in extra_columns if c not in FIELDS]]
    if fmt == "json":
        return (
            json.dumps([{f: r.get(f) for f in fields} for r in rows], indent=2, ensure_ascii=False)
            + "\n"
        )
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow(r)
        return buf.getvalue()
    if not rows:
        return "no scored runs found\n"
    cols = _columns(rows, extra_columns)
    best = best_cells(rows)
    cells = [[f(r) for _, _, f in cols] for r in rows]
    if color is None:
        color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    if fmt == "table" and not color:  # no colour: mark the best values with a star instead
        for i, row in enumerate(cells):
            for j, (_, metric, _) in enumerate(cols):
                if metric and row[j]:
                    row[j] += "*" if (i, metric) in best else " "
    if fmt == "markdown":
        lines = [
            "| " + " | ".join(h for h, _, _ in cols) + " |",
            "|" + "|".join("---:" if m else "---" for _, m, _ in cols) + "|",
        ]
        for i, row in enumerate(cells):
            out = []
            for j, (_, metric, _) in enumerate(cols):
                v = row[j].replace("|", "\\|")
                out.append(f"**{v}**" if metric and (i, metric) in best and v else v)
            lines.append("| " + " | ".join(out) + " |")
        notes = "".join(f"- {n}\n" for n in _footnotes(rows))
        return "\n".join(lines) + "\n" + ("\n" + notes if notes else "")
    widths = [max(len(h), *(len(c[j]) for c in cells)) for j, (h, _, _) in enumerate(cols)]
    numeric = [bool(m) or h in ("params", "steps", "train", "sent/s", "RTF") for h, m, _ in cols]

    def line(values: list[str], bold: set[int] | None = None) -> str:
        parts = []
        for j, v in enumerate(values):
            s = v.rjust(widths[j]) if numeric[j] else v.ljust(widths[j])
            if bold is not None and j in bold:
                s = f"\x1b[1m{s}\x1b[0m" if color else s
            parts.append(s)
        return "  ".join(parts).rstrip()

    out = [line([h for h, _, _ in cols]), "  ".join("-" * w for w in widths)]
    for i, row in enumerate(cells):
        bold = {j for j, (_, m, _) in enumerate(cols) if m and (i, m) in best}
        out.append(line(row, bold))
    notes = [*_footnotes(rows), "bold: best of its test set" if color else "* best of its test set"]
    return "\n".join(out + [""] + notes) + "\n"
