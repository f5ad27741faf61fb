"""The rules every recipe section follows: validation, cache-key content, overrides, errors.

- A :class:`Section` forbids unknown keys (pydantic ``extra="forbid"``) and gives
  :meth:`Section.key_dict`, the part of it that goes into a stage's cache key.
- Two kinds of field stay out of a key: :func:`nokey` (threads, progress bars: never change an
  artifact) and :func:`newkey` — a key added after artifacts were cached, which enters a key only
  when set to something other than its default (the default reproduces the old behaviour, so
  adding it leaves existing artifacts valid). This is a property of the field, not a list.
- ``a.b=c`` overrides (:func:`parse_override`), did-you-mean for unknown keys (with the names
  users bring from Joey NMT, fairseq and ESPnet), and one readable line per validation error
  naming the file and line (:func:`format_errors`).
- Canonical JSON and its hash (:func:`hash_obj`) for cache keys.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from seqpipe.errors import InputError


def nokey(default: Any) -> Any:
    """A field that does not change the artifact and so stays out of the cache key."""
    return Field(default, json_schema_extra={"key": False})


def newkey(default: Any, **constraints: Any) -> Any:
    """A field added after artifacts were already cached: in the cache key only when set to
    something other than its default (which must reproduce the old behaviour), so adding it
    does not make existing artifacts look stale."""
    return Field(default, json_schema_extra={"key": "if_set"}, **constraints)


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
            out[name] = value.key_dict() if isinstance(value, Section) else plain(value)
        return out


def plain(value: Any) -> Any:
    """JSON-able form of a field value."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def hash_obj(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:n]


# --------------------------------------------------------------------------------------------
# key paths


def line_map(text: str) -> dict[tuple[str, ...], int]:
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


def _is_model(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def fields_of(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
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


# (key path) -> a hint such as "an ASR key; this recipe's task is mt", or None
OtherTask = Callable[[tuple[str, ...]], str | None]


def _unknown_key_hint(
    schema: type[BaseModel], parts: tuple[str, ...], other_task: OtherTask | None
) -> str:
    hint = other_task(parts) if other_task else None
    if hint:
        return hint
    known = fields_of(schema, parts[:-1])
    close = did_you_mean(parts[-1], known)
    if close:
        return f"unknown key; did you mean {close}?"
    return f"unknown key; known keys: {', '.join(known)}" if known else "unknown key"


def _nearest(table: dict[tuple[str, ...], Any], loc: tuple[str, ...]) -> Any:
    """``table``'s value for ``loc`` or its nearest parent, or None."""
    return next((table[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in table), None)


def format_errors(
    err: ValidationError,
    source: str,
    lines: dict[tuple[str, ...], int],
    schema: type[BaseModel],
    other_task: OtherTask | None = None,
    overrides: dict[tuple[str, ...], str] | None = None,
) -> str:
    """One line for a validation error: ``file:line: key: what is wrong``, or ``override
    'KEY=VALUE': key: what is wrong`` when the value came from an override (``overrides``:
    key path -> the override as typed)."""
    msgs = []
    for e in err.errors():
        loc = tuple(str(p) for p in e["loc"])
        msg = e["msg"]
        if e["type"] == "value_error":  # a validator's "key.path: what is wrong"
            msg = str(e.get("ctx", {}).get("error", msg))
            head, sep, rest = msg.partition(": ")
            if sep and head and " " not in head:
                parts = tuple(head.split("."))
                loc, msg = (parts if parts[: len(loc)] == loc else loc + parts), rest
        key = ".".join(loc) if loc else "(recipe)"
        given, line = _nearest(overrides or {}, loc), _nearest(lines, loc)
        if given is None and e["type"] == "value_error" and loc:  # a check between keys:
            given = next((o for k, o in (overrides or {}).items() if k[0] == loc[0]), None)
        where = f"override {given!r}" if given else f"{source}:{line}" if line else source
        if e["type"] == "extra_forbidden":
            msgs.append(f"{where}: {key}: {_unknown_key_hint(schema, loc, other_task)}")
        elif e["type"] == "missing":
            msgs.append(f"{where}: {key}: required key is missing")
        else:
            got = e.get("input")
            got_s = f" (got {got!r})" if got is not None and not isinstance(got, dict) else ""
            msg = msg if e["type"] == "value_error" else msg[:1].lower() + msg[1:]
            msgs.append(f"{where}: {key}: {msg}{got_s}")
    return "; ".join(msgs)


# --------------------------------------------------------------------------------------------
# overrides


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
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"override {text!r}: value is not valid YAML: {problem}") from None
    return parts, value


def check_override_key(
    schema: type[BaseModel], text: str, parts: list[str], other_task: OtherTask | None = None
) -> None:
    """Raise InputError when ``parts`` names no key of ``schema``."""
    known = fields_of(schema, tuple(parts[:-1]))
    if not known and len(parts) > 1:
        # a dict-valued field (data.splits.train=...) or an unknown section
        parent = fields_of(schema, tuple(parts[:-2]))
        if parts[-2] not in parent:
            hint = _unknown_key_hint(schema, tuple(parts[:-1]), other_task)
            raise InputError(f"override {text!r}: {'.'.join(parts[:-1])}: {hint}")
    elif parts[-1] not in known:
        hint = _unknown_key_hint(schema, tuple(parts), other_task)
        raise InputError(f"override {text!r}: {'.'.join(parts)}: {hint}")


def set_override(raw: dict[str, Any], text: str, parts: list[str], value: Any) -> None:
    """Set ``raw[parts[0]][parts[1]]... = value``, creating sections as needed."""
    node = raw
    for p in parts[:-1]:
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        if not isinstance(nxt, dict):
            raise InputError(f"override {text!r}: {p} is not a section")
        node = nxt
    node[parts[-1]] = value
