"""seqgen bench: the FLOP counts, the timing helpers, and `seqgen bench --quick` as a smoke test."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from seqgen.benchmark import flops
from seqgen.benchmark.measure import CountingStep, median_rate
from seqgen.benchmark.suites import _onnx_backend
from seqgen.cli import main
from seqgen.tasks.generation.config import LanguageModelConfig
from seqgen.tasks.translation.config import EncoderDecoderConfig
from seqgen.tasks.translation.source_rows import OUTPUT_GROUPING, OUTPUT_IDS


def test_language_model_flops_count_every_matrix_product() -> None:
    config = LanguageModelConfig(cell="lstm", embedding_size=3, hidden_size=5, num_layers=2)
    first = 2 * 4 * 5 * (3 + 5)
    second = 2 * 4 * 5 * (5 + 5)
    assert flops.language_model_token(config, vocab_size=7) == first + second + 2 * 5 * 7
    gru = LanguageModelConfig(cell="gru", embedding_size=3, hidden_size=5, num_layers=1)
    assert flops.language_model_token(gru, vocab_size=7) == 2 * 3 * 5 * (3 + 5) + 2 * 5 * 7
    # Decoding with the gate table gathers the first layer's product over the embedding.
    gathered = flops.language_model_token(config, vocab_size=7, gate_table=True)
    assert gathered == 2 * 4 * 5 * 5 + second + 2 * 5 * 7
    assert flops.uses_gate_table("lstm", 8_000, 256)  # the bundled translator's 8,000 x 1,024
    assert not flops.uses_gate_table("lstm", 32_000, 1_024)


def test_translator_flops_follow_the_architecture() -> None:
    config = EncoderDecoderConfig(
        embedding_size=4,
        encoder_hidden_size=3,
        decoder_hidden_size=5,
        attention="general",
        input_feeding=True,
    )
    both_directions = 2 * (2 * 4 * 3 * (4 + 3))
    keys = 2 * 6 * 5
    assert flops.encoder_token(config) == both_directions + keys
    rnn = 2 * 4 * 5 * ((4 + 5) + 5)  # input feeding widens the first input
    attention = 2 * 10 * (5 + 6)  # scores and context over 10 source positions
    attentional = 2 * (6 + 5) * 5
    assert flops.decoder_token(config, 9, 10) == rnn + attention + attentional + 2 * 5 * 9
    gathered = 2 * 4 * 5 * (5 + 5)  # only the fed-back h~ and the hidden state
    expected = gathered + attention + attentional + 2 * 5 * 9
    assert flops.decoder_token(config, 9, 10, gate_table=True) == expected


def test_median_rate_is_work_over_time_after_a_warmup() -> None:
    calls = []
    rate, seconds = median_rate(lambda: calls.append(1) or 10.0, repeats=3, warmup=2)
    assert len(calls) == 5
    assert rate > 0 and seconds > 0 and rate == pytest.approx(10.0 / seconds, rel=0.5)


def test_counting_step_counts_rows_and_scored_tokens_also_through_narrowed_views() -> None:
    class Step:
        device = "cpu"

        def step(self, tokens: np.ndarray, state: dict) -> tuple[np.ndarray, dict]:
            return np.zeros((tokens.shape[0], 3), np.float32), state

        def narrowed(self, candidates: int) -> Step:
            return self

    counting = CountingStep(Step(), vocab_size=3)
    counting.step(np.zeros(4, np.int64), {})
    # A shortlisted step scores only the batch's shortlist: 2 tokens per row here.
    counting.narrowed(5).step(np.zeros(2, np.int64), {OUTPUT_IDS: np.array([3, 7])})
    assert counting.counts == {"rows": 6, "steps": 2, "scored": 4 * 3 + 2 * 2}
    # A grouped step's row scores its group's union only: 3 of the two groups' 6 ids.
    grouped = {OUTPUT_IDS: np.array([3, 7, 9, 4, 5, 1]), OUTPUT_GROUPING: (2, 3)}
    counting.step(np.zeros(5, np.int64), grouped)
    assert counting.counts == {"rows": 11, "steps": 3, "scored": 4 * 3 + 2 * 2 + 5 * 3}
    assert counting.device == "cpu"


def test_cpu_peak_is_positive_or_says_why() -> None:
    peak, how = flops.cpu_peak()
    assert (peak is None) == ("FLOP/cycle" not in how)
    if peak is not None:
        assert peak > 1e9


def test_bench_rejects_overrides_without_a_model_name() -> None:
    result = CliRunner().invoke(main, ["bench", "--quick", "--set", "train.batch_size=4"])
    assert result.exit_code != 0
    assert "must start with generator. or translator." in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("cuda_usable", [False, True])
def test_onnx_backend_on_cuda_falls_back_to_the_cpu_build_and_says_so(cuda_usable: bool) -> None:
    opened = []

    def load_bundle(path: Path, *, device: str) -> SimpleNamespace:
        opened.append(device)  # "auto": CUDA where ONNX Runtime can use it, else the CPU
        return SimpleNamespace(device="cuda" if device == "auto" and cuda_usable else "cpu")

    on_cpu = _onnx_backend(Path("b"), torch.device("cpu"), load_bundle)
    assert list(on_cpu) == ["onnx"] and on_cpu["onnx"].device == "cpu"
    on_cuda = _onnx_backend(Path("b"), torch.device("cuda"), load_bundle)
    assert list(on_cuda) == ["onnx" if cuda_usable else "onnx on cpu"]
    assert opened == ["cpu", "auto"]


@pytest.mark.slow
def test_bench_quick_prints_a_table_and_writes_json(data_dir: str, tmp_path: Path) -> None:
    report_file = tmp_path / "bench.json"
    arguments = ["bench", "--quick", "--data-dir", data_dir, "--json", str(report_file)]
    arguments += ["--set", "translator.train.batch_tokens=512"]
    arguments += ["--set", "translator.decoding.batch_size=30"]
    result = CliRunner().invoke(main, arguments, env={"SEQGEN_CACHE_DIR": str(tmp_path)})
    assert result.exit_code == 0, result.output
    report = json.loads(report_file.read_text())
    names = [row["name"] for row in report["results"]]
    assert names == [
        "generator training",
        "translator training",
        "translation greedy, torch",
        "translation beam 5, torch",
        "translation greedy, onnx",
        "translation beam 5, onnx",
        "translation greedy, onnx int8",
        "translation beam 5, onnx int8",
        "generator sampling, torch",
        "classification, torch",
        "classification, onnx",
    ]
    assert all(row["value"] > 0 for row in report["results"])
    assert report["results"][1]["extra"]["batch"] == "512 tokens"
    assert {row["extra"]["batch_size"] for row in report["results"][2:8]} == {30}
    assert report["peak_memory_bytes"] > 0
    assert "translation beam 5, onnx" in result.output and "GFLOP/s" in result.output


@pytest.mark.parametrize(
    ("option", "asset", "words"),
    [
        ("--generator", "multi30k-de-en", ("holds a translator, not a generator",)),
        ("--translator", "shakespeare-char", ("holds a generator, not a translator",)),
        ("--classifier", "multi30k-de-en", ("holds a translator, not a classifier",)),
    ],
)
def test_a_model_of_another_task_is_refused_before_measuring(
    option: str, asset: str, words: tuple[str, ...]
) -> None:
    from seqgen.checkpoints import model_path

    path = str(model_path(asset))  # the bundled model's checkpoint
    result = CliRunner().invoke(main, ["bench", "--quick", option, path])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.startswith("seqgen: error: ") and all(w in result.stderr for w in words)
