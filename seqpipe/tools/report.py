"""``seqpipe report RUN``: a markdown report of one scored run.

RUN is an experiment folder (``exp/mt_small``) or a score artifact. The report (default
``<RUN>/report/report.md``) holds the run's leaderboard row (model, scores with signature,
decode settings, training time), the learning curve (``curve.png`` from the train artifact),
and per test set:

- MT: BLEU and chrF by source length (words; buckets 1-10, 11-20, 21-30, 31+) as a table and a
  bar chart, and the worst sentences by sentence-level chrF (source, reference, output);
- ASR: the utterances with the most errors (from the score stage's error report);
- both: what the model looks at for four sentences (:mod:`seqpipe.tools.heatmaps`: attention
  heatmaps, or the CTC posteriorgram of arch ctc).

It only reads artifacts; nothing in the cache changes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import sacrebleu

from seqpipe.asr.scoring import utterance_errors
from seqpipe.data.text import read_lines
from seqpipe.errors import InputError
from seqpipe.tools.compare import load_output, score_dir
from seqpipe.tools.heatmaps import asr_heatmaps, mt_heatmaps
from seqpipe.tools.leaderboard import collect, render

BUCKETS = ((1, 10), (11, 20), (21, 30), (31, None))
ATTENTION_TEXT = (
    "what the model looks at (the shortest, the longest and the two worst sentences, decoded "
    "again as the decode stage did; MT and ASR attention archs: output x input attention; ASR "
    "arch ctc: the CTC posteriorgram, each token's emitting frame marked)"
)


def _bucket(n: int) -> str:
    for lo, hi in BUCKETS:
        if hi is None or n <= hi:
            return f"{lo}-{hi}" if hi else f"{lo}+"
    return "?"


def _mt_section(
    split: str, prep: Path, dec: Path, out: Path, lowercase: bool, worst: int, tokenize: str
) -> tuple[list[str], list[float]]:
    """The BLEU-by-length table and chart and the worst sentences; and per sentence its
    badness (minus sentence chrF) for choosing heatmaps."""

    src = read_lines(prep / f"{split}.src")
    ref = read_lines(prep / f"{split}.tgt")
    hyp = read_lines(dec / f"{split}.hyp")
    if not (len(src) == len(ref) == len(hyp)):
        raise InputError(f"{dec / (split + '.hyp')}: {len(hyp)} lines for {len(ref)} references")
    lines = [
        f"## {split}: BLEU by source length",
        "",
        "| source words | sentences | BLEU | chrF |",
        "|---|---:|---:|---:|",
    ]
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(src):
        groups.setdefault(_bucket(max(1, len(s.split()))), []).append(i)
    labels, bleus = [], []
    for lo, hi in BUCKETS:
        label = f"{lo}-{hi}" if hi else f"{lo}+"
        idx = groups.get(label, [])
        if not idx:
            continue
        h, r = [hyp[i] for i in idx], [ref[i] for i in idx]
        b = (
            sacrebleu.metrics.BLEU(tokenize=tokenize, lowercase=lowercase)
            .corpus_score(h, [r])
            .score
        )
        c = sacrebleu.metrics.CHRF(lowercase=lowercase).corpus_score(h, [r]).score
        lines.append(f"| {label} | {len(idx)} | {b:.2f} | {c:.2f} |")
        labels.append(label)
        bleus.append(b)
    if labels:
        png = out / f"{split}_length_bleu.png"
        _bar_chart(labels, bleus, png, f"{split}: BLEU by source length (words)")
        lines += ["", f"![BLEU by source length]({png.name})"]
    chrf = sacrebleu.metrics.CHRF(lowercase=lowercase)
    sentence_chrf = [chrf.sentence_score(h, [r]).score for h, r in zip(hyp, ref, strict=True)]
    scored = sorted(range(len(hyp)), key=lambda i: (sentence_chrf[i], i))
    lines += ["", f"## {split}: the {min(worst, len(hyp))} worst sentences (sentence chrF)", ""]
    for rank, i in enumerate(scored[:worst], 1):
        s = sentence_chrf[i]
        lines += [
            f"{rank}. line {i + 1}, chrF {s:.1f}",
            f"   - source: {_md(src[i])}",
            f"   - reference: {_md(ref[i])}",
            f"   - output: {_md(hyp[i])}",
        ]
    return lines, [-c for c in sentence_chrf]


def _attention_section(files: list[Path], what: str) -> list[str]:
    """Markdown for the heatmaps of :mod:`seqpipe.tools.heatmaps`."""
    lines = [what, ""]
    for png in files:
        data = json.loads(png.with_suffix(".json").read_text(encoding="utf-8"))
        shape = f"{len(data['rows'])} x {len(data['columns'])}"
        lines += [f"![{png.stem}]({png.name}) ({shape}; numbers in {png.stem}.json)", ""]
    return lines


def _asr_section(split: str, score: Path, worst: int) -> list[str]:
    report = score / f"{split}.errors.txt"
    lines = [f"## {split}: error report", ""]
    if report.is_file():
        text = report.read_text(encoding="utf-8").splitlines()
        lines += ["```", *text[: max(20, worst * 6)], "```"]
    else:
        lines.append("(no per-utterance error report in the score artifact)")
    return lines


def _md(text: str) -> str:
    return text.replace("|", "\\|") if text else "*(empty)*"


def _bar_chart(labels: list[str], values: list[float], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(labels, values, color="#4c72b0")
    ax.set_title(title, fontsize=9)
    ax.set_ylabel("BLEU")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def write_report(run: str | Path, out: str | Path | None = None, worst: int = 10) -> Path:
    """Write the report of ``run``; returns the markdown file."""
    run = Path(run)
    if not run.exists():
        raise InputError(f"{run}: no such experiment folder")
    score = score_dir(run)
    cache = score.parent.parent
    manifest = json.loads((score / "manifest.json").read_text(encoding="utf-8"))
    inputs = manifest.get("inputs", {})
    prep, dec = cache / "prepare" / inputs["prepare"], cache / "decode" / inputs["decode"]
    dman = json.loads((dec / "manifest.json").read_text(encoding="utf-8"))
    train = cache / "train" / dman["inputs"]["train"]
    out_dir = (
        Path(out)
        if out
        else (run / "report" if (run / "recipe.yaml").is_file() else Path("report"))
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = collect([score])
    title = rows[0]["run"] if rows else manifest.get("recipe", run.name)
    lines = [f"# Report: {title}", "", render(rows, "markdown").rstrip(), ""]
    if (train / "curve.png").is_file():
        shutil.copyfile(train / "curve.png", out_dir / "curve.png")
        lines += ["## Learning curve", "", "![learning curve](curve.png)", ""]
    tinfo = (
        json.loads((train / "train.json").read_text()) if (train / "train.json").is_file() else {}
    )
    if tinfo:
        best = tinfo.get("best")
        best = f"{best:.2f}" if isinstance(best, (int, float)) else best
        lines += [
            f"Training: {tinfo.get('steps')} steps, {tinfo.get('epochs')} epochs, "
            f"{tinfo.get('train_seconds')} s, stopped: {tinfo.get('stop_reason')}, best "
            f"valid {tinfo.get('valid_metric')} {best} at step "
            f"{tinfo.get('best_step')}.",
            "",
        ]
    cfg = (manifest.get("config") or {}).get("score") or {}
    for split in sorted(manifest.get("scores") or {}):
        if manifest.get("task") == "asr":
            lines += _asr_section(split, score, worst)
            out = load_output(score, split)
            norm = cfg.get("asr_normalization", "lower,strip_punct,collapse_space")
            bad = [float(e) for e in utterance_errors(out.refs, out.hyps, norm)["wer"][0]]
            files = asr_heatmaps(split, dec, train, out_dir, bad)
        else:
            lowercase, tokenize = bool(cfg.get("lowercase")), cfg.get("bleu_tokenize", "13a")
            section, bad = _mt_section(split, prep, dec, out_dir, lowercase, worst, tokenize)
            lines += section
            files = mt_heatmaps(split, prep, dec, train, out_dir, bad)
        lines += ["", *_attention_section(files, f"## {split}: {ATTENTION_TEXT}")]
    md = out_dir / "report.md"
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return md
