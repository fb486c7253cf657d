"""``seqgen serve`` as a process: its start line, a port in use, a graceful stop on SIGTERM,
and the load test's short form (the full one is in docs/serving.md)."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys

import pytest

from seqgen.benchmark import serving as load_test

SEQGEN = [sys.executable, "-m", "seqgen"]


def test_a_port_in_use_is_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*SEQGEN, "serve", "--model", "sentiment", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "--port" in done.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-texts", "0"], "--max-texts must be at least 1"),
        (["--port", "70000"], "--port must be between 0 and 65535"),
        (["--timeout", "0"], "--timeout > 0"),
        (["--model", "no-such-model"], "no-such-model"),
    ],
)
def test_bad_flags_are_one_line(flags, message):
    done = subprocess.run([*SEQGEN, "serve", *flags], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and message in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_sigterm_answers_the_request_in_flight_then_stops():
    server = load_test.Server("shakespeare-char")
    connection = server.connect()
    body = {"prompt": "A", "max_new_tokens": 150, "strategy": "greedy", "stream": True}
    connection.request("POST", "/generate", json.dumps(body))
    response = connection.getresponse()
    assert response.readline() == b"event: piece\n"  # generating: now stop the server
    server.process.send_signal(signal.SIGTERM)
    events = (b"event: piece\n" + response.read()).decode().split("\n\n")
    end = [event for event in events if event.startswith("event: end")]
    assert end, events[-3:]
    text = json.loads(end[0].split("data: ", 1)[1])["texts"][0]
    assert len(text) == 1 + 150
    assert server.process.wait(timeout=60) in (0, -signal.SIGTERM)
    with pytest.raises(OSError):  # nobody listens any more
        http.client.HTTPConnection(server.host, server.port, timeout=5).request("GET", "/health")


def test_load_test_short_form(capsys):
    """Three clients send single sentences; every answer equals the CLI's batch translation
    of the same sentences (batch-independent decoding), and the server stops cleanly."""
    code = load_test.main(["--sentences", "24", "--clients", "1,3", "--max-seconds", "60"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "| 3 | 24 |" in printed


def test_the_load_test_of_a_missing_model_is_one_line(capsys):
    assert load_test.main(["--model", "/no/such/model", "--sentences", "2"]) == 1
    printed = capsys.readouterr()
    assert printed.out == ""
    lines = printed.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("seqgen: error: seqgen translate")
    assert "no such checkpoint: /no/such/model" in lines[0]


def test_serve_without_its_extra_names_the_extra():
    hide = "import sys; sys.modules['uvicorn'] = None; from seqgen.cli import run; run()"
    done = subprocess.run(
        [sys.executable, "-c", hide, "serve", "--model", "sentiment"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "pip install 'seqgen[serve]'" in done.stderr and done.stderr.count("\n") == 1
