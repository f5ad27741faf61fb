"""Run the seqpipe CLI and SIGKILL this process at a named moment (for the kill tests).

    python tests/kill_at.py POINT run RECIPE ...

POINT: before-curve | after-curve | train-json | commit | manifest | renamed (training's
finalisation and the commit), first-member (an ensemble: after its first member finished)
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any


def _die() -> None:
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _before(owner: Any, name: str) -> None:
    def f(*a: Any, **k: Any) -> Any:
        _die()

    setattr(owner, name, f)


def _after(owner: Any, name: str) -> None:
    orig = getattr(owner, name)

    def f(*a: Any, **k: Any) -> Any:
        out = orig(*a, **k)
        _die()
        return out

    setattr(owner, name, f)


def main() -> None:
    from seqpipe.asr import training
    from seqpipe.cli import main as cli
    from seqpipe.common import trainer
    from seqpipe.core import cache, pipeline  # noqa: F401 - bound before the patches

    point, args = sys.argv[1], sys.argv[2:]
    {
        "before-curve": lambda: _before(trainer, "plot_curves"),
        "after-curve": lambda: _after(trainer, "plot_curves"),
        "train-json": lambda: _after(trainer, "write_json_atomic"),
        "commit": lambda: _before(cache.ArtifactStore, "commit"),
        "manifest": lambda: _after(cache, "write_json_atomic"),
        "renamed": lambda: _before(cache, "_fsync_dir"),
        "first-member": lambda: _after(training, "train_model"),
    }[point]()
    cli(args, prog_name="seqpipe")


if __name__ == "__main__":
    main()
