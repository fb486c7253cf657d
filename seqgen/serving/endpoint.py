"""What a task serves, and how a JSON request body becomes a call of its pipeline.

Each task describes its route with one :class:`Endpoint` (the ``serve`` hook of its registry
entry, ``seqgen/tasks/<task>/serving.py``); this module knows no task. A request body is a
JSON object with the texts (``"text"``, or what the endpoint names), an optional ``"model"``,
and decoding options: the fields of the task's options dataclass, the same ones the CLI's
flags set, resolved the same way (the request's over the model's stored defaults over the
library's, :func:`seqgen.decoding.options.resolve_options`).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from seqgen.errors import SeqgenError


class RequestError(SeqgenError):
    """A request the server refuses: ``status`` is its HTTP status code."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


# What a task's ``run`` receives with the texts: a callback for streamed text (or None).
Stream = Callable[[int, str], None] | None


@dataclass(frozen=True)
class Endpoint:
    """One task's route.

    ``run(pipeline, texts, options, stream)`` decodes a batch of texts with resolved options
    and returns one JSON-ready result per text; ``stream(index, piece)``, where given,
    receives text as it is produced. ``answer(results, options)`` builds the response body.
    """

    path: str  # "/translate"
    input_field: str  # the request's field with the texts: "text", "prompt"
    options_type: type  # the pipeline's options dataclass
    run: Callable[[Any, list[str], Any, Stream], list[Any]]
    answer: Callable[[list[Any], Any], dict[str, Any]]
    server_options: tuple[str, ...] = ("batch_size",)  # set by the server, not a request
    streams: bool = False  # takes ``"stream": true``
    batches: bool = True  # requests with the same options are decoded together


@dataclass(frozen=True)
class ParsedRequest:
    """A request body, checked: its texts, the model it names, its options (None = not
    given) and whether it asks for a stream."""

    texts: list[str]
    model: str | None
    options: dict[str, Any]
    stream: bool


def parse_request(body: object, endpoint: Endpoint, *, max_texts: int) -> ParsedRequest:
    """Check a decoded JSON body against ``endpoint``; RequestError naming the first problem."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    option_names = request_option_names(endpoint)
    known = [
        endpoint.input_field,
        "model",
        *(["stream"] if endpoint.streams else []),
        *option_names,
    ]
    for name in body:
        if name not in known:
            raise RequestError(f"unknown field {name!r}; this endpoint takes: {', '.join(known)}")
    texts = parse_texts(body.get(endpoint.input_field), endpoint.input_field, max_texts)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError('"model" must be a string: a name from GET /models')
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError('"stream" must be true or false')
    hints = typing.get_type_hints(endpoint.options_type)
    options = {
        name: checked_value(name, body[name], hints[name]) for name in body if name in option_names
    }
    return ParsedRequest(texts, model, options, stream)


def request_option_names(endpoint: Endpoint) -> list[str]:
    """The options a request may set: the options dataclass's fields but the server's."""
    names = (field.name for field in fields(endpoint.options_type))
    return [name for name in names if name not in endpoint.server_options]


def parse_texts(value: object, field: str, max_texts: int) -> list[str]:
    """A string or a list of strings, as a list of at most ``max_texts``."""
    if value is None:
        raise RequestError(f"the request has no {field!r}; give a string or a list of strings")
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
        raise RequestError(f"{field!r} must be a string or a list of strings")
    if not texts:
        raise RequestError(f"{field!r} is an empty list; give at least one text")
    if len(texts) > max_texts:
        raise RequestError(
            f"{len(texts)} texts in one request; this server takes at most {max_texts} "
            "(split the request, or start it with a larger --max-texts)",
            status=413,
        )
    return texts


def checked_value(name: str, value: object, hint: Any) -> Any:
    """``value`` if JSON gave it the type the option's annotation names (an int is a valid
    float; a bool is no number); RequestError otherwise."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if kind is str and isinstance(value, str):
            return value
    names = " or ".join(JSON_NAMES.get(kind, kind.__name__) for kind in allowed)
    raise RequestError(f"{name!r} must be {names}, not {value!r}")


JSON_NAMES: Mapping[type, str] = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "a string",
    type(None): "null",
}
