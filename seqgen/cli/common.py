"""What the commands share: options, reading lines, writing files atomically, and the request
``seqgen evaluate`` hands to a task."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from seqgen.errors import DataError
from seqgen.files import atomic_write

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Mirror folder holding the public corpora (else $SEQGEN_DATA_DIR, else download).",
)
device_option = click.option(
    "--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."
)
backend_option = click.option(
    "--backend",
    type=click.Choice(["auto", "torch", "onnx"]),
    default="auto",
    show_default=True,
    help="torch, or onnx (ONNX Runtime; a checkpoint is exported once into the cache). "
    "auto: onnx for a bundle folder, torch for a checkpoint.",
)
shortlist_option = click.option(
    "--shortlist/--no-shortlist",
    default=True,
    show_default=True,
    help="Translators with a lexical shortlist: score only the tokens it allows (faster).",
)


def model_option(default: str, *, bundles: bool = True) -> Any:
    """``--model``: a checkpoint file or run folder (or a bundle folder), else ``default``."""
    what = (
        "Checkpoint file, run folder or ONNX bundle folder"
        if bundles
        else ("Checkpoint file or run folder")
    )
    help_text = f"{what} [default: {default}]."
    return click.option("--model", "model_path", type=click.Path(), default=None, help=help_text)


def models_option(default: str, repeated: str) -> Any:
    """``--model`` given once or more (``model_paths``, a tuple; empty: ``default``); the
    help says what ``repeated`` models do."""
    return click.option(
        "--model",
        "model_paths",
        type=click.Path(),
        multiple=True,
        help=f"Checkpoint file, run folder or ONNX bundle folder [default: {default}]. {repeated}",
    )


def lines_options(what: str) -> Any:
    """``--input`` (UTF-8 ``what``, one per line; default stdin) and ``--output`` (one line
    per input line, written atomically; default stdout)."""
    path = click.Path(dir_okay=False, allow_dash=True)
    source = click.option(
        "--input",
        "input_file",
        type=path,
        default="-",
        help=f"UTF-8 {what}, one per line [default: stdin].",
    )
    target = click.option(
        "--output",
        "output_file",
        type=path,
        default="-",
        help="Where results go, one line per input line, written atomically [default: stdout].",
    )
    return lambda command: source(target(command))


@dataclass(frozen=True)
class EvaluationRequest:
    """What ``seqgen evaluate`` was asked; each task's ``evaluate`` hook reads what applies
    to it and refuses the rest in one line."""

    split: str | None  # val | test
    text_file: str | None  # generators
    source_file: str | None  # translators, with reference_file
    reference_file: str | None
    beam_size: int | None  # translators
    shortlist: bool
    data_dir: str | None


def read_lines(path: str) -> list[str]:
    """Lines of a UTF-8 file or stdin (``-``), without their line endings."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            data = Path(path).read_bytes()
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise DataError(f"no such file: {path}") from None
    except UnicodeDecodeError as error:
        name = "standard input" if path == "-" else path
        raise DataError(
            f"{name} is not UTF-8 (byte {error.start}); convert it, e.g. with iconv"
        ) from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def write_text(path: str, text: str) -> None:
    if path == "-":
        click.echo(text, nl=False)
        return
    try:
        atomic_write(
            Path(path), lambda temporary: Path(temporary).write_text(text, encoding="utf-8")
        )
    except OSError as error:  # a parent that is a file, no permission, a full disk, ...
        raise DataError(f"cannot write {path} ({error.strerror or error})") from None
