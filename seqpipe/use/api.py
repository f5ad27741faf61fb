"""Use what was trained: load a model and translate or transcribe.

    from seqpipe import load_model
    m = load_model("exp/mt_small")               # or a recipe, a train artifact, a .spt file
    m.translate(["A man is riding a bike."])     # -> ["Ein Mann fährt Fahrrad."]
    m.translate(["A man."], beam=10, nbest=3)    # -> [[Hypothesis(text, score), ...]]
    load_model("exp/asr_yesno").transcribe(["a.wav", "b.wav"])

``MODEL`` is one of

- an experiment folder ``exp/<name>`` (its ``train`` link and ``recipe.yaml``; ``decode.*``
  overrides only),
- a recipe file (its keys are computed and the artifacts looked up in the workspace cache;
  overrides as for ``seqpipe run``),
- a train artifact ``cache/train/<key>``,
- a file written by ``seqpipe export`` (see :mod:`seqpipe.use.export`; no cache needed).

The tokenizer (MT) or feature settings and vocabulary (ASR) are those the model was trained
with: the train artifact's manifest names its upstream artifact. Decoding defaults (search,
beam, length penalty, checkpoint, batch size) come from the recipe's ``decode:`` section;
``nbest`` is 1 unless asked for.

:meth:`Model.decode_stream` is the one code path behind :meth:`Model.translate`,
:meth:`Model.transcribe` and the ``seqpipe decode|translate|transcribe`` commands: inputs are
read in chunks (10,000 sentences, 256 audio files) so memory stays flat whatever the input
size; each chunk is decoded with :func:`seqpipe.mt.translate.decode_id_seqs` (MT) or
:func:`seqpipe.asr.transcribe.transcribe` (ASR) in length-sorted batches, and results come back
in input order. Text goes through :func:`seqpipe.data.text.normalize` exactly as in the
prepare stage; an empty (or all-whitespace) line gives an empty output. Under ``torchrun``
(an initialised ``torch.distributed`` group with more than one process) each chunk is split
across the ranks and rank 0 gets the results back in input order.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from seqpipe.common.settings import DecodeSettings
from seqpipe.errors import InputError

TEXT_CHUNK = 10_000  # sentences decoded per chunk
AUDIO_CHUNK = 256  # audio files per chunk (features of a chunk are held in memory)
BUNDLE_FORMAT = "seqpipe-model"


class Hypothesis(NamedTuple):
    text: str
    score: float  # log-probability with the length penalty (0.0 for greedy searches)
    # MT with alignment=True: "src-out" word pairs (Pharaoh), from the hypothesis's attention
    alignment: str | None = None


# ------------------------------------------------------------------------------------ sources
@dataclass
class ModelSource:
    """Where a model's files are: a train artifact (+ its tokenizer/features artifact) in a
    cache, or an exported bundle."""

    description: str
    task: str
    decode_cfg: Any  # the recipe's decode section (its task's class)
    recipe_text: str | None
    train_dir: Path | None = None
    tok_dir: Path | None = None  # tokenize (MT) or features (ASR) artifact
    bundle: dict[str, Any] | None = None

    def manifest(self) -> dict[str, Any]:
        if self.train_dir is None:
            return {}
        return _read_json(self.train_dir / "manifest.json")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: not found") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable ({exc})") from None


def _decode_config(raw: dict[str, Any] | None, where: str, task: str) -> Any:
    from pydantic import ValidationError

    from seqpipe.core.recipe import recipe_class

    try:
        return recipe_class(task).model_fields["decode"].annotation(**(raw or {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(x) for x in first["loc"])
        raise InputError(f"{where}: decode.{key}: {first['msg']}") from None


def _recipe_decode(recipe_file: Path) -> tuple[Any, str | None]:
    import yaml

    from seqpipe.core.recipe import TASKS

    if not recipe_file.is_file():
        return None, None
    text = recipe_file.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{recipe_file}: invalid YAML ({exc})") from None
    task = raw.get("task") if raw.get("task") in TASKS else "mt"
    return _decode_config(raw.get("decode"), str(recipe_file), task), text


def _experiment_decode(recipe_file: Path, overrides: Sequence[str]) -> tuple[Any, str]:
    """An experiment's decode settings with ``decode.*`` overrides applied (its model is
    trained: other keys cannot change it)."""
    from seqpipe.core.recipe import dump_recipe, load_recipe
    from seqpipe.core.schema import parse_override

    for o in overrides:
        if parse_override(o)[0][0] != "decode":
            raise InputError(
                f"override {o!r}: an experiment folder takes decode.* overrides only "
                "(its model is trained); give the recipe to change others"
            )
    if not recipe_file.is_file():
        raise InputError(f"{recipe_file}: not found (overrides need the experiment's recipe)")
    recipe = load_recipe(recipe_file, list(overrides))
    return recipe.decode, dump_recipe(recipe)


def _from_train_dir(
    train_dir: Path, description: str, decode_cfg: Any = None, recipe_text: str | None = None
) -> ModelSource:
    train_dir = train_dir.resolve()
    manifest = _read_json(train_dir / "manifest.json")
    task = manifest.get("task", "mt")
    up = "tokenize" if task == "mt" else "features"
    key = manifest.get("inputs", {}).get(up)
    if not key:
        raise InputError(f"{train_dir}/manifest.json: no {up} input recorded")
    tok_dir = train_dir.parent.parent / up / key
    if not (tok_dir / "manifest.json").is_file():
        raise InputError(
            f"{tok_dir}: the {up} artifact this model was trained with is missing from the cache"
        )
    if decode_cfg is None:
        decode_cfg = _decode_config({}, description, task)
    return ModelSource(description, task, decode_cfg, recipe_text, train_dir, tok_dir)


def resolve_model(
    model: str | Path, workspace: str | Path = ".", overrides: Sequence[str] = ()
) -> ModelSource:
    """Find a model's files from what the user typed (see the module docstring)."""
    p = Path(model)
    if not p.exists() and not p.is_absolute() and (Path(workspace) / p).exists():
        p = Path(workspace) / p
    if not p.exists():
        raise InputError(f"{model}: no such experiment folder, recipe or model file")
    if p.is_dir():
        if (p / "model.json").is_file() and (p / "manifest.json").is_file():
            return _from_train_dir(p, str(model))
        if (p / "train").exists() or (p / "recipe.yaml").is_file():
            train = p / "train"
            if not (train / "manifest.json").is_file():
                raise InputError(
                    f"{model}: no trained model here (no finished train/ link); "
                    f"run `seqpipe run {p / 'recipe.yaml'} --to train` first"
                )
            if overrides:
                cfg, text = _experiment_decode(p / "recipe.yaml", overrides)
            else:
                cfg, text = _recipe_decode(p / "recipe.yaml")
            return _from_train_dir(train, str(model), cfg, text)
        raise InputError(
            f"{model}: not an experiment folder (no train/ link or recipe.yaml) "
            "nor a train artifact (no model.json)"
        )
    if p.suffix in (".yaml", ".yml"):
        return _from_recipe(p, workspace, overrides)
    if overrides:
        raise InputError(f"{model}: overrides apply to recipes only")
    return _from_bundle(p)


def _from_recipe(path: Path, workspace: str | Path, overrides: Sequence[str]) -> ModelSource:
    from seqpipe.core.pipeline import Pipeline
    from seqpipe.core.recipe import dump_recipe, load_recipe

    recipe = load_recipe(path, list(overrides))
    pipe = Pipeline(recipe, workspace)
    key = pipe.keys()["train"]
    art = pipe.store.get("train", key)
    if art is None:
        partial = pipe.store.partial_dir("train", key).exists()
        hint = "training was interrupted; rerun" if partial else "run"
        raise InputError(
            f"{path}: the train stage has not finished for this recipe in "
            f"{pipe.workspace} (key {key}); {hint} `seqpipe run {path} "
            f"{' '.join(overrides)}{' ' if overrides else ''}--to train` first"
        )
    return _from_train_dir(art.path, str(path), recipe.decode, dump_recipe(recipe))


def _from_bundle(path: Path) -> ModelSource:
    import torch

    with open(path, "rb") as f:
        magic = f.read(4)
    if magic[:2] != b"PK":
        raise InputError(
            f"{path}: not a recipe (.yaml) nor a model file written by `seqpipe export`"
        )
    try:
        bundle = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise InputError(
            f"{path}: cannot read the model file ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    if not isinstance(bundle, dict) or bundle.get("format") != BUNDLE_FORMAT:
        raise InputError(f"{path}: not a model file written by `seqpipe export`")
    if int(bundle.get("format_version", 0)) > 1:
        raise InputError(
            f"{path}: written by a newer seqpipe (format "
            f"{bundle['format_version']}); upgrade seqpipe"
        )
    cfg = _decode_config(bundle.get("decode"), str(path), bundle["task"])
    return ModelSource(str(path), bundle["task"], cfg, bundle.get("recipe"), bundle=bundle)


# ------------------------------------------------------------------------------------ model
def _tokenizer_from_bytes(files: dict[str, bytes]) -> Any:
    """A :class:`~seqpipe.common.vocab.Tokenizer` from SentencePiece model bytes
    (``spm.model`` or ``src.model`` + ``tgt.model``)."""
    from seqpipe.common.vocab import Tokenizer

    with tempfile.TemporaryDirectory(prefix="seqpipe-spm-") as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
        return Tokenizer(Path(tmp))  # SentencePiece reads the file into memory


class Model:
    """A trained model ready to use. Build it with :func:`load_model`."""

    def __init__(
        self,
        source: ModelSource,
        *,
        checkpoint: str | None = None,
        device: str | None = None,
        threads: int | None = None,
        quantize: str | None = None,
    ):
        import torch

        from seqpipe.common.trainer import pick_device

        self.source = source
        self.task = source.task
        cfg = source.decode_cfg
        self.checkpoint = checkpoint or cfg.checkpoint
        self._asked_checkpoint = checkpoint
        wanted = device or cfg.device
        if (quantize or cfg.quantize) == "int8" and wanted == "auto":
            wanted = "cpu"  # int8 dynamic quantization decodes on the CPU
        self.device = pick_device(wanted)
        if threads:
            torch.set_num_threads(threads)
        self.settings = DecodeSettings.from_config(cfg, nbest=1)
        self.recipe_text = source.recipe_text
        self.features: dict[str, Any] = {}
        self.cmvn: tuple[Any, Any] | None = None
        self.utterance_norm = "none"  # ASR, after CMVN: none | mean | meanvar (per utterance)
        self.speaker_cmn = "none"  # ASR: none | eval | all (used when speakers are known)
        self.adapt = getattr(cfg, "adapt", "none")  # ASR: the recipe's decode.adapt
        self._shortlist: Any = None  # MT lexical shortlist table, built on first use
        if source.bundle is not None:
            self._load_bundle(source.bundle)
        else:
            self._load_artifacts()
        from seqpipe.common.checkpoint import QUANTIZE_CHOICES, quantize_int8

        self.quantize = quantize or cfg.quantize
        if self.quantize not in QUANTIZE_CHOICES:
            raise InputError(f"quantize {self.quantize!r}: use {' or '.join(QUANTIZE_CHOICES)}")
        if self.quantize == "int8":
            self.model = quantize_int8(self.model, self.device)

    # -- loading
    def _load_artifacts(self) -> None:
        from seqpipe.common.checkpoint import load_trained

        assert self.source.train_dir is not None and self.source.tok_dir is not None
        train_dir, tok_dir = self.source.train_dir, self.source.tok_dir
        self.model, self.spec = load_trained(train_dir, self.checkpoint, self.device)
        if self.task == "mt":
            from seqpipe.common.vocab import Tokenizer

            self.tokenizer = Tokenizer(tok_dir)
        else:
            from seqpipe.asr.transcribe import feature_settings
            from seqpipe.common.vocab import load_target_tokenizer

            self.tokenizer = load_target_tokenizer(tok_dir)
            if not (tok_dir / "stats.json").is_file():
                raise InputError(f"{tok_dir / 'stats.json'}: not found")
            feats = feature_settings(tok_dir)
            self.cmvn, self.utterance_norm = feats.pop("cmvn"), feats.pop("utterance_norm")
            self.speaker_cmn = feats.pop("speaker_cmn")
            self.features = feats

    def _load_bundle(self, b: dict[str, Any]) -> None:
        import numpy as np

        stored = b.get("checkpoint", "best")
        if self._asked_checkpoint is not None and self._asked_checkpoint != stored:
            raise InputError(
                f"{self.source.description}: holds the {stored} checkpoint only "
                f"(export again with --checkpoint {self.checkpoint})"
            )
        self.checkpoint = stored
        self.spec = json.loads(b["model_json"])
        tok = b["tokenizer"]
        if tok["type"] == "char":
            from seqpipe.common.vocab import CharTokenizer

            tokens = json.loads(tok["chars_json"])["tokens"]
            self.tokenizer = CharTokenizer(tokens[len(CharTokenizer.SPECIALS) :])
        else:
            self.tokenizer = _tokenizer_from_bytes(
                {name: bytes(t.numpy().tobytes()) for name, t in tok["files"].items()}
            )
        from seqpipe.common.checkpoint import build_model

        model = build_model(self.spec)
        if self.task == "asr":
            feats = b["features"]
            self.features = {
                "num_mel_bins": int(feats["num_mel_bins"]),
                "sample_rate": int(feats["sample_rate"]),
            }
            if feats.get("cmvn_mean") is not None:
                self.cmvn = (
                    feats["cmvn_mean"].numpy().astype(np.float32),
                    feats["cmvn_std"].numpy().astype(np.float32),
                )
            self.utterance_norm = str(feats.get("utterance_norm", "none"))
            self.speaker_cmn = str(feats.get("speaker_cmn", "none"))
            if feats.get("token_counts") is not None:  # not in bundles before decode.adapt_prior
                self.features["token_counts"] = feats["token_counts"].numpy()
        model.load_state_dict(b["state_dict"])
        self.model = model.to(self.device).eval()

    def __repr__(self) -> str:
        return (
            f"Model({self.source.description!r}, task={self.task}, "
            f"checkpoint={self.checkpoint}, device={self.device})"
        )

    # -- the public calls
    def translate(
        self,
        sentences: str | Iterable[str],
        *,
        beam: int | None = None,
        nbest: int | None = None,
        **settings: Any,
    ) -> Any:
        """Translate sentences (one string or an iterable of strings).

        :return: one translation per sentence (a string; with ``nbest > 1`` or
            ``alignment=True`` a list of :class:`Hypothesis`, with ``alignment`` set: Pharaoh
            word pairs), in input order; a single string gives a single result. Other
            keywords: ``search``, ``alpha``, ``max_len_a``, ``max_len_b``, ``batch_tokens``,
            ``alignment``.
        """
        if self.task != "mt":
            raise InputError(
                f"{self.source.description} is a speech recognition model: use transcribe()"
            )
        return self._call(sentences, beam=beam, nbest=nbest, **settings)

    def transcribe(
        self,
        audio: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        *,
        speakers: str | Sequence[str] | None = None,
        adapt: str | None = None,
        beam: int | None = None,
        nbest: int | None = None,
        **settings: Any,
    ) -> Any:
        """Transcribe audio files (a path or an iterable of paths; wav, flac, ...).

        :param speakers: each file's speaker (one name for all, or one per file; "" unknown):
            the files are then decoded together as the decode stage decodes a split: each
            speaker's mean removed (the recipe's ``features.speaker_cmn``) and, with ``adapt``
            ``lin`` (default: the recipe's ``decode.adapt``), two-pass speaker adaptation
        :return: one transcript per file (with ``nbest > 1`` a list of :class:`Hypothesis`)
        """
        if self.task != "asr":
            raise InputError(f"{self.source.description} is a translation model: use translate()")
        single = isinstance(audio, (str, os.PathLike))
        paths = [str(audio)] if single else [str(a) for a in audio]  # type: ignore[union-attr]
        if adapt not in (None, "none", "lin"):
            raise InputError(f"adapt {adapt!r}: use none or lin")
        chunk = None
        if speakers is not None:
            names = [speakers] * len(paths) if isinstance(speakers, str) else list(speakers)
            if len(names) != len(paths):
                raise InputError(f"{len(names)} speakers for {len(paths)} audio files")
            paths = [f"{p}\t{spk}" for p, spk in zip(paths, names, strict=True)]
            chunk = max(1, len(paths))  # a speaker's files are normalised and adapted together
        kept, self.adapt = self.adapt, adapt or self.adapt
        try:
            out = self._call(paths, chunk, beam=beam, nbest=nbest, **settings)
        finally:
            self.adapt = kept
        return out[0] if single else out

    def _call(self, items: str | list[str], chunk: int | None = None, **kw: Any) -> Any:
        single = isinstance(items, str)
        s = self.decode_settings(**kw)
        results = list(self.decode_stream([items] if single else items, s, chunk_size=chunk))
        out = [r[0].text for r in results] if s.nbest == 1 and not s.alignment else results
        return out[0] if single else out

    def decode_settings(self, **kw: Any) -> DecodeSettings:
        """This model's defaults with the given keywords (``beam``, ``nbest``, ``search``,
        ``alpha``, ``max_len_a``, ``max_len_b``, ``ctc_weight``, ``batch_tokens``, ``shortlist``,
        ``shortlist_frequent``) applied; ``auto`` resolved for the model's arch."""
        return self.settings.override(**kw).resolve(self.task, getattr(self.model, "arch", None))

    # -- the shared code path
    def decode_stream(
        self,
        items: Iterable[str],
        settings: DecodeSettings | None = None,
        *,
        chunk_size: int | None = None,
        on_chunk: Any = None,
    ) -> Iterator[list[Hypothesis]]:
        """Decode sentences (MT) or audio paths (ASR) chunk by chunk; yields one n-best list
        per input, in input order. ``on_chunk(n)`` is called after each chunk of ``n`` inputs
        (progress bars). Under ``torchrun`` every rank must call this; only rank 0 needs the
        input and gets the results (the other ranks' iterators yield nothing)."""
        s = settings or self.decode_settings()
        n = chunk_size or (TEXT_CHUNK if self.task == "mt" else AUDIO_CHUNK)
        world, rank = _world()
        if world > 1:
            yield from self._sharded(items, s, n, world, rank, on_chunk)
            return
        for chunk in _chunks(items, n):
            yield from self.decode_chunk(chunk, s)
            if on_chunk is not None:
                on_chunk(len(chunk))

    def decode_chunk(self, items: list[str], s: DecodeSettings) -> list[list[Hypothesis]]:
        """Decode one chunk held in memory (length-sorted batches, input order kept)."""
        if self.task == "mt":
            return self._translate_chunk(items, s)
        return self._transcribe_chunk(items, s)

    def _translate_chunk(self, lines: list[str], s: DecodeSettings) -> list[list[Hypothesis]]:
        from seqpipe.data.text import normalize
        from seqpipe.mt.translate import decode_id_seqs

        norm = [normalize(x) for x in lines]
        keep = [i for i, x in enumerate(norm) if x]
        ids = self.tokenizer.encode_src([norm[i] for i in keep]) if keep else []
        shortlist = self._lexical_shortlist() if s.shortlist else None
        att: list[Any] | None = [] if s.alignment else None
        nb, _ = decode_id_seqs(
            self.model, ids, s, device=self.device, shortlist=shortlist, attention=att
        )
        out = self._texts(len(lines), keep, nb)
        if att is not None:
            self._add_alignments(out, keep, ids, nb, att)
        return out

    def _add_alignments(
        self, out: list[list[Hypothesis]], keep: list[int], ids: Any, nb: Any, att: list[Any]
    ) -> None:
        """Each hypothesis of ``out`` with its word alignment (empty inputs: "")."""
        from seqpipe.mt.alignment import pharaoh

        for i in range(len(out)):
            out[i] = [h._replace(alignment="") for h in out[i]]
        piece = self.tokenizer.tgt.id_to_piece
        for n, i in enumerate(keep):
            src = self.tokenizer.src.id_to_piece([int(x) for x in ids[n]])
            out[i] = [
                h._replace(alignment=pharaoh(src, piece([int(x) for x in toks]), a))
                for h, (toks, _), a in zip(out[i], nb[n], att[n], strict=True)
            ]

    def _lexical_shortlist(self) -> Any:
        """The MT model's lexical shortlist table (built once from the training split, or read
        from the exported file)."""
        if self._shortlist is None:
            from seqpipe.mt.shortlist import LexicalShortlist

            if self.source.bundle is not None:
                if "shortlist" not in self.source.bundle:
                    raise InputError(
                        f"{self.source.description}: exported without a shortlist "
                        "table (export it again with this version of seqpipe)"
                    )
                self._shortlist = LexicalShortlist.from_tensors(self.source.bundle["shortlist"])
            else:
                assert self.source.tok_dir is not None
                self._shortlist = LexicalShortlist.from_tokenized(
                    self.source.tok_dir, self.spec["src_vocab_size"], self.spec["tgt_vocab_size"]
                )
        return self._shortlist

    def _transcribe_chunk(self, items: list[str], s: DecodeSettings) -> list[list[Hypothesis]]:
        """Audio paths, each maybe followed by TAB and its speaker: with speakers, the chunk
        is normalised per speaker and adapted as the decode stage does a split."""
        import numpy as np

        from seqpipe.asr.features import fbank, load_wave
        from seqpipe.asr.transcribe import speaker_normalized, transcribe

        sr, bins = self.features["sample_rate"], self.features["num_mel_bins"]
        rows = [item.strip().split("\t") for item in items]
        keep = [i for i, r in enumerate(rows) if r[0]]
        speakers = [rows[i][1] if len(rows[i]) > 1 else "" for i in keep]
        raw = [  # float16 values, as stored by the features stage
            fbank(load_wave(rows[i][0], sr), sr, bins).numpy().astype(np.float16).astype(np.float32)
            for i in keep
        ]
        if not raw:
            return [[Hypothesis("", 0.0)] for _ in items]
        known = any(speakers)
        spk_cmn = self.speaker_cmn if known else "none"
        feats = speaker_normalized(raw, speakers, self.cmvn, self.utterance_norm, spk_cmn)
        lengths = np.array([len(f) for f in feats], dtype=np.int64)
        if known and self.adapt == "lin":
            nb = self._adapted(lengths, feats, speakers, s)
        else:
            nb, _ = transcribe(self.model, lengths, feats.__getitem__, s, device=self.device)
        return self._texts(len(items), keep, nb)

    def _adapted(
        self, lengths: Any, feats: list[Any], speakers: list[str], s: DecodeSettings
    ) -> list[list[tuple[list[int], float]]]:
        """The decode stage's two-pass adaptation (``decode.adapt: lin``) per speaker."""
        import logging

        import yaml

        from seqpipe.asr.adapt import adapt_as_configured
        from seqpipe.core.recipe import recipe_class

        raw = yaml.safe_load(self.recipe_text or "") or {}
        recipe = recipe_class("asr").model_validate({**raw, "task": "asr"})
        out = adapt_as_configured(
            self.model,
            lengths,
            feats.__getitem__,
            speakers,
            self.source.decode_cfg,
            seed=recipe.seed,
            loss_ctc_weight=recipe.train.ctc_weight,
            settings=s,
            device=self.device,
            log=logging.getLogger("seqpipe"),
            token_counts=self.features.get("token_counts"),
        )
        return out["nbest"]

    def _texts(
        self, n: int, keep: list[int], nb: list[list[tuple[list[int], float]]]
    ) -> list[list[Hypothesis]]:
        flat = [h for hyps in nb for h, _ in hyps]
        texts = iter(self.tokenizer.decode_tgt(flat) if flat else [])
        out = [[Hypothesis("", 0.0)] for _ in range(n)]
        for i, hyps in zip(keep, nb, strict=True):
            out[i] = [Hypothesis(next(texts), float(sc)) for _, sc in hyps] or [Hypothesis("", 0.0)]
        return out

    def _sharded(
        self, items: Iterable[str], s: DecodeSettings, n: int, world: int, rank: int, on_chunk: Any
    ) -> Iterator[list[Hypothesis]]:
        """Rank 0 reads ``n * world`` inputs, scatters a contiguous slice to each rank, every
        rank decodes its slice, rank 0 gathers the slices back in order; a ``None`` chunk
        ends the loop on every rank."""
        import torch.distributed as dist

        it = iter(items) if rank == 0 else iter(())
        chunks = _chunks(it, n * world)
        while True:
            scatter: list[Any] = [None] * world
            if rank == 0:
                chunk = next(chunks, None)
                if chunk is not None:
                    per = -(-len(chunk) // world)
                    scatter = [chunk[r * per : (r + 1) * per] for r in range(world)]
            mine: list[Any] = [None]
            dist.scatter_object_list(mine, scatter if rank == 0 else None, src=0)
            part = mine[0]
            if part is None:
                return
            res = self.decode_chunk(part, s) if part else []
            gathered: list[Any] = [None] * world if rank == 0 else []
            dist.gather_object(res, gathered if rank == 0 else None, dst=0)
            if rank == 0:
                total = 0
                for r in gathered:
                    total += len(r)
                    yield from r
                if on_chunk is not None:
                    on_chunk(total)


def _world() -> tuple[int, int]:
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return 1, 0
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _chunks(items: Iterable[str], n: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for x in items:
        chunk.append(x)
        if len(chunk) >= n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def load_model(
    model: str | os.PathLike[str],
    *,
    workspace: str | os.PathLike[str] = ".",
    overrides: Sequence[str] = (),
    checkpoint: str | None = None,
    device: str | None = None,
    threads: int | None = None,
    quantize: str | None = None,
) -> Model:
    """Load a trained model: an experiment folder (``exp/mt_small``), a recipe (with
    ``overrides``, looked up in ``workspace``'s cache), a train artifact or an exported file.

    :param checkpoint: ``best`` | ``last`` | ``averaged`` (default: the recipe's
        ``decode.checkpoint``; an exported file holds one)
    :param device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (default: the recipe's
        ``decode.device``)
    :param threads: torch CPU threads (default: leave torch's setting alone)
    :param quantize: ``none`` | ``int8`` (CPU: int8 dynamic quantization of the Linear/GRU/LSTM
        weights; default: the recipe's ``decode.quantize``)
    """
    if checkpoint is not None and checkpoint not in ("best", "last", "averaged"):
        raise InputError(f"checkpoint {checkpoint!r}: use best, last or averaged")
    src = resolve_model(str(model), workspace, overrides)
    return Model(src, checkpoint=checkpoint, device=device, threads=threads, quantize=quantize)
