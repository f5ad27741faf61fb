"""seqpipe benchmarks (``make bench``): prints figures as JSON, asserts nothing.

Everything runs one after another in this process's session, so the ratios compare runs made
side by side on the same (noisy, shared) machine. Rows, all on Multi30k En→De with the Joey NMT
peer's model size (bi-GRU 256, embeddings 256, joint SentencePiece unigram 8k, dropout 0.3):

* ``ceiling``: ../shared/bench/ceiling_mt.py — the bare training step on random, perfectly
  bucketed batches — run with the default allocator and with the allocator setting seqpipe
  uses (seqpipe/core/runtime.py), since both bound us on this machine.
* ``train_input_feeding`` / ``train_fast``: seqpipe's train stage end to end (data pipeline,
  padding, bookkeeping included) for ``--steps`` updates: real source+target tokens/s
  (EOS counted, padding not), peak RSS. Input feeding is Bahdanau attention queried by the
  new decoder state (``model.attention_query=current``), as Joey NMT and the ceiling do: the
  same architecture as Joey's, 8,049,920 parameters; ``train_input_feeding_previous_query`` is
  the Bahdanau et al. order (context into the RNN, a larger RNN input), reported for
  reference. The variant that the decode rows decode (``--decode-model``) is trained for
  ``--decode-minutes`` instead of ``--steps`` when that is set (default with ``--joey``).
* ``decode_beam5`` / ``decode_greedy``: the decode stage on test_2016_flickr (1,000 sentences)
  with the ``--decode-model`` model (default ``input_feeding``: Joey's architecture; ``fast``:
  Luong attention without input feeding), from its last checkpoint: ``sent_per_s`` and
  ``words_per_s`` of the decoding loop (``seconds``; output words are the whitespace-split
  words of the detokenized hypotheses, so a model that emits longer sentences is not
  penalised per word), ``words_per_sent``, BLEU and chrF (sacreBLEU, 13a), peak RSS;
  ``*_shortlist``: the same with a lexical shortlist (``decode.shortlist=10``, 300 frequent
  pieces); ``*_int8*``: with ``decode.quantize=int8`` (int8 dynamic quantization of the
  weights). seqpipe decodes length-sorted batches of ``decode.batch_tokens`` source tokens.
  Each row's ``ratio_sentences_per_s`` / ``ratio_words_per_s`` divide it by Joey's figure for
  the same search (beam 5 or greedy) in ``joeynmt_decode_ref``. ``decoding_model`` names the
  variant decoded and its training minutes (null: ``--steps`` updates).
* ``asr_*`` (``--parts`` with ``asr``): recipes/asr_small.yaml (FSDD connected digits, joint
  CTC/attention): the features stage (× real time: audio seconds, every speed-perturbed copy
  included, per wall second, with ``features.workers`` processes), training for
  ``--asr-minutes`` (real feature frames/s), and decoding the test speaker with CTC greedy,
  CTC prefix beam (5) and joint CTC/attention beam (5): real-time factor and WER of each; and CTC
  greedy with ``decode.adapt=lin`` (two rounds): RTF of all passes, of the first, and both WERs.
* ``sweep`` (``--parts`` with ``sweep``): bench/sweep_bench.py, a 4-variant sweep with
  ``--jobs 2`` against one variant at a time (1 thread each): walls, ratio, shared builds.
* ``joeynmt_decode_ref``: the yardstick for the decode rows. With ``--joey``,
  ../shared/bench/joeynmt/decode_ref.sh in Joey NMT 2.3's own venv: its stored reference model
  (same architecture and size, trained 1,500 updates, about 30 minutes; realistic output
  lengths) decodes the same test set with beam 5 (``beam_alpha`` 1.0) and greedy in batches of
  64 sentences: ``*_sent_per_s``, ``*_words_per_s`` (Joey's "Generation took", the decoding
  loop only, which also tokenizes the source), ``*_words_per_sent``, BLEU, chrF, and the CPU
  cores other processes used meanwhile. Without ``--joey``: its published figures,
  ``measured: false``.
* ``joeynmt``: the training comparison. With ``--joey``, ../shared/bench/joeynmt/bench.sh
  trains Joey for ``--joey-budget`` seconds (real tokens/s, against ``train_*``); its decoding
  of that young model is kept under ``young_model_decode`` for reference only (its output
  length, and so its sentences/s, follows how far training got). Without ``--joey``: its
  published training figure, ``measured: false``.
* ``ratios``: ``train_*_vs_joey`` (real tokens/s against ``joeynmt``), and per decode row
  ``decode_*_vs_joey``: its ``ratio_sentences_per_s`` and ``ratio_words_per_s`` beside its
  ``bleu`` and Joey's ``joey_bleu``; ``joey_decode_measured`` says whether Joey's side was
  measured in this run.

A like-for-like decode ratio needs models of realistic output on both sides: compare words/s
beside sentences/s, and BLEU beside both.

Usage: python bench/run_bench.py [--threads 2] [--steps 60] [--parts mt,asr] [--asr-minutes 3]
                                 [--joey] [--joey-budget 300] [--decode-model input_feeding]
                                 [--decode-minutes 30]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()
sys.path.insert(0, str(REPO))  # this checkout's seqpipe, whatever the venv points at
RECIPE = REPO / "recipes" / "mt_small.yaml"
ASR_RECIPE = REPO / "recipes" / "asr_small.yaml"
JOEY_DIR = SHARED / "bench" / "joeynmt"
JOEY_PUBLISHED = {  # ../shared/bench/joeynmt/README.md, 600 s run, 2 threads, de→en
    "train_tok_per_s": 2764,
    "source": "../shared/bench/joeynmt/README.md (not measured in this run)",
}
JOEY_REF_PUBLISHED = {  # ../shared/bench/joeynmt/README.md, decode_ref.sh, 2 idle threads, en→de
    "model": "ref-en-de",
    "beam5_sent_per_s": 34.5,
    "beam5_words_per_s": 412,
    "beam5_words_per_sent": 11.97,
    "beam5_bleu": 13.34,
    "beam5_chrf": 37.76,
    "greedy_sent_per_s": 93.2,
    "greedy_words_per_s": 1183,
    "greedy_bleu": 12.18,
    "threads": 2,
    "source": "../shared/bench/joeynmt/README.md, decode_ref.sh on 2026-12-02 "
    "(not measured in this run)",
}
DECODE_MINUTES_WITH_JOEY = 30.0  # about the training time of Joey's reference model

# The Joey NMT peer's model and data; the rest from recipes/mt_small.yaml.
COMMON = [
    "data.src_lang=en",
    "data.tgt_lang=de",
    "tokenize.vocab_size=8000",
    "tokenize.joint=true",
    "tokenize.model_type=unigram",
    "model.cell=gru",
    "model.emb_size=256",
    "model.hidden_size=256",
    "model.enc_layers=1",
    "model.dec_layers=1",
    "model.bidirectional=true",
    "model.dropout=0.3",
    "model.bridge=true",
    "model.tied_embeddings=false",
    "tokenize.bpe_dropout=0.0",
    "train.max_minutes=null",
    "train.progress=false",
    "train.log_every=20",
]
VARIANTS = {
    # Joey NMT's decoder (and the ceiling's) steps the RNN first and lets its new state query
    # the Bahdanau attention: attention_query=current is the matching model
    "train_input_feeding": [
        "model.attention=bahdanau",
        "model.attention_query=current",
        "model.input_feeding=true",
    ],
    "train_fast": ["model.attention=luong", "model.input_feeding=false"],
    # Bahdanau et al.'s order (our default for bahdanau): the context is also an RNN input,
    # a larger model than Joey's; reported, not compared
    "train_input_feeding_previous_query": [
        "model.attention=bahdanau",
        "model.attention_query=previous",
        "model.input_feeding=true",
    ],
}


def measured_run(args: list[str], env: dict[str, str]) -> tuple[int, float, int]:
    """Run ``seqpipe ARGS`` in a child; (exit code, wall seconds, peak RSS in MiB)."""
    code = (
        "import resource, sys\n"
        "from seqpipe.cli import main\n"
        "try:\n    main(sys.argv[1:], standalone_mode=False)\n    rc = 0\n"
        "except SystemExit as e:\n    rc = e.code or 0\n"
        "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    m = re.search(r"PEAK_RSS_KB (\d+)", proc.stderr)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
    return proc.returncode, wall, int(m.group(1)) // 1024 if m else -1


def decode_and_score(
    recipe: Path, args: list[str], ws: Path, env: dict[str, str], name: str
) -> tuple[dict, dict, int]:
    """Rerun decode (+ score) of ``recipe`` with ``args``; the test split's entries of
    decode.json (with ``output_words``: whitespace-split words of the detokenized test.hyp)
    and scores.json, and the decode run's peak RSS (MiB)."""
    from seqpipe.core.pipeline import Pipeline
    from seqpipe.core.recipe import load_recipe

    keys = Pipeline(load_recipe(recipe, args), ws).keys()
    rc, _, rss = measured_run(
        ["run", str(recipe), *args, "--to", "score", "--force", "decode", "-w", str(ws)], env
    )
    assert rc == 0, f"{name} failed"
    ddir = ws / "cache" / "decode" / keys["decode"]
    dec = json.loads((ddir / "decode.json").read_text())["splits"]["test"]
    dec["output_words"] = count_words(ddir / "test.hyp")
    sc = json.loads((ws / "cache" / "score" / keys["score"] / "scores.json").read_text())
    return dec, sc["splits"]["test"], rss


def count_words(path: Path) -> int:
    """Whitespace-split words of a hypothesis file (as decode_ref.sh counts Joey's)."""
    with open(path, encoding="utf-8") as f:
        return sum(len(line.split()) for line in f)


def other_load() -> float:
    return os.getloadavg()[0]


def ceiling(threads: int, tuned: bool) -> dict[str, float]:
    env = dict(os.environ)
    if tuned:  # what seqpipe.core.runtime.tune_allocator sets through mallopt
        env.update(MALLOC_MMAP_THRESHOLD_=str(1 << 30), MALLOC_TRIM_THRESHOLD_=str(1 << 31))
    out = subprocess.run(
        [sys.executable, str(SHARED / "bench" / "ceiling_mt.py"), str(threads)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = re.search(r"input-feeding loop (\d+), fast no-input-feeding (\d+)", out)
    assert m, out
    return {"input_feeding": float(m.group(1)), "fast": float(m.group(2))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=60, help="training updates per variant")
    ap.add_argument("--max-tokens", type=int, default=4000)
    ap.add_argument("--workspace", type=Path, default=REPO / "bench_out")
    ap.add_argument("--joey", action="store_true", help="also run Joey NMT (needs its venv)")
    ap.add_argument("--joey-budget", type=int, default=300, help="Joey training seconds (bench.sh)")
    ap.add_argument(
        "--decode-model",
        choices=["input_feeding", "fast"],
        default="input_feeding",
        help="the variant the decode rows decode (input_feeding: Joey's architecture)",
    )
    ap.add_argument(
        "--decode-minutes",
        type=float,
        default=None,
        help="train the decode rows' model this long instead of --steps updates "
        f"(default with --joey: {DECODE_MINUTES_WITH_JOEY:g}, like Joey's reference model; "
        "0: --steps)",
    )
    ap.add_argument("--parts", default="mt,asr", help="comma-separated: mt, asr, sweep")
    ap.add_argument("--sweep-steps", type=int, default=150, help="updates per sweep variant")
    ap.add_argument("--asr-minutes", type=float, default=3.0, help="ASR training minutes")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    a = ap.parse_args()

    env = dict(os.environ)
    env.setdefault("SEQPIPE_MIRROR", str(SHARED / "data"))
    ws = a.workspace.resolve()
    ws.mkdir(parents=True, exist_ok=True)
    t = a.threads
    common = [
        *COMMON,
        f"train.threads={t}",
        f"decode.threads={t}",
        f"train.max_tokens={a.max_tokens}",
        f"train.max_steps={a.steps}",
        f"train.valid_every={10 * a.steps}",
        "train.valid_max_sentences=100",
    ]
    res: dict[str, object] = {
        "threads": t,
        "steps": a.steps,
        "max_tokens": a.max_tokens,
        "load_at_start": round(other_load(), 2),
    }
    parts = {p.strip() for p in a.parts.split(",") if p.strip()}
    if "mt" in parts:
        bench_mt(a, common, ws, env, res)
    if "asr" in parts:
        bench_asr(a, ws, env, res)
    if "sweep" in parts:  # bench/sweep_bench.py: a 4-variant sweep, --jobs 2 against --jobs 1
        from sweep_bench import bench_sweep

        res["sweep"] = bench_sweep(ws / "sweep", env, a.sweep_steps)
    res["load_at_end"] = round(other_load(), 2)
    text = json.dumps(res, indent=2)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")


SHORTLIST = ["decode.shortlist=10", "decode.shortlist_frequent=300"]
DECODE_ROWS = {  # the decode rows: overrides of the decoding model's recipe
    "decode_beam5": ["decode.search=beam", "decode.beam_size=5"],
    "decode_greedy": ["decode.search=greedy"],
    "decode_beam5_shortlist": ["decode.search=beam", "decode.beam_size=5", *SHORTLIST],
    "decode_greedy_shortlist": ["decode.search=greedy", *SHORTLIST],
    "decode_beam5_int8": ["decode.search=beam", "decode.beam_size=5", "decode.quantize=int8"],
    "decode_greedy_int8": ["decode.search=greedy", "decode.quantize=int8"],
    "decode_beam5_int8_shortlist": [
        "decode.search=beam",
        "decode.beam_size=5",
        "decode.quantize=int8",
        *SHORTLIST,
    ],
    "decode_greedy_int8_shortlist": ["decode.search=greedy", "decode.quantize=int8", *SHORTLIST],
}


def bench_mt(
    a: argparse.Namespace, common: list[str], ws: Path, env: dict[str, str], res: dict[str, object]
) -> None:
    """The ``train_*``, ``decode_*``, Joey NMT and ``ratios`` rows into ``res``."""
    # data once (cached); not timed
    rc, _, _ = measured_run(["run", str(RECIPE), *common, "--to", "tokenize", "-w", str(ws)], env)
    assert rc == 0, "prepare/tokenize failed"

    res["ceiling_default_alloc"] = ceiling(a.threads, tuned=False)
    res["ceiling_tuned_alloc"] = ceiling(a.threads, tuned=True)

    decode_variant = f"train_{a.decode_model}"
    decode_min = a.decode_minutes
    if decode_min is None:
        decode_min = DECODE_MINUTES_WITH_JOEY if a.joey else 0.0
    # the decode rows' model is trained for a wall-clock budget like that of Joey's reference
    # model, so that both sides decode models with realistic output (BLEU side by side)
    budget = [f"train.max_minutes={decode_min}", "train.max_steps=null"] if decode_min else []
    for name, ov in VARIANTS.items():
        args = [*common, *ov, *(budget if name == decode_variant else [])]
        res[name] = train_row(name, args, ws, env, res)
        print(json.dumps({name: res[name]}), file=sys.stderr)

    model = [*common, *VARIANTS[decode_variant], *budget]
    res["decoding_model"] = {"variant": decode_variant, "train_minutes": decode_min or None}
    note = (
        f"{a.decode_model} model after {decode_min:g} min of training"
        if decode_min
        else f"{a.decode_model} model after {a.steps} updates; "
        "BLEU and output lengths are not those of a trained model"
    )
    for name, ov in DECODE_ROWS.items():
        d, sc, rss = decode_and_score(
            RECIPE, [*model, *ov, "decode.checkpoint=last"], ws, env, name
        )
        words = d["output_words"]
        res[name] = {
            "sent_per_s": d["sentences_per_second"],
            "words_per_s": round(words / max(d["seconds"], 1e-9), 1),
            "words_per_sent": round(words / max(d["sentences"], 1), 2),
            "seconds": d["seconds"],
            "peak_rss_mib": rss,
            "bleu": sc["bleu"]["score"],
            "chrf": sc["chrf"]["score"] if "chrf" in sc else None,
            "note": note,
        }
        print(json.dumps({name: res[name]}), file=sys.stderr)

    # Joey NMT's decoding: its stored reference model through decode_ref.sh, right after ours
    joey_ref: dict[str, object] = dict(JOEY_REF_PUBLISHED, measured=False)
    if a.joey:
        joey_ref = run_joey_decode_ref(a.threads, ws / "joey_decode_ref", joey_ref)
    res["joeynmt_decode_ref"] = joey_ref
    # Joey NMT's training through bench.sh (its decode of that young model: reference only)
    res["joeynmt"] = joey = (
        run_joey_training(a, ws) if a.joey else dict(JOEY_PUBLISHED, measured=False)
    )
    res["ratios"] = ratios_to_joey(res, joey, joey_ref)


def train_row(name: str, args: list[str], ws: Path, env: dict[str, str], res: dict) -> dict:
    """One ``train_*`` row: the variant trained afresh (``--force train``), its real tokens/s
    against the two measured ceilings (``res``), steps, seconds, wall time and peak RSS."""
    from seqpipe.core.pipeline import Pipeline
    from seqpipe.core.recipe import load_recipe

    pipe = Pipeline(load_recipe(RECIPE, args), ws)
    rc, wall, rss = measured_run(
        ["run", str(RECIPE), *args, "--to", "train", "--force", "train", "-w", str(ws)], env
    )
    assert rc == 0, f"{name} failed"
    info = json.loads((ws / "cache" / "train" / pipe.keys()["train"] / "train.json").read_text())
    key = "input_feeding" if "input_feeding" in name else "fast"
    tok_per_s = info["tokens_per_second"]
    return {
        "real_tok_per_s": tok_per_s,
        "steps": info["steps"],
        "train_seconds": info["train_seconds"],
        "stage_wall_s": round(wall, 1),
        "peak_rss_mib": rss,
        "parameters": info["parameters"],
        "fraction_of_ceiling_default_alloc": round(
            tok_per_s / res["ceiling_default_alloc"][key], 3
        ),
        "fraction_of_ceiling_tuned_alloc": round(tok_per_s / res["ceiling_tuned_alloc"][key], 3),
    }


def run_joey_training(a: argparse.Namespace, ws: Path) -> dict[str, object]:
    """Joey NMT trained for ``--joey-budget`` seconds by its bench.sh: real tokens/s; its
    decode of that young model kept as a reference only (published figures if it fails)."""
    joey: dict[str, object] = dict(JOEY_PUBLISHED, measured=False)
    cmd = ["bash", str(JOEY_DIR / "bench.sh"), "-b", str(a.joey_budget), "-t", str(a.threads)]
    cmd += ["-s", "en", "-g", "de", "-o", str(ws / "joey")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not line:
        joey["error"] = proc.stderr[-500:]
        return joey
    joey = dict(json.loads(line[-1]), measured=True)
    young = {k: joey.pop(k) for k in list(joey) if k.startswith(("beam5_", "greedy_"))}
    joey["young_model_decode"] = dict(
        young,
        note=f"Joey's model after {a.joey_budget} s of training; not the decode "
        "yardstick (see joeynmt_decode_ref)",
    )
    return joey


def ratios_to_joey(res: dict, joey: dict, joey_ref: dict) -> dict[str, object]:
    """Our training tokens/s over Joey's, and each decode row's sentences/s and words/s over
    the reference model's (each decode row also gets its ratios)."""
    ratios: dict[str, object] = {}
    jt = float(joey.get("train_tok_per_s", 0) or 0)
    if jt:
        for name in ("train_fast", "train_input_feeding"):
            ratios[f"{name}_vs_joey"] = round(res[name]["real_tok_per_s"] / jt, 2)
    for ours in DECODE_ROWS:
        row: dict = res[ours]
        mode = "beam5" if ours.startswith("decode_beam5") else "greedy"
        vs: dict[str, object] = {}
        for ratio, mine, theirs in (
            ("ratio_sentences_per_s", "sent_per_s", f"{mode}_sent_per_s"),
            ("ratio_words_per_s", "words_per_s", f"{mode}_words_per_s"),
        ):
            if joey_ref.get(theirs):
                vs[ratio] = round(row[mine] / float(joey_ref[theirs]), 2)
        vs["bleu"] = row["bleu"]
        vs["joey_bleu"] = joey_ref.get(f"{mode}_bleu")
        row.update({k: v for k, v in vs.items() if k.startswith("ratio_")})
        ratios[f"{ours}_vs_joey"] = vs
    ratios["joey_decode_measured"] = joey_ref.get("measured")
    return ratios


def run_joey_decode_ref(threads: int, run_dir: Path, fallback: dict[str, object]) -> dict:
    """../shared/bench/joeynmt/decode_ref.sh into ``run_dir``: its final JSON line, with each
    search's decoding-loop seconds and the CPU cores other processes used meanwhile; on
    failure, ``fallback`` (the published figures) with the error."""
    # a fresh run dir: decode_ref.sh copies the read-only spm.model/vocab.txt into it
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = ["bash", str(JOEY_DIR / "decode_ref.sh"), "-t", str(threads), "-o", str(run_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not line:
        return dict(fallback, error=(proc.stderr or proc.stdout)[-500:])
    out = dict(json.loads(line[-1]), measured=True, run_dir=str(run_dir))
    for mode in ("beam5", "greedy"):
        stats = json.loads((run_dir / f"decode_{mode}.json").read_text())
        out[f"{mode}_gen_s"] = stats.get("gen_s")
        out[f"{mode}_other_cpu_cores"] = stats.get("cpu", {}).get("other_cpu_cores")
    out["decode_batch_sents"] = stats.get("batch_sents")
    out["beam_alpha"] = stats.get("beam_alpha")
    return out


def bench_asr(a: argparse.Namespace, ws: Path, env: dict[str, str], res: dict[str, object]) -> None:
    from seqpipe.core.pipeline import Pipeline
    from seqpipe.core.recipe import load_recipe

    t = a.threads
    base = [
        f"train.threads={t}",
        f"decode.threads={t}",
        f"train.max_minutes={a.asr_minutes}",
        "train.progress=false",
        "model.arch=ctc_attention",
    ]
    rc, _, _ = measured_run(["run", str(ASR_RECIPE), *base, "--to", "prepare", "-w", str(ws)], env)
    assert rc == 0, "asr prepare failed"
    pipe = Pipeline(load_recipe(ASR_RECIPE, base), ws)
    rc, wall, rss = measured_run(
        ["run", str(ASR_RECIPE), *base, "--to", "features", "--force", "features", "-w", str(ws)],
        env,
    )
    assert rc == 0, "asr features failed"
    stats = json.loads(
        (ws / "cache" / "features" / pipe.keys()["features"] / "stats.json").read_text()
    )
    res["asr_features"] = {
        split: {k: v.get(k) for k in ("rows", "audio_seconds", "seconds", "x_real_time")}
        for split, v in stats["splits"].items()
    }
    res["asr_features"]["workers"] = load_recipe(ASR_RECIPE, base).features.workers  # type: ignore[index]
    res["asr_features"]["peak_rss_mib"] = rss  # type: ignore[index]
    print(json.dumps({"asr_features": res["asr_features"]}), file=sys.stderr)

    rc, wall, rss = measured_run(
        ["run", str(ASR_RECIPE), *base, "--to", "train", "--force", "train", "-w", str(ws)], env
    )
    assert rc == 0, "asr train failed"
    info = json.loads((ws / "cache" / "train" / pipe.keys()["train"] / "train.json").read_text())
    res["asr_train"] = {
        "frames_per_s": info["tokens_per_second"],
        "steps": info["steps"],
        "train_seconds": info["train_seconds"],
        "peak_rss_mib": rss,
        "parameters": info["parameters"],
        "best_valid_wer": info["best"],
    }
    print(json.dumps({"asr_train": res["asr_train"]}), file=sys.stderr)

    adapt = ["decode.adapt=lin", "decode.adapt_rounds=2"]  # asr_small's speaker adaptation
    for name, search, extra in (
        ("asr_decode_ctc_greedy", "ctc_greedy", []),
        ("asr_decode_ctc_beam5", "ctc_beam", []),
        ("asr_decode_joint5", "joint", []),
        ("asr_decode_ctc_greedy_adapt", "ctc_greedy", adapt),
    ):
        d, sc, rss = decode_and_score(
            ASR_RECIPE,
            [*base, f"decode.search={search}", "decode.beam_size=5", *extra],
            ws,
            env,
            name,
        )
        res[name] = {
            "rtf": d["rtf"],
            "seconds": d["seconds"],
            "audio_seconds": d["audio_seconds"],
            "peak_rss_mib": rss,
            "wer": sc["wer"]["score"],
            "note": f"model after {a.asr_minutes:g} min of training",
        }
        if extra:  # two passes and the adaptation between them
            res[name].update(
                rtf_first_pass=d["rtf_first_pass"],
                adapt_seconds=d["adapt_seconds"],
                first_pass_wer=sc["first_pass"]["wer"],
            )
        print(json.dumps({name: res[name]}), file=sys.stderr)


if __name__ == "__main__":
    main()
