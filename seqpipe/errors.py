"""The kinds of error a user sees.

``InputError``  — bad input: a malformed recipe, an unknown key, a missing or corrupt file,
                  mismatched line counts. Exit code 2.
``StageError``  — a failure inside a stage (NaN loss, a crashed worker). Exit code 1.
``LockedError`` — an artifact it needs is being built by another seqpipe process. Exit code 75
                  (``EX_TEMPFAIL``: try again later, or pass ``--wait``).

Each carries one readable line; the CLI prints it without a traceback unless ``--debug``.
"""

from __future__ import annotations


class SeqpipeError(Exception):
    """Base class: ``str(err)`` is the one line shown to the user."""

    exit_code = 1


class InputError(SeqpipeError, ValueError):
    """Bad input from the user (recipe, files, data). Exit code 2."""

    exit_code = 2


class StageError(SeqpipeError):
    """A stage failed while running. Exit code 1."""

    exit_code = 1


class CorruptError(InputError):
    """A file of a finished artifact does not match its manifest (size or sha256). Exit 2."""


class LockedError(SeqpipeError):
    """Another seqpipe process is building an artifact this run needs. Exit code 75."""

    exit_code = 75
