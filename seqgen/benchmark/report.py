"""The end of a benchmark command: its report printed (and written as JSON), or one error line.

Standard library only at import: ``seqgen.benchmark.paired`` imports it in its driver, whose
workers must take every seqgen module from the trees they measure.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def print_report(
    make: Callable[[], dict[str, Any]],
    format_report: Callable[[dict[str, Any]], str],
    json_file: str | Path | None = None,
) -> dict[str, Any] | None:
    """``make()``'s report, printed with ``format_report`` and written to ``json_file`` when
    given; None after printing a SeqgenError as one ``seqgen: error:`` line (bad input)."""
    from seqgen.errors import SeqgenError

    try:
        report = make()
    except SeqgenError as error:
        print(f"seqgen: error: {error}", file=sys.stderr)
        return None
    print(format_report(report))
    if json_file:
        Path(json_file).write_text(json.dumps(report, indent=2) + "\n")
    return report
