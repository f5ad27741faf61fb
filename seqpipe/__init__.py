"""seqpipe: staged, cached sequence-to-sequence experiments (MT and ASR) with recurrent models.

``from seqpipe import load_model`` loads a trained model (see :mod:`seqpipe.use.api`); importing
seqpipe itself does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from seqpipe.core import __version__

__all__ = ["__version__", "load_model"]

if TYPE_CHECKING:  # pragma: no cover
    from seqpipe.use.api import load_model


def __getattr__(name: str) -> Any:
    if name == "load_model":
        from seqpipe.use.api import load_model

        return load_model
    raise AttributeError(f"module 'seqpipe' has no attribute {name!r}")
