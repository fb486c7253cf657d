"""``python -m seqgen``: the ``seqgen`` command, where its console script is not installed."""

from seqgen.cli import run

run()
