"""What a stage is: its declaration in a task's stage graph, and what it sees when it runs.

Each task's config module (:mod:`seqpipe.mt.config`, :mod:`seqpipe.asr.config`) declares its
stages as :class:`StageSpec` values; the pipeline imports a stage's module by name only when it
runs it, and calls ``run(ctx: StageContext) -> dict`` (extra manifest fields, e.g. metrics).
Stages talk only through artifacts on disk.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqpipe.core.cache import Artifact

log = logging.getLogger("seqpipe")

# a training stage's resume state (seqpipe.common.trainer), ensemble members' included
CHECKPOINTS = ("**/checkpoint.pt", "**/best-*.pt")


@dataclass(frozen=True)
class StageSpec:
    name: str
    version: int  # bump when the stage's code changes what it writes
    module: str  # the module with its run(ctx), e.g. seqpipe.mt.stages.train
    # what the stage reads of the recipe (its key): sections, top-level keys or dotted keys
    # (decode.max_len_a)
    sections: tuple[str, ...]
    inputs: tuple[str, ...]  # upstream stages
    resumable: bool = False  # keep the .partial folder of an interrupted run (training)
    extra_key: Callable[[Any], Any] | None = None  # e.g. checksums of local input files
    # globs of resume state (checkpoints) in the stage folder: kept until the artifact's
    # manifest is written, never part of the finished artifact
    scratch: tuple[str, ...] = ()

    def runner(self) -> Callable[[StageContext], dict[str, Any] | None]:
        return importlib.import_module(self.module).run


@dataclass
class StageContext:
    """What a running stage sees: its config, its output folder and its inputs."""

    recipe: Any  # seqpipe.core.recipe.Recipe (a task's subclass)
    stage: StageSpec
    key: str
    out: Path  # write here (the .partial folder)
    inputs: dict[str, Artifact]
    workspace: Path
    exp_dir: Path
    log: logging.Logger = field(default_factory=lambda: log)
    debug: bool = False
