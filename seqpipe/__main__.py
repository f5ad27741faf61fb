"""``python -m seqpipe`` == the ``seqpipe`` command."""

from .cli import main

main()
