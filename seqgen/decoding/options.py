"""Decoding options, resolved once for every task and runtime.

One precedence: the caller's argument (a CLI flag or an API keyword) over the model's stored
defaults (its recipe's ``[decoding]`` section, kept in the checkpoint or the bundle manifest)
over the library defaults (the options dataclass's field defaults). A caller's ``None`` means
"not given", which is what every CLI flag defaults to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

from seqgen.errors import SeqgenError

Options = TypeVar("Options")


def resolve_options(
    options_type: type[Options], stored: Mapping[str, Any], given: Mapping[str, Any]
) -> Options:
    """The options of one call, validated (``options_type.validate``).

    Args:
        options_type: a dataclass whose fields are the options and whose defaults are the
            library's.
        stored: the model's defaults; keys the dataclass does not know are ignored (a newer
            seqgen may have stored more).
        given: the caller's options; None values are not given. An unknown name is refused.
    """
    known = [field.name for field in fields(options_type)]  # type: ignore[arg-type]
    for name in given:
        if name not in known:
            raise SeqgenError(f"unknown decoding option {name!r}; choose from: {', '.join(known)}")
    values = {name: value for name, value in stored.items() if name in known}
    values.update({name: value for name, value in given.items() if value is not None})
    try:
        options = options_type(**values)
    except TypeError as error:
        raise SeqgenError(f"bad decoding options ({error})") from None
    options.validate()  # type: ignore[attr-defined]
    return options


def check_each(options_type: type[Options], given: Mapping[str, Any]) -> None:
    """Check each given option alone against the library defaults, so that a bad value fails
    before a model is loaded (how options combine is checked by :func:`resolve_options`,
    against the model's own defaults)."""
    for name, value in given.items():
        if value is not None:
            resolve_options(options_type, {}, {name: value})
