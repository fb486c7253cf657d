"""The load test of ``seqgen serve``: concurrent clients on loopback, each sending one
sentence of test_2016_flickr at a time, against the same sentences translated by the CLI in
one batch and one process call at a time.

    python -m seqgen.benchmark.serving --model multi30k-de-en --clients 1,16,64

It starts the server itself (``seqgen serve --port 0``), stops it at the end, and is bounded:
``--sentences`` per client count, ``--max-seconds`` per run. It prints one Markdown table
(throughput, p50/p99 latency, the server's memory before and after) and the number of
answers that differ from the CLI's batch translation; ``--json`` writes the figures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from seqgen.benchmark.report import print_report
from seqgen.errors import SeqgenError

SEQGEN = [sys.executable, "-m", "seqgen"]


@dataclass
class LoadResult:
    """One run of the load test."""

    clients: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    differing: int  # answers unlike the CLI's batch translation of the same sentence
    rss_mb_after: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


class Server:
    """``seqgen serve`` in a child process on a free port of 127.0.0.1."""

    def __init__(self, model: str, extra: Sequence[str] = ()) -> None:
        command = [*SEQGEN, "serve", "--model", model, "--port", "0", *extra]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        assert self.process.stderr is not None
        first = self.process.stderr.readline()  # "seqgen: serving ... on http://HOST:PORT"
        found = re.search(r"http://([^ ]+):(\d+)", first)
        if not found:
            self.process.kill()
            raise SystemExit(f"the server did not start: {first.strip()}")
        self.host, self.port = found.group(1).strip("[]"), int(found.group(2))
        # Drain stderr so the server never blocks on a full pipe.
        threading.Thread(target=self.process.stderr.read, daemon=True).start()

    def post(self, connection: http.client.HTTPConnection, path: str, body: dict) -> dict:
        connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        answer = json.loads(response.read())
        if response.status != 200:
            raise RuntimeError(f"{path} answered {response.status}: {answer}")
        return answer

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=120)

    def rss_mb(self) -> float:
        """The server's resident memory (Linux), in MiB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(timeout=60)


def load_run(
    server: Server, sentences: list[str], expected: list[str], clients: int, max_seconds: float
) -> LoadResult:
    """``clients`` threads, each with its own keep-alive connection, take the next sentence
    and send it alone until every sentence is sent or ``max_seconds`` pass."""
    latencies: list[float] = []
    differing = [0]
    next_index = iter(range(len(sentences)))
    lock = threading.Lock()
    deadline = time.perf_counter() + max_seconds

    def client() -> None:
        connection = server.connect()
        while time.perf_counter() < deadline:
            with lock:
                index = next(next_index, None)
            if index is None:
                break
            sent = time.perf_counter()
            answer = server.post(connection, "/translate", {"text": [sentences[index]]})
            with lock:
                latencies.append(time.perf_counter() - sent)
                differing[0] += answer["translations"][0] != expected[index]
        connection.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
    return LoadResult(
        clients=clients,
        requests=len(latencies),
        seconds=seconds,
        p50_ms=1000 * statistics.median(latencies),
        p99_ms=1000 * quantiles[98],
        differing=differing[0],
        rss_mb_after=server.rss_mb(),
    )


def cli_batch(model: str, sentences: list[str]) -> tuple[list[str], float, float]:
    """The sentences translated by one ``seqgen translate`` call: the translations, the
    decoding throughput it reports (sentences/s) and the whole call's wall time."""
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "source.txt"
        source.write_text("".join(f"{line}\n" for line in sentences), encoding="utf-8")
        started = time.perf_counter()
        done = subprocess.run(
            [*SEQGEN, "translate", "--model", model, "--input", str(source), "--timing"],
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
    if done.returncode != 0:  # the CLI's own one line: a bad model, most often
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        reason = lines[-1].removeprefix("seqgen: error: ")
        raise SeqgenError(f"seqgen translate --model {model} failed: {reason}")
    speed = float(re.search(r"\(([\d.]+) sentences/s\)", done.stderr).group(1))  # type: ignore[union-attr]
    return done.stdout.splitlines(), speed, wall


def one_call_each(model: str, sentences: list[str]) -> float:
    """Seconds per sentence when each is one ``seqgen translate`` process."""
    started = time.perf_counter()
    for sentence in sentences:
        subprocess.run(
            [*SEQGEN, "translate", "--model", model],
            input=sentence + "\n",
            capture_output=True,
            text=True,
            check=True,
        )
    return (time.perf_counter() - started) / len(sentences)


def run_load_test(arguments: argparse.Namespace) -> dict:
    """Every measurement the command line asks for, as one dictionary."""
    from seqgen.data.corpora import load_parallel

    lines, _ = load_parallel(arguments.corpus, "test_2016_flickr", data_dir=arguments.data_dir)
    sentences = lines[: arguments.sentences]
    expected, batch_speed, batch_wall = cli_batch(arguments.model, sentences)
    report: dict = {
        "model": arguments.model,
        "sentences": len(sentences),
        "cli_batch_sentences_per_second": batch_speed,
        "cli_batch_wall_seconds": batch_wall,
        "runs": [],
    }
    if arguments.one_call_each:
        seconds = one_call_each(arguments.model, sentences[: arguments.one_call_each])
        report["cli_one_call_each_seconds_per_sentence"] = seconds
    server = Server(arguments.model, arguments.server_args)
    try:
        connection = server.connect()
        server.post(connection, "/translate", {"text": sentences[:8]})  # warm up
        report["rss_mb_start"] = server.rss_mb()
        for clients in arguments.clients:
            result = load_run(server, sentences, expected, clients, arguments.max_seconds)
            report["runs"].append({**asdict(result), "per_second": result.per_second})
        if arguments.soak:
            report["soak"] = soak(server, sentences, expected, arguments)
    finally:
        report["server_exit_code"] = server.stop()
    return report


def soak(server: Server, sentences: list[str], expected: list[str], arguments) -> dict:
    """``--soak`` requests from the most clients, in rounds of the test set, with the
    server's memory after each round (flat memory means no leak per request)."""
    done: list[LoadResult] = []
    while sum(result.requests for result in done) < arguments.soak:
        count = min(len(sentences), arguments.soak - sum(result.requests for result in done))
        clients = max(arguments.clients)
        done.append(load_run(server, sentences[:count], expected, clients, arguments.max_seconds))
    seconds = sum(result.seconds for result in done)
    requests = sum(result.requests for result in done)
    return {
        "clients": max(arguments.clients),
        "requests": requests,
        "seconds": seconds,
        "per_second": requests / seconds,
        "p50_ms": statistics.median(result.p50_ms for result in done),
        "p99_ms": max(result.p99_ms for result in done),
        "differing": sum(result.differing for result in done),
        "rss_mb_after": done[-1].rss_mb_after,
        "rss_mb_by_round": [round(result.rss_mb_after) for result in done],
    }


def format_report(report: dict) -> str:
    """The report as a Markdown table and a few lines."""
    rows = [
        "| clients | requests | sentences/s | p50 ms | p99 ms | differ from CLI | server RSS MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    runs = [*report["runs"], *([report["soak"]] if "soak" in report else [])]
    for run in runs:
        rows.append(
            f"| {run['clients']} | {run['requests']:,} | {run['per_second']:.1f} | "
            f"{run['p50_ms']:.0f} | {run['p99_ms']:.0f} | {run['differing']} | "
            f"{run['rss_mb_after']:.0f} |"
        )
    rows.append("")
    rows.append(
        f"CLI, one batch of {report['sentences']}: "
        f"{report['cli_batch_sentences_per_second']:.1f} sentences/s decoding "
        f"({report['cli_batch_wall_seconds']:.1f} s for the whole call)"
    )
    if "cli_one_call_each_seconds_per_sentence" in report:
        each = report["cli_one_call_each_seconds_per_sentence"]
        rows.append(f"CLI, one process call per sentence: {1 / each:.2f} sentences/s")
    if "soak" in report:
        rounds = ", ".join(str(mb) for mb in report["soak"]["rss_mb_by_round"])
        rows.append(f"server RSS (MiB) after each round of the soak: {rounds}")
    rows.append(
        f"server RSS after warm-up {report['rss_mb_start']:.0f} MiB; "
        f"exit status after SIGTERM {report['server_exit_code']} (-15: stopped by the signal, "
        "after answering the requests in flight)"
    )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="multi30k-de-en")
    parser.add_argument("--corpus", default="multi30k:de-en")
    parser.add_argument("--data-dir", default=os.environ.get("SEQGEN_DATA_DIR"))
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument(
        "--clients", type=lambda text: [int(n) for n in text.split(",")], default=[1, 16, 64]
    )
    parser.add_argument("--max-seconds", type=float, default=120.0, help="per run")
    parser.add_argument("--one-call-each", type=int, default=0, metavar="N")
    parser.add_argument("--soak", type=int, default=0, metavar="REQUESTS")
    parser.add_argument("--server-args", nargs=argparse.REMAINDER, default=[])
    parser.add_argument("--json", dest="json_file")
    arguments = parser.parse_args(argv)
    report = print_report(lambda: run_load_test(arguments), format_report, arguments.json_file)
    if report is None:
        return 1
    runs = [*report["runs"], *([report["soak"]] if "soak" in report else [])]
    # uvicorn ends a graceful shutdown by raising the signal again: -SIGTERM is a clean stop.
    clean = report["server_exit_code"] in (0, -signal.SIGTERM)
    return 0 if clean and not any(run["differing"] for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
