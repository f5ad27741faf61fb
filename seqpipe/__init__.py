"""seqpipe: staged, cached sequence-to-sequence experiments (MT and ASR) with recurrent models."""

__version__ = "0.1.0"

__all__ = ["__version__"]
