"""How long a one-line call takes, start-up included: what a user meets first.

``python -m seqgen.benchmark.startup`` runs each bundled model's command on one line, as a
user would from a shell (``echo "Ein Hund läuft." | seqgen translate``), once to warm the
file cache and then ``--repeats`` times, and prints the median wall time of each, on the
default path (the bundled model's ONNX bundle, no torch) and with ``--backend torch``,
measured in the same run. A last column says whether the process imported torch.
"""

from __future__ import annotations

import argparse
import compileall
import statistics
import subprocess
import sys
import time
from pathlib import Path

# command line after ``seqgen`` -> the line it reads on stdin ("" for none)
CALLS = {
    "translate": (["translate"], "Ein Hund läuft.\n"),
    "generate": (["generate", "--prompt", "ROMEO:", "--max-new-tokens", "20"], ""),
    "classify sentiment": (["classify", "--model", "sentiment"], "a gripping, funny film\n"),
    "classify spam": (["classify", "--model", "spam"], "WINNER! Claim your prize now\n"),
}
# Run as ``python -m seqgen`` with a check that prints whether torch was imported at exit.
PROGRAM = (
    "import atexit, sys; "
    "atexit.register(lambda: print('torch' in sys.modules, file=sys.stderr)); "
    "from seqgen.cli import run; sys.argv[0] = 'seqgen'; sys.exit(run())"
)


def time_call(arguments: list[str], stdin: str) -> tuple[float, bool]:
    """Seconds one ``seqgen ARGUMENTS`` process takes, and whether it imported torch."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, *arguments],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"seqgen {' '.join(arguments)} failed: {done.stderr.strip()}")
    return seconds, done.stderr.strip().splitlines()[-1] == "True"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args(argv)
    # Bytecode as pip leaves an installed package: with PYTHONDONTWRITEBYTECODE set (or a
    # source checkout) every call would compile seqgen's modules again.
    compileall.compile_dir(str(Path(__file__).parents[1]), quiet=2)
    print("| call | backend | median s | runs (s) | imports torch |")
    print("|---|---|---:|---|---|")
    for name, (arguments, stdin) in CALLS.items():
        for backend in ("default", "torch"):
            call = arguments + (["--backend", "torch"] if backend == "torch" else [])
            time_call(call, stdin)  # warm-up: the file cache, Python's bytecode
            runs = [time_call(call, stdin) for _ in range(options.repeats)]
            seconds = [run[0] for run in runs]
            listed = ", ".join(f"{value:.2f}" for value in seconds)
            print(
                f"| {name} | {backend} | {statistics.median(seconds):.2f} | {listed} "
                f"| {'yes' if runs[-1][1] else 'no'} |"
            )


if __name__ == "__main__":
    main()
