"""``python -m seqpipe`` == the ``seqpipe`` command."""

from seqpipe.cli import main

main()
