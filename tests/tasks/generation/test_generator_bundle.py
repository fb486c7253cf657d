"""ONNX export: the bundle, its checks, and parity with PyTorch on the CPU.

Exports cost seconds each, so each tiny model is exported once per module (LSTM and GRU,
float32) and shared; the float16 export is marked slow.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import seqgen
from seqgen.bundles.export import export_bundle
from seqgen.bundles.reader import FORMAT_VERSION, load_bundle
from seqgen.decoding.beam import beam_search
from seqgen.decoding.contract import TOP_CANDIDATES
from seqgen.decoding.search import greedy_search
from seqgen.errors import CheckpointError, SeqgenError
from seqgen.layers.cells import tanh_rnn_as_gru, with_exportable_cells
from seqgen.loading import load
from seqgen.recipes import Recipe, recipe_to_dict
from seqgen.tasks.generation.config import LanguageModelConfig
from seqgen.tasks.generation.model import LanguageModel
from seqgen.tasks.generation.onnx_step import OnnxLanguageModelStep
from seqgen.tasks.generation.pipeline import Generator, banned_token_ids
from seqgen.text import TokenizerConfig, train_tokenizer
from seqgen.training.checkpoint import Checkpoint, save_checkpoint

onnx = pytest.importorskip("onnx", reason="exporting needs the export extra")
pytest.importorskip("onnxscript", reason="exporting needs the export extra")

TEXT = "to be, or not to be: that is the question.\n"
PROMPT_LENGTHS = {  # batch size -> prompt lengths (BOS included), mixed in one batch
    1: [100],
    7: [1, 100, 2, 50, 3, 77, 100],
    64: [int(n) for n in np.random.default_rng(0).permutation(np.linspace(1, 100, 64))],
}
MAX_NEW_TOKENS = 12
ONNX_RUNS_FAST = {"threads": 1}  # tiny graphs: ONNX Runtime's thread pool only costs here


def save_tiny_checkpoint(path: Path, cell: str) -> Path:
    """A random two-layer model whose output layer is scaled up: random models are nearly
    uniform, and near-ties would make token comparisons test luck instead of parity."""
    torch.manual_seed(0)
    recipe = Recipe(
        model=LanguageModelConfig(
            cell=cell, embedding_size=16, hidden_size=24, num_layers=2, dropout=0.1
        )
    )
    tokenizer = train_tokenizer(TokenizerConfig(kind="char"), TEXT)
    model = LanguageModel(recipe.model, tokenizer.vocab_size)
    with torch.no_grad():
        model.output.weight.mul_(8.0)
    checkpoint = Checkpoint(
        "language_model", recipe_to_dict(recipe), tokenizer.to_dict(), model.state_dict()
    )
    save_checkpoint(path, checkpoint)
    return path


@pytest.fixture(scope="module", params=["lstm", "gru", "rnn"])
def exported(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """``(checkpoint, bundle)`` of a tiny model of each cell type."""
    folder = tmp_path_factory.mktemp(request.param)
    checkpoint = save_tiny_checkpoint(folder / "model.safetensors", request.param)
    return checkpoint, export_bundle(checkpoint, folder / "bundle")


@pytest.fixture(scope="module", params=[False, True], ids=["host-state", "io-binding"])
def runtimes(
    request: pytest.FixtureRequest, exported: tuple[Path, Path]
) -> tuple[Generator, Generator]:
    """PyTorch and ONNX Runtime generators; the ONNX one keeps its state in numpy arrays or
    (as on CUDA) in ONNX Runtime's memory with I/O binding, the select graph and narrowed
    log-probs."""
    checkpoint, bundle = exported
    generator = load(checkpoint, device="cpu")
    assert isinstance(generator, Generator)
    runtime = load_bundle(bundle, device="cpu", io_binding=request.param, **ONNX_RUNS_FAST)
    assert runtime.step_function.io_binding is request.param
    return generator, runtime


def make_prompts(lengths: list[int], vocab_size: int, bos_id: int) -> list[list[int]]:
    generator = np.random.default_rng(len(lengths))
    return [[bos_id, *generator.integers(4, vocab_size, n - 1).tolist()] for n in lengths]


# --- the bundle -----------------------------------------------------------------------------


def test_bundle_holds_checked_graphs_tokenizer_and_manifest(exported: tuple[Path, Path]) -> None:
    checkpoint, bundle = exported
    assert sorted(p.name for p in bundle.iterdir()) == [
        "manifest.json",
        "prime.onnx",
        "select.onnx",
        "step.onnx",
        "tokenizer.json",
    ]
    for graph in ("prime.onnx", "step.onnx", "select.onnx"):
        onnx.checker.check_model(onnx.load(str(bundle / graph)), full_check=True)
    manifest = json.loads((bundle / "manifest.json").read_text())
    cell = manifest["model"]["cell"]
    names = ["hidden", "cell"] if cell == "lstm" else ["hidden"]
    state = [{"name": n, "dtype": "float32", "shape": ["rows", 2, 24]} for n in names]
    new_state = [{**entry, "name": "new_" + entry["name"]} for entry in state]
    vocab = manifest["model"]["vocab_size"]
    token_ids = {"name": "token_ids", "dtype": "int64", "shape": ["rows", "time"]}
    log_probs = {"name": "log_probs", "dtype": "float32", "shape": ["rows", vocab]}
    # each row's top_k best (format 5; the graph caps top_k at min(TOP_CANDIDATES, vocab))
    top_log_probs = {"name": "top_log_probs", "dtype": "float32", "shape": ["rows", "top_k"]}
    top_ids = {"name": "top_ids", "dtype": "int64", "shape": ["rows", "top_k"]}
    top_k = {"name": "top_k", "dtype": "int64", "shape": [1]}
    selected = [
        {**entry, "name": "selected_" + entry["name"], "shape": ["new_rows", 2, 24]}
        for entry in state
    ]
    assert manifest["graphs"] == {
        "prime": {"file": "prime.onnx", "inputs": [token_ids, *state], "outputs": new_state},
        "step": {
            "file": "step.onnx",
            "inputs": [{"name": "tokens", "dtype": "int64", "shape": ["rows"]}, *state, top_k],
            "outputs": [log_probs, top_log_probs, top_ids, *new_state],
        },
        "select": {
            "file": "select.onnx",
            "inputs": [{"name": "rows", "dtype": "int64", "shape": ["new_rows"]}, *state],
            "outputs": selected,
        },
    }
    assert manifest["format"] == "seqgen-bundle"
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["kind"] == "generation"
    assert manifest["seqgen_version"] == seqgen.__version__
    assert manifest["opset"] >= 18
    assert manifest["state"]["names"] == names
    assert manifest["special_ids"] == {"pad": 0, "unk": 1, "bos": 2, "eos": 3}
    generation = manifest["generation"]
    assert generation["banned_token_ids"] == [0, 2, 1, 3]
    assert generation["eos_id"] is None
    defaults = generation["defaults"]
    assert (defaults["max_new_tokens"], defaults["temperature"], defaults["strategy"]) == (
        300,
        0.8,
        "sample",
    )
    tokenizer = load(checkpoint, device="cpu").tokenizer
    assert json.loads((bundle / "tokenizer.json").read_text()) == tokenizer.to_dict()


# --- parity with PyTorch --------------------------------------------------------------------


@pytest.mark.parametrize("batch", sorted(PROMPT_LENGTHS))
def test_per_step_log_probs_agree_within_1e_4(
    runtimes: tuple[Generator, Generator], batch: int
) -> None:
    torch_step, onnx_step = (runtime.step_function for runtime in runtimes)
    prompts = make_prompts(PROMPT_LENGTHS[batch], runtimes[0].tokenizer.vocab_size, 2)
    torch_state, tokens = torch_step.start(prompts)
    onnx_state, onnx_tokens = onnx_step.start(prompts)
    np.testing.assert_array_equal(tokens, onnx_tokens)
    reorder = np.random.default_rng(1).integers(0, batch, batch)  # with repeats, like beams
    worst = 0.0
    for position in range(MAX_NEW_TOKENS):
        expected, torch_state = torch_step.step(tokens, torch_state)
        log_probs, onnx_state = onnx_step.step(tokens, onnx_state)
        assert log_probs.dtype == np.float32 and log_probs.shape == expected.shape
        worst = max(worst, float(np.abs(log_probs - expected).max()))
        tokens = expected.argmax(axis=1)  # both follow PyTorch's choices
        if position == MAX_NEW_TOKENS // 2:
            torch_state = torch_step.select(torch_state, reorder)
            onnx_state = onnx_step.select(onnx_state, reorder)
            tokens = tokens[reorder]
    assert worst < 1e-4, f"max |log-prob difference| {worst:.2e}"


@pytest.mark.parametrize("asked", [1, 5, TOP_CANDIDATES, 1000])
def test_the_step_returns_the_top_k_it_is_asked_for(
    runtimes: tuple[Generator, Generator], asked: int
) -> None:
    """Format 5: ``top_k`` sets how many candidates per row come back (ONNX Runtime's TopK
    costs about linearly in it), at most ``min(TOP_CANDIDATES, vocab)``: each row's best,
    best first, equal to the head of the full log-probs' ranking."""
    onnx_step = runtimes[1].step_function
    prompts = make_prompts(PROMPT_LENGTHS[max(PROMPT_LENGTHS)], runtimes[0].tokenizer.vocab_size, 2)
    state, tokens = onnx_step.start(prompts)
    full, _ = onnx_step.step(tokens, state)
    # With I/O binding the state is OrtValues; the session is run here with host arrays.
    host = {name: v.numpy() if hasattr(v, "numpy") else v for name, v in state.items()}
    inputs = {"tokens": tokens, **host, "top_k": np.array([asked])}
    session = onnx_step.step_session
    values, ids = session.run(["top_log_probs", "top_ids"], inputs)
    count = min(asked, TOP_CANDIDATES, full.shape[1])
    assert values.shape == ids.shape == (len(prompts), count)
    np.testing.assert_array_equal(values, np.take_along_axis(full, ids, axis=1))
    np.testing.assert_array_equal(values, -np.sort(-full, axis=1)[:, :count])
    if asked <= TOP_CANDIDATES:  # what search gets from a narrowed step: as many as it asks
        top, _ = onnx_step.narrowed(asked).step(tokens, state)
        assert top.values.shape == (len(prompts), count)


@pytest.mark.parametrize("batch", sorted(PROMPT_LENGTHS))
def test_greedy_and_beam_5_are_token_identical(
    runtimes: tuple[Generator, Generator], batch: int
) -> None:
    tokenizer = runtimes[0].tokenizer
    prompts = make_prompts(PROMPT_LENGTHS[batch], tokenizer.vocab_size, tokenizer.bos_id)
    common = {"max_new_tokens": MAX_NEW_TOKENS, "banned_token_ids": banned_token_ids(tokenizer)}
    greedy, beams = [], []
    for runtime in runtimes:
        step_function = runtime.step_function
        greedy.append(greedy_search(step_function, *step_function.start(prompts), **common))
        beams.append(
            beam_search(step_function, *step_function.start(prompts), beam_size=5, **common)
        )
    for torch_result, onnx_result in zip(greedy[0], greedy[1], strict=True):
        assert onnx_result.tokens == torch_result.tokens
        np.testing.assert_allclose(onnx_result.score, torch_result.score, atol=1e-3)
    for torch_best, onnx_best in zip(beams[0], beams[1], strict=True):
        assert [h.tokens for h in onnx_best] == [h.tokens for h in torch_best]


def test_generate_from_the_bundle_equals_pytorch(
    runtimes: tuple[Generator, Generator],
) -> None:
    generator, bundle = runtimes
    for options in (
        {"strategy": "greedy"},
        {"strategy": "beam", "num_samples": 2},
        {"strategy": "sample", "seed": 3, "num_samples": 2, "top_k": 5},
    ):
        expected = generator.generate("to be", max_new_tokens=30, **options)
        assert bundle.generate("to be", max_new_tokens=30, **options) == expected
    pieces: list[str] = []
    streamed = bundle.generate("or", strategy="greedy", max_new_tokens=20, on_text=pieces.append)
    assert "or" + "".join(pieces) == streamed[0]


# --- no torch on the bundle's path ----------------------------------------------------------


def test_a_bundle_loads_and_generates_where_torch_cannot_be_imported(
    exported: tuple[Path, Path], runtimes: tuple[Generator, Generator]
) -> None:
    _, bundle = exported
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "from seqgen.bundles.reader import load_bundle\n"
        f"generator = load_bundle({str(bundle)!r}, threads=1)\n"
        "print(generator.device)\n"
        "print(generator.generate('to be', strategy='greedy', max_new_tokens=30)[0], end='')\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'torch' and sys.modules[m]]\n"
    )
    root = Path(seqgen.__file__).parent.parent
    environment = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environment
    )
    assert result.returncode == 0, result.stderr
    device, text = result.stdout.split("\n", 1)
    assert device in ("cpu", "cuda")
    assert text == runtimes[0].generate("to be", strategy="greedy", max_new_tokens=30)[0]


# The JavaScript runtime (export/js) runs this contract too: tests/export/test_js_runtime.py.


# --- float16 --------------------------------------------------------------------------------


@pytest.mark.slow
def test_fp16_bundle_replaces_a_previous_one_loads_and_runs(
    exported: tuple[Path, Path], tmp_path: Path
) -> None:
    checkpoint, bundle = exported
    output = shutil.copytree(bundle, tmp_path / "bundle")
    export_bundle(checkpoint, output, fp16=True)
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["precision"] == "float16"
    assert manifest["graphs"]["step"]["inputs"][1]["dtype"] == "float16"
    assert manifest["graphs"]["step"]["outputs"][0]["dtype"] == "float32"  # log-probs
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers
    half = load_bundle(output, device="cpu", **ONNX_RUNS_FAST)
    full = load_bundle(bundle, device="cpu", **ONNX_RUNS_FAST)
    prompts = make_prompts(PROMPT_LENGTHS[7], half.tokenizer.vocab_size, half.tokenizer.bos_id)
    state, tokens = half.step_function.start(prompts)
    assert state["hidden"].dtype == np.float16
    log_probs, _ = half.step_function.step(tokens, state)
    full_state, _ = full.step_function.start(prompts)
    expected, _ = full.step_function.step(tokens, full_state)
    assert np.abs(log_probs - expected).max() < 0.05
    assert len(half.generate("to be", strategy="beam", max_new_tokens=10)[0]) == len("to be") + 10


# --- bad input ------------------------------------------------------------------------------


@pytest.fixture
def bundle_copy(exported: tuple[Path, Path], tmp_path: Path) -> Path:
    return shutil.copytree(exported[1], tmp_path / "bundle")


def assert_one_line(error: pytest.ExceptionInfo[CheckpointError], *fragments: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_a_folder_that_is_not_a_bundle_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as error:
        load_bundle(tmp_path)
    assert_one_line(error, "not a seqgen bundle", "seqgen export")
    with pytest.raises(CheckpointError) as error:
        load_bundle(tmp_path / "nowhere")
    assert_one_line(error, "not a seqgen bundle", "no such folder")


def test_a_missing_file_is_named(bundle_copy: Path) -> None:
    (bundle_copy / "step.onnx").unlink()
    with pytest.raises(CheckpointError) as error:
        load_bundle(bundle_copy)
    assert_one_line(error, "missing step.onnx", "re-export")


def test_a_newer_format_version_asks_for_an_upgrade(bundle_copy: Path) -> None:
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError) as error:
        load_bundle(bundle_copy)
    assert_one_line(error, f"bundle format {FORMAT_VERSION + 1}", "upgrade seqgen")


def test_a_graph_with_other_inputs_than_the_manifest_lists_is_refused(bundle_copy: Path) -> None:
    shutil.copyfile(bundle_copy / "prime.onnx", bundle_copy / "step.onnx")
    with pytest.raises(CheckpointError) as error:
        load_bundle(bundle_copy)
    assert_one_line(error, "the step graph has inputs ['token_ids'", "re-export the bundle")


def test_a_manifest_that_lists_other_shapes_than_the_graph_has_is_refused(
    bundle_copy: Path,
) -> None:
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["graphs"]["step"]["inputs"][1]["shape"] = ["rows", 3, 24]
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError) as error:
        load_bundle(bundle_copy)
    assert_one_line(error, "step.onnx does not match the manifest", "[rows,2,24]")


def test_a_graph_without_the_expected_names_is_refused(bundle_copy: Path) -> None:
    prime = load_bundle(bundle_copy).step_function.prime_session
    with pytest.raises(CheckpointError) as error:
        OnnxLanguageModelStep(prime, prime)
    assert_one_line(error, "the step graph has inputs", "expected ['tokens'")


def test_a_damaged_graph_is_named(bundle_copy: Path) -> None:
    (bundle_copy / "step.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(CheckpointError) as error:
        load_bundle(bundle_copy)
    assert_one_line(error, "ONNX Runtime cannot load", "step.onnx")


def test_export_refuses_a_folder_holding_something_else(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError) as error:
        export_bundle(tmp_path / "model.safetensors", tmp_path)
    assert_one_line(error, "not empty", "no seqgen bundle")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("version", ["2.12.1+cu130", "2.11.0"])
def test_export_refuses_a_torch_whose_exporter_freezes_the_time_axis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    checkpoint = save_tiny_checkpoint(tmp_path / "lstm.safetensors", "lstm")
    monkeypatch.setattr(torch, "__version__", version)
    with pytest.raises(SeqgenError) as error:
        export_bundle(checkpoint, tmp_path / "bundle")
    assert_one_line(error, f"this is {version}", "pip install 'torch>=2.13'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lstm.safetensors"]


@pytest.mark.parametrize("bidirectional", [False, True])
def test_a_tanh_rnn_exports_as_the_gru_that_computes_it(bidirectional: bool) -> None:
    torch.manual_seed(0)
    rnn = torch.nn.RNN(5, 7, num_layers=2, batch_first=True, bidirectional=bidirectional)
    gru = tanh_rnn_as_gru(rnn)
    inputs = torch.randn(3, 9, 5)
    start = torch.randn(2 * (2 if bidirectional else 1), 3, 7)
    with torch.no_grad():
        expected, expected_state = rnn(inputs, start)
        got, state = gru(inputs, start)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(state, expected_state, atol=1e-6, rtol=1e-6)
    model = torch.nn.Sequential(rnn)
    assert type(with_exportable_cells(model)[0]) is torch.nn.GRU


@pytest.mark.parametrize(
    "entry", [["defaults"], {"defaults": ["greedy"]}, {"defaults": {"top_p": 2}}]
)
def test_damaged_generation_defaults_are_named(bundle_copy: Path, entry: object) -> None:
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["generation"] = entry
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError) as error:
        load_bundle(bundle_copy)
    assert_one_line(error, "bad generation defaults", "re-export")
