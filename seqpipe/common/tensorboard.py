"""Live training curves for TensorBoard: the trainer's metrics records as scalars.

Written into the train artifact's ``tb/`` folder (on by default when the ``tensorboard``
package is installed: ``pip install seqpipe[tensorboard]``; ``train.tensorboard: false`` turns
it off). While a stage runs, ``exp/<name>/train`` links its ``.partial`` folder, so
``tensorboard --logdir exp/`` shows every run by its name, live. Scalars::

    train/loss, train/ppl, train/lr, train/tok_s    one per logged step (train.log_every)
    valid/<metric>                                  one per validation (loss, bleu, wer, ...)

On resume, events after the checkpoint's step are purged (``purge_step``), as its records in
``metrics.jsonl`` are forgotten, so each step is shown once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TRAIN_SCALARS = ("loss", "ppl", "lr", "tok_s")


class TensorBoardLog:
    """A ``SummaryWriter`` opened on the first record; does nothing when TensorBoard is not
    installed or ``enabled`` is false."""

    def __init__(self, folder: Path, enabled: bool = True) -> None:
        self.folder, self.enabled, self.writer, self.resume_step = folder, enabled, None, 0

    def write(self, record: dict[str, Any]) -> None:
        """One ``metrics.jsonl`` record: a training window (loss, ppl, lr, tok_s) or a
        validation (``valid``: metric -> value)."""
        if not self.enabled:
            return
        if self.writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # the tensorboard package is an optional extra
                self.enabled = False
                return
            purge = self.resume_step + 1 if self.resume_step else None
            self.writer = SummaryWriter(str(self.folder), purge_step=purge, flush_secs=10)
        step = int(record["step"])
        if "valid" in record:
            for name, value in record["valid"].items():
                self.writer.add_scalar(f"valid/{name}", float(value), step)
        else:
            for name in TRAIN_SCALARS:
                self.writer.add_scalar(f"train/{name}", float(record[name]), step)

    def flush(self) -> None:
        """Put every event so far on disk (before a resume checkpoint: a kill after it must not
        lose events up to its step, which a resumed run does not write again)."""
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
