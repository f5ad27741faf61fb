"""What the model looks at, for ``seqpipe report``: attention heatmaps and CTC posteriorgrams.

A few test sentences (utterances) are chosen reproducibly — the shortest, the longest (MT: up
to 40 words) and the two worst (MT: sentence chrF; ASR: word errors), ties by position — and
decoded again by the run's model as its decode stage decoded them (its checkpoint and decode
settings; ASR: the stored features, without speaker adaptation). Each gives
``<split>_attention_<k>.png`` and its numbers in ``<split>_attention_<k>.json``
(``rows``/``columns`` labels and ``weights``, rows x columns):

- MT: output pieces (rows) x source pieces and ``</s>`` (columns): the attention that chose
  each output piece, pieces as tick labels;
- ASR, attention archs: output tokens x encoder frames (one column per frame block: the
  front end's subsampling of 10 ms frames);
- ASR, arch ctc: the CTC posteriorgram: one row per output token (its probability over the
  encoder frames, the frame that emits it marked) and a last row for the blank.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from seqpipe.common.checkpoint import load_trained
from seqpipe.common.settings import DecodeSettings
from seqpipe.data.text import read_lines

SHOWN = 4  # sentences per split


def pick(lengths: list[int], badness: list[float], longest: int | None = None) -> list[int]:
    """Indices: the shortest, the longest (at most ``longest``), the two worst; no repeats."""
    order = range(len(lengths))
    usable = [i for i in order if lengths[i] > 0]
    if not usable:
        return []
    capped = [i for i in usable if longest is None or lengths[i] <= longest] or usable
    chosen = [
        min(usable, key=lambda i: (lengths[i], i)),
        max(capped, key=lambda i: (lengths[i], -i)),
    ]
    chosen += sorted(usable, key=lambda i: (-badness[i], i))
    return list(dict.fromkeys(chosen))[:SHOWN]


def _decode_config(dec: Path) -> tuple[DecodeSettings, str]:
    """The decode stage's settings (one hypothesis) and checkpoint."""
    cfg = json.loads((dec / "manifest.json").read_text(encoding="utf-8"))["config"]["decode"]
    return DecodeSettings.from_config(SimpleNamespace(**cfg), nbest=1), cfg.get(
        "checkpoint", "best"
    )


def _pieces(tokenizer: Any, ids: list[int]) -> list[str]:
    """Target ids as pieces (SentencePiece) or characters (an ASR character vocabulary)."""
    if hasattr(tokenizer, "tgt"):
        return tokenizer.tgt.id_to_piece([int(i) for i in ids])
    return [tokenizer.tokens[int(i)] for i in ids]


def mt_heatmaps(
    split: str, prep: Path, dec: Path, train: Path, out: Path, bad: list[float]
) -> list[Path]:
    """The MT heatmaps of ``split`` (``bad``: per sentence, higher = worse); the PNG files."""
    from seqpipe.common.vocab import Tokenizer
    from seqpipe.mt.translate import decode_id_seqs

    src = read_lines(prep / f"{split}.src")
    tok_dir = train.parent.parent / "tokenize" / _input(train, "tokenize")
    tokenizer = Tokenizer(tok_dir)
    s, checkpoint = _decode_config(dec)
    model, _ = load_trained(train, checkpoint)
    chosen = pick([len(x.split()) for x in src], bad, longest=40)
    ids = tokenizer.encode_src([src[i] for i in chosen])
    att: list[list[np.ndarray]] = []
    nb, _ = decode_id_seqs(model, ids, s, attention=att)
    files = []
    for k, (i, seq) in enumerate(zip(chosen, ids, strict=True)):
        columns = [*tokenizer.src.id_to_piece([int(x) for x in seq]), "</s>"]
        rows = _pieces(tokenizer, nb[k][0][0])
        title = f"{split} line {i + 1}: attention (output pieces x source pieces)"
        files.append(_save(out / f"{split}_attention_{k + 1}", rows, columns, att[k][0], title))
    return files


def asr_heatmaps(split: str, dec: Path, train: Path, out: Path, bad: list[float]) -> list[Path]:
    """ASR: attention over encoder frames (attention archs) or the CTC posteriorgram."""
    from seqpipe.asr.features import FeatureStore
    from seqpipe.asr.transcribe import split_loader
    from seqpipe.common.search import decode_batch
    from seqpipe.common.vocab import load_target_tokenizer
    from seqpipe.models.asr import CTCEnsemble, pad_features
    from seqpipe.models.ctc import CTCSearchScorer

    feat_dir = train.parent.parent / "features" / _input(train, "features")
    store, tokenizer = FeatureStore(feat_dir / "feats" / split), load_target_tokenizer(feat_dir)
    load = split_loader(feat_dir, store)
    s, checkpoint = _decode_config(dec)
    model, _ = load_trained(train, checkpoint)
    if isinstance(model, CTCEnsemble):
        model = model.members[0]  # one member's posteriorgram
    s = s.resolve("asr", model.arch)
    files = []
    for k, i in enumerate(pick([int(n) for n in store.lengths], bad)):
        x, x_len = pad_features([load(i)], model.min_frames)
        with torch.inference_mode():
            marks: list[list[int]] = []
            if model.arch == "ctc":
                rows, weights, marks = _posteriorgram(model, x, x_len, tokenizer)
                what = "CTC posteriorgram (output tokens + blank x encoder frames; x: emitted)"
            else:
                att: list[list[torch.Tensor]] = []
                scorer = CTCSearchScorer(model.ctc_head) if s.search == "joint" else None
                hyp = decode_batch(model, x, x_len, s, prefix_scorer=scorer, attention=att)
                rows = _pieces(tokenizer, hyp[0][0][0])
                weights = att[0][0].float().numpy()
                what = "attention (output tokens x encoder frames)"
        columns = [str(c) for c in range(weights.shape[1])]
        title = f"{split} {store.utt_ids[i]}: {what}"
        stem = out / f"{split}_attention_{k + 1}"
        files.append(_save(stem, rows, columns, weights, title, marks))
    return files


def _posteriorgram(model: Any, x: torch.Tensor, x_len: torch.Tensor, tokenizer: Any) -> Any:
    """Rows: each emitted token's probability over frames, then the blank's: (labels, rows,
    [row, frame] of each token's emitting frame)."""
    from seqpipe.asr.ctc_search import ctc_greedy

    enc = model.encode(x, x_len)
    lp = model.ctc_head(enc.outputs)[0, : int(enc.lengths[0])]  # frames x vocab
    path = lp.argmax(-1).tolist()
    hyp = ctc_greedy(lp.unsqueeze(0), enc.lengths[:1])[0]
    probs = lp.exp().float().numpy().T  # vocab x frames
    rows = [probs[t] for t in hyp] + [probs[0]]  # blank id 0
    labels = [*_pieces(tokenizer, hyp), "<blank>"]
    emitted = [t for t in range(len(path)) if path[t] != 0 and (t == 0 or path[t] != path[t - 1])]
    marks = [[r, t] for r, t in enumerate(emitted[: len(hyp)])]  # where each token is emitted
    return labels, np.stack(rows), marks


def _input(train: Path, stage: str) -> str:
    manifest = json.loads((train / "manifest.json").read_text(encoding="utf-8"))
    return manifest["inputs"][stage]


def _save(
    stem: Path,
    rows: list[str],
    columns: list[str],
    weights: Any,
    title: str,
    marks: list[list[int]] | None = None,
) -> Path:
    """``stem.json`` (labels, weights, ``marks``: [row, column] cells) and ``stem.png`` (the
    heatmap, marks as red crosses)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = np.asarray(weights, dtype=np.float32)[: len(rows), : len(columns)]
    data = {"title": title, "rows": list(rows), "columns": list(columns)}
    data["weights"] = w.round(4).tolist()
    data["marks"] = marks or []
    stem.with_suffix(".json").write_text(json.dumps(data, ensure_ascii=False) + "\n", "utf-8")
    height, width = max(2.5, 0.25 * len(rows) + 1.2), max(5.5, 0.25 * len(columns) + 1.5)
    fig, ax = plt.subplots(figsize=(min(width, 16), min(height, 12)))
    ax.imshow(w, aspect="auto", cmap="viridis", vmin=0, vmax=max(1e-6, float(w.max(initial=0))))
    if marks:
        ax.scatter([c for _, c in marks], [r for r, _ in marks], marker="x", c="red", s=18)
    every = max(1, len(columns) // 40)  # long frame axes: a label every few columns
    ax.set_xticks(range(0, len(columns), every), columns[::every], rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    png = stem.with_suffix(".png")
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
