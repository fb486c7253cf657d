"""The version of seqgen, in one place (``seqgen.__version__``, bundles, ``--version``)."""

__version__ = "0.1.0"
