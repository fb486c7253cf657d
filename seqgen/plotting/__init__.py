"""Pictures (``seqgen plot``): learning curves from runs' ``metrics.csv``. matplotlib comes
with the ``plot`` extra and is imported only when a picture is drawn."""
