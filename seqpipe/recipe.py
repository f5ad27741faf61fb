"""Recipes: YAML files validated once into typed objects.

A recipe has one section per stage (``data``, ``tokenize``, ``features``, ``model``, ``train``,
``decode``, ``score``) plus a few top-level keys. Loading does, in order:

1. ``yaml.safe_load`` of the file (a syntax error names the file and line),
2. command-line overrides ``a.b=c`` (values parsed as YAML scalars, unknown keys rejected),
3. pydantic validation with ``extra="forbid"`` — errors name the key path, the file, the line
   and, for unknown keys, the closest known key (``train.lerning_rate: unknown key; did you
   mean learning_rate?``).

``Recipe.section_for_key(name)`` gives the canonical dict of a section that goes into a stage's
cache key; fields marked ``key=False`` (threads, progress bars) never change an artifact and are
left out of it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import InputError


def _nokey(default: Any, description: str = "") -> Any:
    """A field that does not change the artifact and so stays out of the cache key."""
    return Field(default, description=description, json_schema_extra={"key": False})


def _newkey(default: Any, description: str = "", **constraints: Any) -> Any:
    """A field added after artifacts were already cached: in the cache key only when set to
    something other than its default (which must reproduce the old behaviour), so adding it
    does not make existing artifacts look stale."""
    return Field(
        default, description=description, json_schema_extra={"key": "if_set"}, **constraints
    )


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def key_dict(self) -> dict[str, Any]:
        """The part of this section that can change an artifact (for cache keys)."""
        out = {}
        for name, field in type(self).model_fields.items():
            extra = field.json_schema_extra or {}
            value = getattr(self, name)
            if isinstance(extra, dict) and (
                extra.get("key") is False
                or (extra.get("key") == "if_set" and value == field.default)
            ):
                continue
            out[name] = value.key_dict() if isinstance(value, Section) else _plain(value)
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# --------------------------------------------------------------------------------------------
# data / prepare


class LocalSplit(Section):
    src: str = Field(description="path of the source-side text file (one sentence a line)")
    tgt: str = Field(description="path of the target-side text file")


class DataConfig(Section):
    dataset: str = Field(
        "multi30k",
        description="registry name (multi30k, tatoeba_deu_eng, tatoeba_fra_eng, yesno, fsdd_digits, "
        "fsdd_connected, an4, librispeech, kaldi, tsv) or 'local'",
    )
    src_lang: str = "en"
    tgt_lang: str = "de"
    splits: dict[str, str] = Field(
        default_factory=lambda: {"train": "train", "valid": "val", "test": "test_2016_flickr"},
        description="our split name -> the dataset's split name",
    )
    local: dict[str, LocalSplit] | None = Field(
        None, description="dataset: local — split name -> {src, tgt} file paths"
    )
    max_words: int = Field(80, ge=1, description="drop training pairs with more words on a side")
    max_length_ratio: float = Field(
        3.0, gt=0, description="drop training pairs whose word-count ratio exceeds this"
    )
    max_train_lines: int | None = Field(
        None, ge=1, description="keep only the first N training pairs (quick runs, tests)"
    )
    max_eval_lines: int | None = Field(
        None, ge=1, description="keep only the first N valid/test pairs (quick runs, tests)"
    )
    valid_fraction: float = Field(
        0.01,
        ge=0,
        lt=0.5,
        description="tatoeba: share of valid; asr datasets without a valid split: share of train "
        "held out as valid (seeded, at least one utterance)",
    )
    test_fraction: float = Field(
        0.01,
        ge=0,
        lt=0.5,
        description="tatoeba: share of test; asr data given as one pool: share held out as test",
    )
    # ASR
    sample_rate: int = Field(16000, ge=1000, description="asr: audio is resampled to this rate")
    on_error: Literal["skip", "stop"] = Field(
        "stop", description="asr: a corrupt/missing audio file or empty transcript: skip or stop"
    )
    path: str | None = Field(None, description="asr: kaldi folder / tsv file / librispeech folder")
    test_speakers: list[str] = Field(default_factory=list, description="fsdd_connected")
    valid_speakers: list[str] = Field(default_factory=list, description="fsdd_connected")
    utterances: dict[str, int] = Field(
        default_factory=lambda: {"train": 2000, "valid": 200, "test": 300},
        description="fsdd_connected: utterances per split",
    )


# --------------------------------------------------------------------------------------------
# tokenize / features


class TokenizeConfig(Section):
    model_type: Literal["unigram", "bpe", "char"] = "unigram"
    vocab_size: int = Field(8000, ge=8)
    joint: bool = Field(True, description="one vocabulary for source and target")
    character_coverage: float = Field(1.0, gt=0, le=1)
    bpe_dropout: float = Field(
        0.0, ge=0, lt=1, description="subword sampling alpha at training time (0 = off)"
    )
    max_sentencepiece_sentences: int = Field(
        2_000_000, ge=1, description="input_sentence_size for SentencePiece training"
    )
    threads: int = _nokey(2, "SentencePiece trainer threads")


class FeaturesConfig(Section):
    kind: Literal["fbank", "mel"] = "fbank"
    num_mel_bins: int = Field(80, ge=8)
    speed_perturb: list[float] = Field(default_factory=lambda: [1.0])
    cmvn: bool = Field(True, description="global mean/variance normalisation (training stats)")
    utterance_cmn: bool = Field(
        False, description="also subtract each utterance's own mean (speaker/channel robustness)"
    )
    utterance_cvn: bool = Field(
        False, description="subtract each utterance's mean and divide by its std (implies cmn)"
    )
    speaker_cmn: Literal["none", "all", "eval"] = Field(
        "none",
        description="subtract each speaker's mean over all its utterances of the split "
        "(Kaldi's per-speaker CMN; a speed-perturbed copy counts as its own speaker) in every "
        "split (all) or in the valid/test splits only (eval: training keeps utterance_cmn)",
    )
    vtlp: float = Field(
        0.0,
        ge=0,
        lt=0.5,
        description="VTLP: warp each training copy's filterbank by a factor in [1-v, 1+v]",
    )
    noise_snr: tuple[float, float] | None = Field(
        None,
        description="[lo, hi] dB: white noise this far below each training copy's loudest "
        "frame, a level per copy drawn uniformly (null = off)",
    )

    @model_validator(mode="after")
    def _noise_range(self) -> FeaturesConfig:
        if self.noise_snr is not None and self.noise_snr[0] > self.noise_snr[1]:
            raise ValueError(f"noise_snr: [lo, hi] needs lo <= hi, got {list(self.noise_snr)}")
        if self.speaker_cmn == "all" and (self.utterance_cmn or self.utterance_cvn):
            raise ValueError(
                "speaker_cmn: all replaces utterance_cmn/utterance_cvn in every split: set "
                "only one of them (or speaker_cmn: eval, which keeps them for training)"
            )
        return self

    workers: int = _nokey(2, "feature extraction worker processes")


# --------------------------------------------------------------------------------------------
# model


class ModelConfig(Section):
    arch: Literal["attention", "ctc", "ctc_attention"] = "attention"
    cell: Literal["gru", "lstm", "rnn_tanh", "rnn_relu"] = "gru"
    emb_size: int = Field(256, ge=1)
    hidden_size: int = Field(256, ge=1, description="per direction in the encoder")
    enc_layers: int = Field(1, ge=1)
    dec_layers: int = Field(1, ge=1)
    bidirectional: bool = True
    attention: Literal["bahdanau", "luong", "location"] = "bahdanau"
    luong_score: Literal["general", "dot"] = "general"
    attention_query: Literal["auto", "previous", "current"] = Field(
        "auto",
        description="previous: the previous state queries, the context feeds the RNN "
        "(Bahdanau); current: the RNN's new state queries (Luong, Joey NMT); auto: previous "
        "for bahdanau/location, current for luong",
    )
    input_feeding: bool = True
    bridge: bool = True
    dropout: float = Field(0.3, ge=0, lt=1)
    tied_embeddings: bool = False
    # ASR front end
    # conv2d: x4 fewer frames; conv2d8: conv2d + pairs of frames stacked (x8); pyramid:
    # pyramidal BiLSTM encoder (x2 per layer, up to x4); none
    subsampling: Literal["conv2d", "conv2d8", "pyramid", "none"] = "conv2d"
    conv_channels: int = Field(32, ge=1)
    frontend_norm: bool = Field(
        False, description="ASR: LayerNorm on the conv front end's output frames"
    )


# --------------------------------------------------------------------------------------------
# train


class TrainConfig(Section):
    device: str = _nokey("auto", "auto | cpu | cuda | cuda:N")
    threads: int = _nokey(2, "torch.set_num_threads on CPU")
    amp: Literal["none", "bf16", "fp16"] = "none"
    max_tokens: int = Field(4000, ge=1, description="real source+target tokens per batch")
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
    clip_grad_norm: float = Field(1.0, ge=0, description="0 = off")
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    ctc_weight: float = Field(0.3, ge=0, le=1, description="asr ctc_attention: weight of CTC")
    max_epochs: int = Field(30, ge=1)
    max_steps: int | None = Field(None, ge=1)
    max_minutes: float | None = Field(
        None, gt=0, description="stop after this much training time (checkpointed, resumable)"
    )
    valid_every: int = Field(500, ge=1, description="validate every N updates (and per epoch)")
    valid_metric: Literal["bleu", "loss", "wer"] = "bleu"
    valid_max_sentences: int | None = Field(None, ge=1)
    patience: int = Field(8, ge=0, description="early stopping: validations without improvement")
    keep_best: int = Field(3, ge=1)
    average_last: int = Field(0, ge=0, description="average the k best checkpoints at the end")
    max_nan_batches: int = Field(20, ge=0)
    sortagrad: int = Field(
        0, ge=0, description="curriculum: the first N epochs take their batches shortest first"
    )
    spec_augment: bool = True
    seed: int | None = _newkey(
        None,
        "seed of initialisation, batch order and SpecAugment (null: the recipe's seed); "
        "another value trains another model on the same data (e.g. ensemble members)",
    )
    members: int = _newkey(
        1,
        ge=1,
        description="ASR, arch ctc: train this many models (train.seed, +1, ...) and decode them "
        "as an ensemble (each member's hypothesis rescored by all members' CTC likelihoods); "
        "the attention archs train one model and say so",
    )
    member_jobs: int | None = _nokey(None, "members trained at once, one process each (null: all)")
    log_every: int = _nokey(50, "log a line every N updates")
    progress: bool = _nokey(True, "show a progress bar")


# --------------------------------------------------------------------------------------------
# decode / score


class DecodeConfig(Section):
    # ASR: auto picks by model.arch (ctc → ctc_greedy, attention → beam, ctc_attention → joint)
    search: Literal["beam", "greedy", "ctc_greedy", "ctc_beam", "joint", "auto"] = "beam"
    beam_size: int = Field(5, ge=1)
    alpha: float = Field(1.0, ge=0, description="GNMT length penalty")
    max_len_a: float = Field(1.5, ge=0)
    max_len_b: int = Field(5, ge=0)
    nbest: int = Field(1, ge=1)
    ctc_weight: float = Field(0.3, ge=0, le=1)
    checkpoint: Literal["best", "last", "averaged"] = "best"
    shortlist: int = Field(
        0,
        ge=0,
        le=100,
        description="MT: lexical shortlist, target candidates per source piece (0 = off)",
    )
    shortlist_frequent: int = Field(
        300, ge=0, description="MT: most frequent target pieces always in the shortlist"
    )
    quantize: Literal["none", "int8"] = Field(
        "none",
        description="CPU decoding: int8 dynamic quantization of the Linear/GRU/LSTM weights",
    )
    adapt: Literal["none", "lin"] = _newkey(
        "none",
        "ASR: unsupervised speaker adaptation. lin: after a first pass, per speaker of the "
        "split a linear input transform (features x A + b, A from the identity; fMLLR-like) "
        "is trained on that speaker's first-pass transcripts with the model's own loss, the "
        "model frozen, then a second pass decodes through it. Uses the speaker's audio, never "
        "its references",
    )
    adapt_epochs: int = _newkey(10, "lin: passes over the speaker's utterances", ge=1)
    adapt_lr: float = _newkey(0.003, "lin: Adam learning rate", gt=0)
    adapt_rounds: int = _newkey(
        1,
        "lin: adapt-then-decode rounds; each starts from the identity again with the last "
        "round's transcripts",
        ge=1,
    )
    adapt_targets: Literal["agreed", "all"] = _newkey(
        "agreed",
        "lin with an ensemble (train.members): agreed = train only on the utterances where every "
        "member's own hypothesis equals the ensemble's; all = every utterance (one model: all)",
    )
    batch_tokens: int = _nokey(6000, "source tokens per decoding batch")
    splits: list[str] = Field(default_factory=lambda: ["test"])
    device: str = _nokey("auto")
    threads: int = _nokey(2)


class ScoreConfig(Section):
    metrics: list[Literal["bleu", "chrf", "wer", "cer"]] = Field(
        default_factory=lambda: ["bleu", "chrf"]
    )
    bleu_tokenize: str = "13a"
    lowercase: bool = False
    asr_normalization: str = "lower,strip_punct,collapse_space"


class Recipe(Section):
    name: str = Field("", description="experiment name (default: the recipe file's stem)")
    task: Literal["mt", "asr"] = "mt"
    seed: int = 1234
    data: DataConfig = Field(default_factory=DataConfig)
    tokenize: TokenizeConfig = Field(default_factory=TokenizeConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        if self.data.dataset == "local" and not self.data.local:
            raise ValueError("data.local: required when data.dataset is 'local'")
        if self.train.members > 1 and self.task != "asr":
            raise ValueError("train.members: ensembles are for ASR CTC models (task asr)")
        if self.decode.adapt != "none" and self.task != "asr":
            raise ValueError("decode.adapt: speaker adaptation is for ASR (task asr)")
        if self.decode.adapt != "none" and self.decode.quantize != "none":
            raise ValueError("decode.adapt: adapting needs gradients; set decode.quantize: none")
        return self

    # where the recipe came from (not part of the schema)
    _path: Path | None = None

    @property
    def path(self) -> Path | None:
        return self._path


# --------------------------------------------------------------------------------------------
# loading, overrides, errors


def _line_map(text: str) -> dict[tuple[str, ...], int]:
    """Key path -> 1-based line number, from the YAML node tree."""
    lines: dict[tuple[str, ...], int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines

    def walk(node: Any, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                path = prefix + (str(k.value),)
                lines[path] = k.start_mark.line + 1
                walk(v, path)

    walk(root, ())
    return lines


def _fields_of(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Known field names of the section at ``loc`` (for did-you-mean)."""
    cls: Any = model
    for part in loc:
        field = cls.model_fields.get(part) if hasattr(cls, "model_fields") else None
        if field is None:
            return []
        ann = field.annotation
        sub = next((a for a in getattr(ann, "__args__", (ann,)) if _is_model(a)), None)
        if sub is None and _is_model(ann):
            sub = ann
        if sub is None:
            return []
        cls = sub
    return list(cls.model_fields) if hasattr(cls, "model_fields") else []


def _is_model(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


# names users bring from Joey NMT / fairseq / ESPnet -> ours (for did-you-mean)
ALIASES = {
    "learning_rate": "lr",
    "batch_size": "max_tokens",
    "beam": "beam_size",
    "epochs": "max_epochs",
    "clip_norm": "clip_grad_norm",
    "rnn_type": "cell",
    "embedding_dim": "emb_size",
    "num_layers": "enc_layers",
    "hidden": "hidden_size",
}


def did_you_mean(name: str, known: list[str]) -> str | None:
    """The closest known key to ``name``, trying common names from other toolkits too."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    if close:
        return close[0]
    alias = difflib.get_close_matches(name, list(ALIASES), n=1, cutoff=0.75)
    if alias and ALIASES[alias[0]] in known:
        return ALIASES[alias[0]]
    return None


def _format_errors(err: ValidationError, source: str, lines: dict[tuple[str, ...], int]) -> str:
    msgs = []
    for e in err.errors():
        loc = tuple(str(p) for p in e["loc"])
        # dict-valued sections report loc with the dict key; keep it readable
        key = ".".join(loc) if loc else "(recipe)"
        line = None
        for n in range(len(loc), 0, -1):
            if loc[:n] in lines:
                line = lines[loc[:n]]
                break
        where = f"{source}:{line}" if line else source
        if e["type"] == "extra_forbidden":
            known = _fields_of(Recipe, tuple(e["loc"][:-1]))
            close = did_you_mean(loc[-1], known)
            hint = f"; did you mean {close}?" if close else f"; known keys: {', '.join(known)}"
            msgs.append(f"{where}: {key}: unknown key{hint}")
        elif e["type"] == "missing":
            msgs.append(f"{where}: {key}: required key is missing")
        else:
            got = e.get("input")
            got_s = f" (got {got!r})" if got is not None and not isinstance(got, dict) else ""
            msgs.append(f"{where}: {key}: {e['msg'].lower()}{got_s}")
    return "; ".join(msgs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=c`` -> (["a", "b"], value parsed as a YAML scalar/flow value)."""
    if "=" not in text:
        raise InputError(f"override {text!r}: expected KEY=VALUE, e.g. train.lr=5e-4")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise InputError(f"override {text!r}: empty key part")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise InputError(f"override {text!r}: value is not valid YAML ({exc})") from None
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=c`` overrides to the raw recipe dict; unknown keys are rejected."""
    for text in overrides:
        parts, value = parse_override(text)
        known = _fields_of(Recipe, tuple(parts[:-1]))
        if not known and len(parts) > 1:
            # a dict-valued field (data.splits.train=...) or an unknown section
            parent = _fields_of(Recipe, tuple(parts[:-2]))
            if parts[-2] not in parent:
                close = difflib.get_close_matches(parts[-2], parent, n=1, cutoff=0.5)
                hint = f"; did you mean {close[0]}?" if close else ""
                raise InputError(f"override {text!r}: {'.'.join(parts[:-1])}: unknown key{hint}")
        elif parts[-1] not in known:
            close = did_you_mean(parts[-1], known)
            hint = f"; did you mean {close}?" if close else ""
            raise InputError(f"override {text!r}: {'.'.join(parts)}: unknown key{hint}")
        node = raw
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise InputError(f"override {text!r}: {p} is not a section")
            node = nxt
        node[parts[-1]] = value
    return raw


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe. Raises InputError with one readable line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: recipe file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not valid UTF-8 (byte {exc.start})") from None
    try:
        raw = yaml.safe_load(text)
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
    raw = apply_overrides(raw, overrides or [])
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        raise InputError(_format_errors(exc, str(path), _line_map(text))) from None
    if not recipe.name:
        recipe.name = path.stem
    recipe._path = path.resolve()
    _resolve_local_paths(recipe, path.resolve().parent)
    return recipe


def _resolve_local_paths(recipe: Recipe, base: Path) -> None:
    """Relative data paths in a recipe are relative to the recipe's folder."""
    if recipe.data.local:
        for split in recipe.data.local.values():
            for side in ("src", "tgt"):
                p = Path(getattr(split, side)).expanduser()
                if not p.is_absolute():
                    setattr(split, side, str((base / p).resolve()))
    if recipe.data.path:
        p = Path(recipe.data.path).expanduser()
        if not p.is_absolute():
            recipe.data.path = str((base / p).resolve())


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def hash_obj(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:n]


def dump_recipe(recipe: Recipe) -> str:
    """The fully resolved recipe as YAML (what ``seqpipe config`` prints)."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
