"""``seqpipe compare``: is one run's score different from another's beyond noise?

Each RUN (an experiment folder or a score artifact) contributes its decoded test set and the
references it was scored against; runs whose references differ are refused. Against the first
run (the baseline) every other run gets, per metric, its score, the difference, a 95 %
confidence interval of the difference and p-values:

- MT (BLEU, chrF, with the score stage's settings): sacrebleu's own paired tests
  (:class:`sacrebleu.significance.PairedTest`: paired bootstrap resampling, 1,000 resamples, and
  approximate randomization, 10,000 trials; seed ``SACREBLEU_SEED``, default 12345). The
  interval is the 2.5/97.5 percentiles of the difference over the same bootstrap resamples.
- ASR (WER, CER, with the score stage's normalisation): a paired bootstrap over utterances
  (the same resampling and p-value as sacrebleu's: Koehn 2004).

Identical outputs get p = 1: sacrebleu counts resamples whose difference *exceeds* the observed
one, which gives 1/(n+1) when there is no difference at all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seqpipe.data.text import read_lines
from seqpipe.errors import InputError

BOOTSTRAP, TRIALS = 1000, 10000


@dataclass
class RunOutput:
    """A scored run's output on one test set, and how it was scored."""

    name: str
    task: str
    hyps: list[str]
    refs: list[str]
    score_config: dict[str, Any]  # the score stage's recipe section


def score_dir(run: Path) -> Path:
    """The score artifact of an experiment folder (or the artifact itself)."""
    if (run / "manifest.json").is_file() and run.resolve().parent.name == "score":
        return run.resolve()
    link = run / "score"
    if not (link / "manifest.json").is_file():
        raise InputError(f"{run}: no finished score stage (run the recipe to the end first)")
    return link.resolve()


def load_output(score: Path, split: str, name: str | None = None) -> RunOutput:
    """The hypotheses and references that the score artifact ``score`` scored on ``split``."""
    from seqpipe.data.asr_datasets import read_manifest

    m = json.loads((score / "manifest.json").read_text(encoding="utf-8"))
    cache = score.parent.parent
    dec = cache / "decode" / m["inputs"]["decode"]
    prep = cache / "prepare" / m["inputs"]["prepare"]
    hyp_file = dec / f"{split}.hyp"
    if not hyp_file.is_file():
        have = sorted(p.stem for p in dec.glob("*.hyp"))
        raise InputError(f"{name or score}: no test set {split!r} (has {', '.join(have)})")
    hyps, task = read_lines(hyp_file), m.get("task", "mt")
    if task == "mt":
        refs = read_lines(prep / f"{split}.tgt")
    else:
        text = {u.utt_id: u.text for u in read_manifest(prep / f"{split}.tsv")}
        refs = [text[u] for u in read_lines(dec / f"{split}.ids")]
    config = (m.get("config") or {}).get("score") or {}
    return RunOutput(name or str(score), task, hyps, refs, config)


def _check_comparable(runs: Sequence[RunOutput], split: str) -> None:
    base = runs[0]
    for r in runs[1:]:
        if r.task != base.task:
            raise InputError(f"{r.name}: an {r.task.upper()} run; {base.name} is {base.task}")
        if r.refs != base.refs:
            raise InputError(
                f"{r.name}: its {split!r} references differ from {base.name}'s "
                f"({len(r.refs)} vs {len(base.refs)} lines): not the same test set"
            )
        if r.score_config != base.score_config:
            raise InputError(f"{r.name}: scored with other settings than {base.name}")


def _p_value(sample_diffs: np.ndarray, observed: float) -> float:
    """Koehn's paired bootstrap p-value, as sacrebleu computes it."""
    stats = np.abs(sample_diffs) - np.abs(sample_diffs).mean()
    return float((np.sum(stats > abs(observed)) + 1) / (len(stats) + 1))


def _indices(n: int, samples: int) -> np.ndarray:
    """The bootstrap resamples sacrebleu draws (same seed, same generator)."""
    seed = os.environ.get("SACREBLEU_SEED", "12345")
    rng = np.random.default_rng(None if seed.lower() == "none" else int(seed))
    return rng.choice(n, size=(samples, n), replace=True)


def _mt_rows(runs: Sequence[RunOutput], samples: int, trials: int) -> list[dict[str, Any]]:
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    cfg = runs[0].score_config
    lower = bool(cfg.get("lowercase", False))
    metrics = {
        "bleu": BLEU(tokenize=cfg.get("bleu_tokenize", "13a"), lowercase=lower),
        "chrf": CHRF(lowercase=lower),
    }
    metrics = {k: v for k, v in metrics.items() if k in cfg.get("metrics", metrics)}
    systems = [(r.name, r.hyps) for r in runs]
    refs = [runs[0].refs]
    pvals: dict[str, dict[str, list[Any]]] = {}
    for test, n in (("bs", samples), ("ar", trials)):
        if not n:  # trials=0: no randomization test
            continue
        _, res = PairedTest(systems, dict(metrics), refs, test_type=test, n_samples=n)()
        columns = [v for k, v in res.items() if k != "System"]  # in the order of `metrics`
        pvals[test] = dict(zip(metrics, columns, strict=True))
    idx = _indices(len(refs[0]), samples)
    rows = []
    for key, metric in metrics.items():
        stats = [np.array(metric._extract_corpus_statistics(r.hyps, refs), "float32") for r in runs]
        boot = [
            np.array([metric._compute_score_from_stats(s.sum(0)).score for s in st[idx]])
            for st in stats
        ]
        base = metric.corpus_score(runs[0].hyps, refs).score
        for i, r in enumerate(runs):
            score = metric.corpus_score(r.hyps, refs).score
            row = {"run": r.name, "metric": key, "score": round(score, 2)}
            if i:
                diffs = boot[i] - boot[0]
                same = r.hyps == runs[0].hyps
                row.update(
                    delta=round(score - base, 2),
                    ci=[round(float(np.percentile(diffs, q)), 2) for q in (2.5, 97.5)],
                    p_bootstrap=1.0 if same else pvals["bs"][key][i].p_value,
                )
                if "ar" in pvals:
                    row["p_randomization"] = 1.0 if same else pvals["ar"][key][i].p_value
            rows.append(row)
    return rows


def _asr_rows(runs: Sequence[RunOutput], samples: int) -> list[dict[str, Any]]:
    from seqpipe.asr.scoring import utterance_errors

    norm = runs[0].score_config.get("asr_normalization", "lower,strip_punct,collapse_space")
    counts = [utterance_errors(r.refs, r.hyps, norm) for r in runs]  # metric -> (errors, refs)
    idx = _indices(len(runs[0].refs), samples)
    rows = []
    for key in ("wer", "cer"):
        ref_total = counts[0][key][1].sum()
        boot_refs = counts[0][key][1][idx].sum(1)
        boot = [100 * c[key][0][idx].sum(1) / np.maximum(boot_refs, 1) for c in counts]
        scores = [100 * c[key][0].sum() / max(ref_total, 1) for c in counts]
        for i, r in enumerate(runs):
            row = {"run": r.name, "metric": key, "score": round(scores[i], 2)}
            if i:
                diffs = boot[i] - boot[0]
                p = 1.0 if r.hyps == runs[0].hyps else _p_value(diffs, scores[i] - scores[0])
                row.update(
                    delta=round(scores[i] - scores[0], 2),
                    ci=[round(float(np.percentile(diffs, q)), 2) for q in (2.5, 97.5)],
                    p_bootstrap=p,
                )
            rows.append(row)
    return rows


def compare(
    runs: Sequence[RunOutput], split: str = "test", samples: int = BOOTSTRAP, trials: int = TRIALS
) -> list[dict[str, Any]]:
    """One row per (run, metric): score, and against the first run: ``delta``, ``ci`` (95 %
    interval of the difference), ``p_bootstrap`` (and MT: ``p_randomization``)."""
    if len(runs) < 2:
        raise InputError("compare needs two runs or more")
    _check_comparable(runs, split)
    if runs[0].task == "mt":
        return _mt_rows(runs, samples, trials)
    return _asr_rows(runs, samples)


def compare_paths(
    paths: Sequence[str | Path], split: str = "test", **kw: Any
) -> list[dict[str, Any]]:
    """:func:`compare` of runs given as experiment folders or score artifacts."""
    return compare([load_output(score_dir(Path(p)), split, str(p)) for p in paths], split, **kw)


def render(rows: list[dict[str, Any]], split: str) -> str:
    """A plain-text table: one line per (run, metric), the baseline first."""
    head = f"{'run':<24} {'metric':<6} {'score':>7} {'Δ':>7} {'95% CI of Δ':>17} {'p (bs)':>8}"
    lines = [f"test set {split}; baseline: {rows[0]['run']}", head + f" {'p (ar)':>8}"]
    for r in rows:
        ci = f"[{r['ci'][0]:+.2f}, {r['ci'][1]:+.2f}]" if "ci" in r else ""
        cells = [
            f"{r['run']:<24} {r['metric']:<6} {r['score']:>7.2f}",
            f"{r['delta']:>+7.2f}" if "delta" in r else f"{'':>7}",
            f"{ci:>17}",
            f"{r['p_bootstrap']:>8.4f}" if "p_bootstrap" in r else f"{'':>8}",
            f"{r['p_randomization']:>8.4f}" if "p_randomization" in r else "",
        ]
        lines.append(" ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def add_baseline_column(rows: list[dict[str, Any]], baseline: str | Path) -> None:
    """Set each leaderboard row's ``p`` against ``baseline`` (paired bootstrap on BLEU for MT,
    WER for ASR) where it shares the baseline's task and test set; refused ones stay blank."""
    base_dir = score_dir(Path(baseline))
    for row in rows:
        if row.get("artifact") is None or row["task"] is None:
            continue
        try:
            base = load_output(base_dir, row["test_set"], str(baseline))
            other = load_output(Path(row["artifact"]), row["test_set"], row["run"] or "")
            out = compare([base, other], row["test_set"], trials=0)
        except InputError:  # another task, test set or references: no p-value
            continue
        main = "bleu" if row["task"] == "mt" else "wer"
        row["p"] = next(r["p_bootstrap"] for r in out[1:] if r["metric"] == main)
