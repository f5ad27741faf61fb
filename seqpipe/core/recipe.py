"""Recipes: YAML files validated once into typed objects, one schema per task.

A recipe is an MT recipe (:class:`seqpipe.mt.config.MTRecipe`) or an ASR recipe
(:class:`seqpipe.asr.config.ASRRecipe`), chosen by its ``task`` key; each task's module declares
its sections and its stage graph, over the shared sections defined here. Loading does, in order:

1. ``yaml.safe_load`` of the file (a syntax error names the file and line),
2. command-line overrides ``a.b=c`` (values parsed as YAML scalars, unknown keys rejected),
3. pydantic validation with ``extra="forbid"`` — errors name the key path, the file, the line
   and, for unknown keys, the closest known key (``train.lerning_rate: unknown key; did you
   mean lr?``) or the task the key belongs to (``train.spec_augment: an ASR key; this recipe's
   task is mt``).

The rules of fields and cache keys are in :mod:`seqpipe.core.schema`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from seqpipe.core.schema import (
    Section,
    check_override_key,
    fields_of,
    format_errors,
    line_map,
    newkey,
    nokey,
    parse_override,
    set_override,
)
from seqpipe.core.stage import StageSpec
from seqpipe.errors import InputError

TASKS = {"mt": "MT", "asr": "ASR"}  # task -> its name in messages; seqpipe.<task>.config


# --------------------------------------------------------------------------------------------
# sections both tasks have (each task's config module extends them)


class DataConfig(Section):
    dataset: str = ""  # registry name, or a local kind
    # our split name -> the dataset's split name
    splits: dict[str, str] = Field(
        default_factory=lambda: {"train": "train", "valid": "val", "test": "test_2016_flickr"}
    )
    # share of the data held out as valid when the dataset has no valid split (seeded)
    valid_fraction: float = Field(0.01, ge=0, lt=0.5)
    # share held out as test when the data is one pool
    test_fraction: float = Field(0.01, ge=0, lt=0.5)


class TokenizeConfig(Section):
    model_type: Literal["unigram", "bpe", "char"] = "unigram"
    vocab_size: int = Field(8000, ge=8)
    character_coverage: float = Field(1.0, gt=0, le=1)
    # input_sentence_size for SentencePiece training
    max_sentencepiece_sentences: int = Field(2_000_000, ge=1)
    threads: int = nokey(2)  # SentencePiece trainer threads


class ModelConfig(Section):
    """The recurrent encoder-decoder with attention (MT; the decoder of ASR's attention archs)."""

    cell: Literal["gru", "lstm", "rnn_tanh", "rnn_relu"] = "gru"
    emb_size: int = Field(256, ge=1)
    hidden_size: int = Field(256, ge=1)  # per direction in the encoder
    enc_layers: int = Field(1, ge=1)
    dec_layers: int = Field(1, ge=1)
    bidirectional: bool = True
    attention: Literal["bahdanau", "luong", "location"] = "bahdanau"
    luong_score: Literal["general", "dot"] = "general"
    # previous: the previous state queries, the context feeds the RNN (Bahdanau); current: the RNN's
    # new state queries (Luong, Joey NMT); auto: previous for bahdanau/location, current for luong
    attention_query: Literal["auto", "previous", "current"] = "auto"
    input_feeding: bool = True
    bridge: bool = True
    dropout: float = Field(0.3, ge=0, lt=1)
    tied_embeddings: bool = False

    @model_validator(mode="after")
    def _buildable(self) -> ModelConfig:
        """What the model's constructors would refuse, refused when the recipe loads."""
        enc_out = self.hidden_size * (2 if self.bidirectional else 1)
        if self.tied_embeddings and self.emb_size != self.hidden_size:
            raise ValueError(
                f"model.tied_embeddings: needs model.emb_size ({self.emb_size}) == "
                f"model.hidden_size ({self.hidden_size})"
            )
        if self.attention == "luong" and self.luong_score == "dot" and enc_out != self.hidden_size:
            raise ValueError(
                "model.luong_score: dot needs the encoder's output size (2 x hidden_size when "
                "bidirectional) == hidden_size; use general or bidirectional: false"
            )
        return self


class TrainConfig(Section):
    device: str = nokey("auto")  # auto | cpu | cuda | cuda:N
    threads: int = nokey(2)  # torch.set_num_threads on CPU
    amp: Literal["none", "bf16", "fp16"] = "none"
    max_tokens: int = Field(4000, ge=1)  # real source+target tokens per batch
    max_sentences: int = Field(512, ge=1)
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    scheduler: Literal["constant", "plateau", "inverse_sqrt", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    plateau_factor: float = Field(0.5, gt=0, lt=1)
    plateau_patience: int = Field(2, ge=0)
    min_lr: float = Field(1e-6, ge=0)
    clip_grad_norm: float = Field(1.0, ge=0)  # 0 = off
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    max_epochs: int = Field(30, ge=1)
    max_steps: int | None = Field(None, ge=1)
    # stop after this much training time (checkpointed, resumable)
    max_minutes: float | None = Field(None, gt=0)
    valid_every: int = Field(500, ge=1)  # validate every N updates (and per epoch)
    valid_metric: str = "loss"  # each task narrows it
    valid_max_sentences: int | None = Field(None, ge=1)
    patience: int = Field(8, ge=0)  # early stopping: validations without improvement
    keep_best: int = Field(3, ge=1)
    average_last: int = Field(0, ge=0)  # average the k best checkpoints at the end
    max_nan_batches: int = Field(20, ge=0)
    # curriculum: the first N epochs take their batches shortest first
    sortagrad: int = Field(0, ge=0)
    # seed of initialisation, batch order and SpecAugment (null: the recipe's seed); another value
    # trains another model on the same data (e.g. ensemble members)
    seed: int | None = newkey(None)
    log_every: int = nokey(50)  # log a line every N updates
    progress: bool = nokey(True)  # show a progress bar
    # write TensorBoard events into the artifact's tb/ (when the tensorboard package is installed)
    tensorboard: bool = nokey(True)
    # processes that build batches ahead of training (0: in the training loop)
    workers: int = nokey(0)
    # torchrun: minutes a rank waits in a collective (e.g. while rank 0 validates)
    dist_timeout: int = nokey(60)


class DecodeConfig(Section):
    search: str = "beam"  # each task narrows it
    beam_size: int = Field(5, ge=1)
    alpha: float = Field(1.0, ge=0)  # GNMT length penalty
    max_len_a: float = Field(1.5, ge=0)
    max_len_b: int = Field(5, ge=0)
    nbest: int = Field(1, ge=1)
    checkpoint: Literal["best", "last", "averaged"] = "best"
    # CPU decoding: int8 dynamic quantization of the Linear/GRU/LSTM weights
    quantize: Literal["none", "int8"] = "none"
    batch_tokens: int = nokey(6000)  # source tokens (ASR: feature frames) per decoding batch
    splits: list[str] = Field(default_factory=lambda: ["test"])
    device: str = nokey("auto")
    threads: int = nokey(2)


# --------------------------------------------------------------------------------------------
# the recipe


class Recipe(Section):
    """What both tasks' recipes have; :func:`load_recipe` returns a task's subclass."""

    name: str = ""  # experiment name (default: the recipe file's stem)
    task: str = "mt"
    seed: int = 1234
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    decode: DecodeConfig

    def train_seed(self) -> int:
        """``train.seed``, or the recipe's seed when it is not set."""
        return self.seed if self.train.seed is None else self.train.seed

    def stage_graph(self) -> list[StageSpec]:
        """The stages of this recipe, in order: prepare, the task's own, score. A stage's
        key hashes what it reads (``sections``) and its inputs' keys."""
        m = f"seqpipe.{self.task}.stages."
        return [
            StageSpec(
                "prepare",
                2,
                m + "prepare",
                ("task", "seed", "data"),
                (),
                extra_key=lambda r: r.data_fingerprint(),
            ),
            *self.task_stages(m),
            StageSpec("score", 2, m + "score", ("task", "score"), ("prepare", "decode")),
        ]

    def task_stages(self, module_prefix: str) -> list[StageSpec]:
        """The stages between prepare and score (each task has its own)."""
        raise NotImplementedError

    def data_fingerprint(self) -> Any:
        """What identifies the input data (part of the prepare key)."""
        raise NotImplementedError

    # where the recipe came from (not part of the schema)
    _path: Path | None = None
    _overrides: tuple[str, ...] = ()  # as given on the command line

    @property
    def path(self) -> Path | None:
        return self._path


def model_summary(model: dict[str, Any], members: int = 1) -> str:
    """A recipe's ``model:`` section in one line, for logs and the leaderboard:
    ``biGRU 256x1→256x1 luong`` (MT) / ``ctc conv2d biGRU 64x1 x2`` (ASR, an ensemble of 2)."""
    cell = str(model.get("cell", "?")).upper()
    bi = "bi" if model.get("bidirectional") else ""
    enc = f"{bi}{cell} {model.get('hidden_size')}x{model.get('enc_layers')}"
    arch = model.get("arch", "attention")
    prefix = "" if arch == "attention" else f"{arch} "
    if "subsampling" in model and arch != "attention":
        prefix += f"{model.get('subsampling')} "
    ensemble = f" x{members}" if members > 1 else ""
    if arch == "ctc":
        return f"{prefix}{enc}{ensemble}"
    dec = f"{model.get('hidden_size')}x{model.get('dec_layers')} {model.get('attention')}"
    if model.get("input_feeding") and model.get("attention") != "location":
        dec += "+if"
    return f"{prefix}{enc}→{dec}{ensemble}"


def recipe_class(task: str) -> type[Recipe]:
    """The recipe schema of ``task`` (``seqpipe.<task>.config.RECIPE``)."""
    return importlib.import_module(f"seqpipe.{task}.config").RECIPE


def _other_task_hint(task: str):
    """For an unknown key path: say so when another task's recipe has it."""

    def hint(parts: tuple[str, ...]) -> str | None:
        for other, label in TASKS.items():
            if other != task and parts[-1] in fields_of(recipe_class(other), parts[:-1]):
                return f"an {label} key; this recipe's task is {task}"
        return None

    return hint


# --------------------------------------------------------------------------------------------
# loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for k, _ in node.value:
            key = self.construct_object(k, deep=True)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", k.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _read_yaml(path: Path) -> tuple[str, dict[str, Any]]:
    if not path.is_file():
        raise InputError(f"{path}: recipe file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not valid UTF-8 (byte {exc.start})") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"{where}: invalid YAML: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError(
            f"{path}: a recipe must be a mapping of sections, got {type(raw).__name__}"
        )
    return text, raw


def _task_of(raw: dict[str, Any], overrides: list[tuple[str, list[str], Any]], where: str) -> str:
    """The recipe's task, an override of it included; one line if it names no task."""
    task = raw.get("task", "mt")
    for text, parts, value in overrides:
        if parts == ["task"]:
            task, where = value, f"override {text!r}"
    if task not in TASKS:
        raise InputError(f"{where}: task: {task!r} is not a task; use {' or '.join(TASKS)}")
    return task


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe. Raises InputError with one readable line: the
    file and line, or the override, and the key."""
    path = Path(path)
    text, raw = _read_yaml(path)
    lines = line_map(text)
    parsed = [(o, *parse_override(o)) for o in overrides or []]
    where = f"{path}:{lines[('task',)]}" if ("task",) in lines else str(path)
    task = _task_of(raw, parsed, where)
    schema, hint = recipe_class(task), _other_task_hint(task)
    for o, parts, value in parsed:
        check_override_key(schema, o, parts, hint)
        set_override(raw, o, parts, value)
    try:
        recipe = schema.model_validate(raw)
    except ValidationError as exc:
        given = {tuple(parts): o for o, parts, _ in parsed}
        raise InputError(format_errors(exc, str(path), lines, schema, hint, given)) from None
    if not recipe.name:
        recipe.name = path.stem
    recipe._path, recipe._overrides = path.resolve(), tuple(overrides or ())
    _resolve_local_paths(recipe, path.resolve().parent)
    return recipe


def _resolve_local_paths(recipe: Recipe, base: Path) -> None:
    """Relative data paths in a recipe are relative to the recipe's folder."""

    def resolve(p: str) -> str:
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else (base / q).resolve())

    for split in (getattr(recipe.data, "local", None) or {}).values():
        split.src, split.tgt = resolve(split.src), resolve(split.tgt)
    if getattr(recipe.data, "path", None):
        recipe.data.path = resolve(recipe.data.path)


def dump_recipe(recipe: Recipe) -> str:
    """The fully resolved recipe as YAML (what ``seqpipe config`` prints)."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
