"""The few exception types seqgen raises for problems a user can fix.

The CLI turns every :class:`SeqgenError` into one line on stderr and a non-zero exit
code, so each message must name the problem *and* the fix.
"""

from __future__ import annotations


class SeqgenError(Exception):
    """Base class: a problem with the user's input, files or environment."""


class ConfigError(SeqgenError):
    """A recipe or an override is malformed, has an unknown key or a bad value."""


class DataError(SeqgenError):
    """A corpus or text file cannot be found, downloaded, verified or decoded."""


class CheckpointError(SeqgenError):
    """A checkpoint or bundle is missing, corrupt, or of the wrong kind or version."""
