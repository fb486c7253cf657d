"""Where a decode's time goes, by ONNX Runtime's own profiler.

``python -m seqgen.benchmark.profile_decode --backend onnx --beam-size 5`` opens the
translator's bundle with profiling on (``seqgen.decoding.onnx_session.profiling_sessions``),
translates test_2016_flickr once to warm up and once timed, and prints from the sessions'
traces: the timed decode's wall ms; each graph's runs, ms inside ONNX Runtime and ms in its
nodes (the encoder and the step graph), with what is left for the host (search, ``select``,
shortlists, tokenizing); and the step graph's costliest node kinds and nodes, with their
share of its nodes' time. The profiler itself slows each run, so the rate it prints is not a
speed figure. ``--backend onnx`` is the packaged float32 bundle of a bundled model (else an
export of the checkpoint), ``int8`` an int8 export, made into ``--work`` (default: a
temporary folder). The traces go into a temporary folder, removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seqgen.benchmark.paired import read_lines
from seqgen.benchmark.report import print_report
from seqgen.errors import SeqgenError

BACKENDS = ("onnx", "int8")
KERNEL_SUFFIX = "_kernel_time"  # a node's own run; its "_fence_*" events are the waits


def bundle_folder(backend: str, model: str, work: Path) -> Path:
    """The bundle to profile: the packaged float32 bundle of a bundled model for ``onnx``,
    else one exported from the checkpoint into ``work`` (first use only)."""
    from seqgen.benchmark.batch_independence import exported_bundle
    from seqgen.bundles.reader import bundle_kind
    from seqgen.checkpoints import packaged_bundle

    folder = packaged_bundle(model) if backend == "onnx" else None
    if folder is None or bundle_kind(folder) is None:
        folder = exported_bundle(backend, model, work)
    if bundle_kind(folder) != "translation":
        raise SeqgenError(f"{model} is not a translator; profile_decode profiles translation")
    return folder


def profile(
    folder: Path, lines: Sequence[str], *, beam: int, threads: int, traces: Path
) -> tuple[float, dict[str, list[dict[str, Any]]]]:
    """Open the bundle in ``folder`` with profiling into ``traces``, translate ``lines``
    twice (a warm-up, then timed); the timed wall seconds and each session's trace events
    of the timed translation."""
    from seqgen.bundles.reader import load_bundle
    from seqgen.decoding.onnx_session import profiling_sessions

    with profiling_sessions(traces / "trace"):
        translator = load_bundle(folder, device="cpu", threads=threads)
    sessions = {
        name: session
        for name, session in translator.step_function.sessions.items()
        if session is not None
    }
    try:
        translator.translate(lines, beam_size=beam)
        started = time.perf_counter()
        translator.translate(lines, beam_size=beam)
        seconds = time.perf_counter() - started
    finally:  # each session writes its trace now, inside the folder that is removed after
        files = {name: session.end_profiling() for name, session in sessions.items()}
    return seconds, {
        name: second_half(json.loads(Path(file).read_text())) for name, file in files.items()
    }


def second_half(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events of the timed translation: from the start of the second half of the
    session's runs on (the warm-up ran the same inputs, so as many runs)."""
    runs = sorted(event["ts"] for event in events if event.get("name") == "model_run")
    if len(runs) % 2:
        raise SeqgenError(
            f"the warm-up and the timed translation ran a graph {len(runs)} times in all, "
            "not the same number each; is decoding deterministic here?"
        )
    if not runs:
        return []
    return [event for event in events if event.get("ts", -1) >= runs[len(runs) // 2]]


def graph_summary(events: list[dict[str, Any]]) -> dict[str, Any]:
    """A graph's runs, ms inside ONNX Runtime, and its nodes' ms by node and by kind."""
    nodes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    ops: dict[str, str] = {}
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith(KERNEL_SUFFIX):
            continue
        node, op = event["name"][: -len(KERNEL_SUFFIX)], event["args"].get("op_name", "?")
        nodes[node] += event["dur"] / 1000  # microseconds
        kinds[op] += event["dur"] / 1000
        ops[node] = op
    runs = [event["dur"] / 1000 for event in events if event.get("name") == "model_run"]
    return {
        "runs": len(runs),
        "run_ms": sum(runs),
        "node_ms": sum(nodes.values()),
        "kinds": kinds,
        "nodes": nodes,
        "ops": ops,
    }


def build_report(
    seconds: float, traces: dict[str, list[dict[str, Any]]], *, top: int
) -> dict[str, Any]:
    """The figures to print: the decode, each graph, the step graph's top kinds and nodes."""
    wall_ms = 1000 * seconds
    graphs = {name: graph_summary(events) for name, events in traces.items()}
    step = graphs["step"]
    node_ms = step["node_ms"] or 1.0  # no nodes timed: shares of 0, not a division by 0
    return {
        "wall_ms": wall_ms,
        "graphs": {
            name: {
                "runs": graph["runs"],
                "run_ms": graph["run_ms"],
                "node_ms": graph["node_ms"],
                "share": graph["run_ms"] / wall_ms,
            }
            for name, graph in graphs.items()
        },
        "rest_ms": wall_ms - sum(graph["run_ms"] for graph in graphs.values()),
        "step_kinds": [
            {"op": op, "ms": ms, "share": ms / node_ms} for op, ms in step["kinds"].most_common(top)
        ],
        "step_nodes": [
            {"node": node, "op": step["ops"][node], "ms": ms, "share": ms / node_ms}
            for node, ms in step["nodes"].most_common(top)
        ],
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as text: the decode, a row per graph, the step graph's kinds and nodes."""
    beam = report["beam_size"]
    wall = report["wall_ms"]
    rows = [
        f"{report['model']}, {report['backend']} bundle, "
        f"{'greedy' if beam == 1 else f'beam {beam}'}, {report['lines']:,} lines, "
        f"{report['threads']} batch(es) at a time",
        f"whole decode: {wall:,.1f} ms ({1000 * report['lines'] / wall:,.1f} sentences/s "
        "while profiled)",
        f"{'graph':<10} {'runs':>6} {'ms':>10} {'share':>7} {'nodes ms':>10}",
    ]
    for name, graph in report["graphs"].items():
        rows.append(
            f"{name:<10} {graph['runs']:>6} {graph['run_ms']:>10,.1f} "
            f"{graph['share']:>7.1%} {graph['node_ms']:>10,.1f}"
        )
    rest = report["rest_ms"]
    host = "(the host: search, select, tokenizing)"
    rows.append(f"{'the rest':<10} {'':>6} {rest:>10,.1f} {rest / wall:>7.1%}  {host}")
    step_nodes = report["graphs"]["step"]["node_ms"]
    rows.append(f"step graph's node kinds (share of its {step_nodes:,.1f} ms of nodes):")
    rows += [
        f"  {k['op']:<28} {k['ms']:>10,.1f} ms {k['share']:>7.1%}" for k in report["step_kinds"]
    ]
    rows.append("step graph's nodes:")
    rows += [
        f"  {n['node']:<48} {n['op']:<22} {n['ms']:>10,.1f} ms {n['share']:>7.1%}"
        for n in report["step_nodes"]
    ]
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    """Profile one timed translation and print where it went; 1 on bad input."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="multi30k-de-en")
    parser.add_argument("--backend", default="onnx", help=", ".join(BACKENDS))
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--top", type=int, default=15, help="node kinds and nodes to list")
    parser.add_argument("--threads", type=int, default=1, help="batches decoded at once")
    parser.add_argument("--lines", type=int, default=0, help="the first N lines (0: all)")
    parser.add_argument("--work", type=Path, help="keep the exported bundle here")
    parser.add_argument("--json", dest="json_file", type=Path)
    arguments = parser.parse_args(argv)
    report = print_report(lambda: run(arguments), format_report, arguments.json_file)
    return 0 if report else 1


def run(arguments: argparse.Namespace) -> dict[str, Any]:
    """Check the arguments, then profile; the report with its settings."""
    if arguments.backend not in BACKENDS:
        raise SeqgenError(
            f"unknown backend {arguments.backend!r}; choose one of: {', '.join(BACKENDS)} "
            "(ONNX Runtime's profiler sees the bundles only)"
        )
    for name in ("beam_size", "top", "threads"):
        if getattr(arguments, name) < 1:
            raise SeqgenError(f"--{name.replace('_', '-')} must be at least 1")
    lines = read_lines(max(arguments.lines, 0))
    with tempfile.TemporaryDirectory(prefix="seqgen-profile-") as scratch:
        work = arguments.work or Path(scratch) / "bundles"
        folder = bundle_folder(arguments.backend, arguments.model, work)
        traces = Path(scratch) / "traces"
        traces.mkdir()
        seconds, events = profile(
            folder, lines, beam=arguments.beam_size, threads=arguments.threads, traces=traces
        )
    settings = {
        "model": arguments.model,
        "backend": arguments.backend,
        "beam_size": arguments.beam_size,
        "threads": arguments.threads,
        "lines": len(lines),
    }
    return {**settings, **build_report(seconds, events, top=arguments.top)}


if __name__ == "__main__":
    sys.exit(main())
