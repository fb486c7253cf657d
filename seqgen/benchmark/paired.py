"""Paired A/B decoding speed of two seqgen trees, one worker process each, alternating.

``python -m seqgen.benchmark.paired --tree OLD --tree NEW --backend onnx --beam-size 5
--pairs 15`` starts one worker per tree (a folder holding a seqgen checkout: ``git worktree
add`` or ``git archive``), which imports seqgen from that tree (``PYTHONPATH=TREE``), opens
the translator with that tree's ``seqgen.benchmark.batch_independence.open_backend`` (a
bundle backend is exported by that tree, into a work folder of its own) and warms up with one
translation. The driver then asks for one timed translation of test_2016_flickr in each, A B
then B A, ``--pairs`` times, and prints each tree's median sentences/s by wall clock and by
the worker's CPU time, the median and range of the paired new/old ratios (CPU time first: on
a shared machine it is the steadier figure), and how many lines the trees translate
differently (a speed change should keep the outputs).

Each worker sees ``--threads`` cores (``seqgen.cores.available_cores``, torch's and OpenMP's
threads): the default, 1, decodes one batch at a time on one thread. Workers read one JSON
request per line on stdin and answer one JSON line on stdout. This file runs as the worker
too (``--worker``), as a script under the tree's ``PYTHONPATH``, so the tree needs no copy.
Its module level imports the standard library only: the worker must take seqgen from its tree.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

BACKENDS = ("torch", "onnx", "int8")
CORPUS, SPLIT = "multi30k:de-en", "test_2016_flickr"
ROLES = ("old", "new")  # the first --tree, the second
STOP_SECONDS = 30  # how long a worker may take to exit once its stdin closes


def use_cores(threads: int) -> None:
    """Make seqgen see ``threads`` cores. Call it before seqgen's decoding modules are
    imported: they bind ``available_cores`` by name at import. (A tree older than
    seqgen/cores.py counts its cores itself; OpenMP's and torch's threads still apply.)"""
    try:
        import seqgen.cores
    except ModuleNotFoundError:
        return
    seqgen.cores.available_cores = lambda: threads


def read_lines(count: int = 0) -> list[str]:
    """The German side of test_2016_flickr, as ``batch_independence`` reads it (the first
    ``count`` lines; 0: all 1,000), from the mirror ``SEQGEN_DATA_DIR`` names."""
    from seqgen.data.corpora import load_parallel

    lines, _ = load_parallel(CORPUS, SPLIT, data_dir=os.environ.get("SEQGEN_DATA_DIR"))
    return lines[:count] if count else lines


class Worker:
    """One tree's worker process, started with the request that opens its translator."""

    def __init__(self, tree: Path, request: dict[str, Any], log: Path) -> None:
        self.tree = tree
        self.log = log
        threads = str(request["threads"])
        environment = {**os.environ, "PYTHONPATH": str(tree)}
        environment.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        with log.open("w") as stderr:  # the child keeps its own handle
            self.process = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=tree,
                env=environment,
                text=True,
            )
        ready = self.ask(request)
        found = Path(ready["seqgen"]).parents[1]  # TREE/seqgen/__init__.py
        if found != tree:
            self.stop()
            raise _error(f"the worker for {tree} imported seqgen from {found}, not the tree")

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request and wait for its answer (SeqgenError for the worker's error)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # it stopped: the empty answer below says why
        line = self.process.stdout.readline()
        if not line:
            self.stop()
            raise _error(f"the worker for {self.tree} stopped: {self._last_log_line()}")
        answer = json.loads(line)
        if "error" in answer:
            self.stop()
            raise _error(f"the worker for {self.tree}: {answer['error']}")
        return answer

    def stop(self) -> None:
        """Close its stdin (it exits at the end of its input), killing it if it hangs."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _last_log_line(self) -> str:
        lines = self.log.read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exit status {self.process.wait()}"


def _error(message: str) -> Exception:
    from seqgen.errors import SeqgenError

    return SeqgenError(message)


def alternate(workers: Sequence[Worker], pairs: int) -> list[list[dict[str, Any]]]:
    """``pairs`` timed translations in each worker, A B then B A: each pair's two answers,
    in the workers' order."""
    runs = []
    for index in range(pairs):
        order = range(len(workers)) if index % 2 == 0 else reversed(range(len(workers)))
        answers = {position: workers[position].ask({"translate": True}) for position in order}
        runs.append([answers[position] for position in range(len(workers))])
    return runs


def summarize(runs: list[list[dict[str, Any]]], trees: Sequence[Path]) -> dict[str, Any]:
    """Medians of each tree's rates, the paired new/old ratios, and the differing lines."""
    count = len(runs[0][0]["outputs"])
    report: dict[str, Any] = {"lines": count, "pairs": len(runs), "trees": {}}
    rates = {}
    for position, (role, tree) in enumerate(zip(ROLES, trees, strict=True)):
        wall = [count / pair[position]["wall"] for pair in runs]
        cpu = [count / pair[position]["cpu"] for pair in runs]
        rates[role] = {"wall": wall, "cpu": cpu}
        report["trees"][role] = {
            "tree": str(tree),
            "wall_sentences_per_second": wall,
            "cpu_sentences_per_second": cpu,
            "median_wall_sentences_per_second": statistics.median(wall),
            "median_cpu_sentences_per_second": statistics.median(cpu),
        }
    for clock in ("cpu", "wall"):
        paired = zip(rates["new"][clock], rates["old"][clock], strict=True)
        ratios = [new / old for new, old in paired]
        report[f"{clock}_ratio"] = {
            "median": statistics.median(ratios),
            "min": min(ratios),
            "max": max(ratios),
            "all": ratios,
        }
    # The most lines that differ in any pair (each tree's decoding is deterministic).
    report["differing_lines"] = max(
        sum(a != b for a, b in zip(old["outputs"], new["outputs"], strict=True))
        for old, new in runs
    )
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as a few lines of text."""
    beam = report["beam_size"]
    rows = [
        f"{report['backend']}, {'greedy' if beam == 1 else f'beam {beam}'}, {report['model']}: "
        f"{report['lines']:,} lines, pairs: {report['pairs']}, threads: {report['threads']}; "
        f"load average {report['load_before']:.1f} before, {report['load_after']:.1f} after"
    ]
    for role, tree in report["trees"].items():
        rows.append(
            f"{role}: {tree['median_wall_sentences_per_second']:8.1f} sentences/s (wall), "
            f"{tree['median_cpu_sentences_per_second']:8.1f} (CPU time), medians; {tree['tree']}"
        )
    cpu, wall = report["cpu_ratio"], report["wall_ratio"]
    rows.append(
        f"new / old, paired: CPU time {cpu['median']:.3f} ({cpu['min']:.3f} to "
        f"{cpu['max']:.3f}), wall clock {wall['median']:.3f} ({wall['min']:.3f} to "
        f"{wall['max']:.3f})"
    )
    rows.append(
        f"lines differing between the trees' outputs: {report['differing_lines']} of "
        f"{report['lines']:,}"
    )
    return "\n".join(rows)


def check_arguments(arguments: argparse.Namespace) -> list[Path]:
    """The two trees, or SeqgenError naming the first bad argument."""
    if len(arguments.tree) != 2:
        raise _error(f"give --tree twice (the old tree, then the new), got {len(arguments.tree)}")
    if arguments.backend not in BACKENDS:
        raise _error(f"unknown backend {arguments.backend!r}; choose one of: {', '.join(BACKENDS)}")
    for name in ("beam_size", "pairs", "threads"):
        if getattr(arguments, name) < 1:
            raise _error(f"--{name.replace('_', '-')} must be at least 1")
    if arguments.lines < 0:
        raise _error("--lines must be 0 (every line) or more")
    trees = [Path(tree).resolve() for tree in arguments.tree]  # the workers run in the trees
    for tree in trees:
        if not (tree / "seqgen" / "__init__.py").is_file():
            raise _error(
                f"{tree} holds no seqgen checkout (no seqgen/__init__.py): give a folder "
                "from git worktree add or git archive"
            )
    return trees


def measure(arguments: argparse.Namespace, trees: list[Path], scratch: Path) -> dict[str, Any]:
    """Start both workers (one after the other: a start exports and loads), alternate them,
    and return the report."""
    lines = read_lines(arguments.lines)
    work = arguments.work or scratch
    request = {
        "backend": arguments.backend,
        "model": arguments.model,
        "beam_size": arguments.beam_size,
        "threads": arguments.threads,
        "lines": lines,
    }
    workers: list[Worker] = []
    try:
        for index, (role, tree) in enumerate(zip(ROLES, trees, strict=True)):
            folder = work / f"{index + 1}-{role}"  # a bundle exported by this tree only
            log = scratch / f"{role}.log"
            workers.append(Worker(tree, {**request, "work": str(folder)}, log))
        load_before = os.getloadavg()[0]
        runs = alternate(workers, arguments.pairs)
    finally:
        for worker in workers:
            worker.stop()
    report = summarize(runs, trees)
    settings = {key: value for key, value in request.items() if key != "lines"}
    return {**settings, **report, "load_before": load_before, "load_after": os.getloadavg()[0]}


def main(argv: Sequence[str] | None = None) -> int:
    """Print the paired comparison (and write it as JSON with ``--json``); 1 on bad input."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", default=[], help="old, then new")
    parser.add_argument("--backend", default="onnx", help=", ".join(BACKENDS))
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=15)
    parser.add_argument("--model", default="multi30k-de-en")
    parser.add_argument("--threads", type=int, default=1, help="cores each worker may use")
    parser.add_argument("--lines", type=int, default=0, help="the first N lines (0: all)")
    parser.add_argument(
        "--work", type=Path, help="keep exported bundles here, a folder per tree (default: not)"
    )
    parser.add_argument("--json", dest="json_file", type=Path)
    arguments = parser.parse_args(argv)
    from seqgen.benchmark.report import print_report

    def make() -> dict[str, Any]:
        trees = check_arguments(arguments)
        with tempfile.TemporaryDirectory(prefix="seqgen-paired-") as scratch:
            return measure(arguments, trees, Path(scratch))

    return 0 if print_report(make, format_report, arguments.json_file) else 1


def worker() -> int:
    """The worker's loop: the first request opens the translator and warms it up, each
    later one times a translation; an error ends it with one ``{"error": ...}`` line."""
    protocol = _keep_stdout_for_answers()
    request = json.loads(sys.stdin.readline() or "{}")
    try:
        translator, seqgen_file = _open_translator(request)
        translate = _timed(translator, request["lines"], request["beam_size"])
        translate()  # the warm-up
        _answer(protocol, {"seqgen": seqgen_file})
        for _ in sys.stdin:
            _answer(protocol, translate())
    except Exception as error:  # every failure goes to the driver, as one line
        import traceback

        traceback.print_exc()  # into the worker's log
        seqgen_error = type(error).__module__.startswith("seqgen")
        _answer(protocol, {"error": str(error) if seqgen_error else repr(error)})
        return 1
    return 0


def _keep_stdout_for_answers() -> IO[str]:
    """The answers' stream: stdout, which everything else (a library's print, a C
    library's output) now leaves for stderr."""
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return protocol


def _answer(protocol: IO[str], answer: dict[str, Any]) -> None:
    protocol.write(json.dumps(answer) + "\n")
    protocol.flush()


def _open_translator(request: dict[str, Any]) -> tuple[Any, str]:
    """The tree's translator on the request's backend, and the seqgen file it came from."""
    threads = request["threads"]
    _drop_editable_install()
    use_cores(threads)
    import seqgen
    from seqgen.benchmark.batch_independence import open_backend

    translator = open_backend(request["backend"], request["model"], Path(request["work"]))
    if "torch" in sys.modules:  # OMP_NUM_THREADS set it too; a tree may have changed it
        sys.modules["torch"].set_num_threads(threads)
    return translator, str(Path(seqgen.__file__).resolve())


def _drop_editable_install() -> None:
    """Remove the import hook of an editable install of seqgen (``pip install -e``): it serves
    any seqgen module the tree lacks from the installed checkout, so a tree missing one would
    silently run another tree's code. Without it, such an import fails and says so."""
    for finder in list(sys.meta_path):
        module = sys.modules.get(getattr(finder, "__module__", ""))
        if "seqgen" in getattr(module, "MAPPING", {}):
            sys.meta_path.remove(finder)


def _timed(translator: Any, lines: list[str], beam_size: int) -> Any:
    """A call that translates ``lines`` and returns the wall and CPU seconds and outputs."""

    def translate() -> dict[str, Any]:
        wall, cpu = time.perf_counter(), time.process_time()
        outputs = translator.translate(lines, beam_size=beam_size)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return {"wall": wall, "cpu": cpu, "outputs": list(outputs)}

    return translate


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        # Run as a file, its folder (this tree's seqgen/benchmark) leads sys.path: drop it, so
        # every import but the standard library's comes from PYTHONPATH, the measured tree.
        here = str(Path(__file__).resolve().parent)
        sys.path[:] = [entry for entry in sys.path if str(Path(entry or ".").resolve()) != here]
        sys.exit(worker())
    sys.exit(main())
