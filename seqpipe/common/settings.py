"""How to decode, in one object: the decode stage builds it from the recipe, the CLI and the API
from the recipe with the user's options applied, and the searches read it.

The search names of each task are listed here once (the recipe schemas take them from here)::

    MT   beam | greedy
    ASR  ctc_greedy | ctc_beam   (arch ctc, ctc_attention)
         greedy | beam           (arch attention, ctc_attention)
         joint                   (arch ctc_attention: attention beam + CTC prefix scores)
         auto                    (ctc → ctc_greedy, attention → beam, ctc_attention → joint)
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from seqpipe.errors import InputError

MT_SEARCHES = ("beam", "greedy")
ASR_SEARCH_ARCHS = {
    "ctc_greedy": ("ctc", "ctc_attention"),
    "ctc_beam": ("ctc", "ctc_attention"),
    "greedy": ("attention", "ctc_attention"),
    "beam": ("attention", "ctc_attention"),
    "joint": ("ctc_attention",),
}
AUTO_SEARCH = {"ctc": "ctc_greedy", "attention": "beam", "ctc_attention": "joint"}
SEARCHES = {"mt": MT_SEARCHES, "asr": (*ASR_SEARCH_ARCHS, "auto")}
BEAM_SEARCHES = ("beam", "joint", "ctc_beam")  # searches that use beam_size
NBEST_SEARCHES = ("beam", "joint")  # searches that give n-best lists


@dataclass(frozen=True)
class DecodeSettings:
    """The recipe's ``decode:`` keys that shape the output (``decode.*`` in the README)."""

    search: str = "beam"
    beam_size: int = 5
    alpha: float = 1.0
    max_len_a: float = 1.5
    max_len_b: int = 5
    nbest: int = 1
    ctc_weight: float = 0.3  # ASR joint: weight of the CTC prefix score
    batch_tokens: int = 6000  # source tokens (ASR: padded feature frames) per batch
    shortlist: int = 0  # MT: lexical shortlist candidates per source piece (0 = off)
    shortlist_frequent: int = 300
    alignment: bool = False  # MT: word alignments (Pharaoh) from the attention of each output

    @classmethod
    def from_config(cls, cfg: Any, nbest: int | None = None) -> DecodeSettings:
        """From a recipe's decode section (either task's); ``nbest`` replaces its nbest (the
        API and the CLI give one hypothesis unless asked)."""
        kw = {f.name: getattr(cfg, f.name) for f in fields(cls) if hasattr(cfg, f.name)}
        if nbest is not None:
            kw["nbest"] = nbest
        return cls(**kw)

    def override(self, **kw: Any) -> DecodeSettings:
        """These settings with the given ones (``None`` = keep; ``beam`` = ``beam_size``)."""
        names = {"beam": "beam_size", "batch_frames": "batch_tokens"}
        changes = {names.get(k, k): v for k, v in kw.items() if v is not None}
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise TypeError(f"unknown decoding setting(s): {', '.join(sorted(unknown))}")
        if "beam_size" in changes and "search" not in changes and self.search == "greedy":
            changes["search"] = "beam"  # asking for a beam means beam search
        return replace(self, **changes)

    def resolve(self, task: str, arch: str | None = None) -> DecodeSettings:
        """``auto`` replaced by the search for ``arch``; then :meth:`check`."""
        s = self
        if task == "asr" and self.search == "auto" and arch is not None:
            s = replace(self, search=AUTO_SEARCH[arch])
        s.check(task, arch)
        return s

    def check(self, task: str, arch: str | None = None) -> None:
        """One line (InputError) for settings that ``task`` (and ``arch``) cannot decode with."""
        allowed = SEARCHES[task]
        if self.search not in allowed:
            raise InputError(
                f"search {self.search!r}: a {task.upper()} model decodes with {', '.join(allowed)}"
            )
        if arch is not None and self.search in ASR_SEARCH_ARCHS:
            archs = ASR_SEARCH_ARCHS[self.search]
            if task == "asr" and arch not in archs:
                raise InputError(
                    f"decode.search: {self.search} needs model.arch {' or '.join(archs)}, but "
                    f"the model is {arch}"
                )
        for name, low in (("beam", self.beam_size), ("nbest", self.nbest)):
            if low < 1:
                raise InputError(f"{name} {low}: must be at least 1")
        if self.batch_tokens < 1:
            raise InputError(f"batch tokens {self.batch_tokens}: must be at least 1")
        if not 0 <= self.shortlist <= 100 or self.shortlist_frequent < 0:
            raise InputError(
                f"shortlist {self.shortlist} (frequent {self.shortlist_frequent}): "
                "need 0 <= shortlist <= 100 and frequent >= 0"
            )
        if self.shortlist and task != "mt":
            raise InputError("shortlist: lexical shortlists are for MT models")
        if self.alignment and task != "mt":
            raise InputError("alignment: word alignments are for MT models (source words)")
        if self.nbest > 1:
            if self.search not in NBEST_SEARCHES:
                raise InputError(
                    f"nbest {self.nbest}: n-best lists need beam search (search is {self.search})"
                )
            if self.nbest > self.beam_size:
                raise InputError(f"nbest {self.nbest} is larger than the beam ({self.beam_size})")

    @property
    def greedy(self) -> bool:
        """An attention search that is greedy (``greedy``, or beam 1 with one hypothesis)."""
        return self.search == "greedy" or (
            self.search == "beam" and self.beam_size == 1 and self.nbest == 1
        )

    def describe(self) -> str:
        """``beam 5`` / ``ctc_greedy`` (log lines)."""
        return f"{self.search} {self.beam_size}" if self.search in BEAM_SEARCHES else self.search


def check_recipe_decode(recipe: Any) -> None:
    """A recipe's decode section checked as the decode stage will (``auto`` resolved by
    ``model.arch``): a ValueError ``decode: ...`` when the recipe is loaded, not after training."""
    try:
        DecodeSettings.from_config(recipe.decode).resolve(
            recipe.task, getattr(recipe.model, "arch", None)
        )
    except InputError as exc:
        msg = str(exc)
        raise ValueError(msg if msg.startswith("decode.") else f"decode: {msg}") from None
