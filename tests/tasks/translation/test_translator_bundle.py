"""ONNX export of translators: the bundle, parity with PyTorch, the torch-free path, bad input.

Two tiny translators (an LSTM with Luong attention, input feeding and the copy bridge, a GRU
with Bahdanau attention, a fused decoder and the learned bridge) are exported once per module
and shared. Their output layers are scaled up so that near-ties do not turn token comparisons
into luck.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

import seqgen
from seqgen.bundles.export import export_bundle
from seqgen.bundles.reader import load_bundle
from seqgen.checkpoints import model_path
from seqgen.decoding.beam import beam_search
from seqgen.decoding.contract import TOP_CANDIDATES, TopLogProbs
from seqgen.decoding.search import greedy_search
from seqgen.errors import CheckpointError, SeqgenError
from seqgen.loading import load
from seqgen.recipes import recipe_from_dict, recipe_to_dict
from seqgen.tasks.translation.model import EncoderDecoder
from seqgen.tasks.translation.onnx_step import OnnxTranslatorStep
from seqgen.tasks.translation.pipeline import Translator
from seqgen.text import TokenizerConfig, train_tokenizer
from seqgen.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

onnx = pytest.importorskip("onnx", reason="exporting needs the export extra")
pytest.importorskip("onnxscript", reason="exporting needs the export extra")

SOURCE_TEXT = "ein mann fährt fahrrad. zwei hunde spielen im schnee.\n"
# Capitals too: a target vocabulary larger than the step graph's 16 top candidates.
TARGET_TEXT = "a man rides a bike. two dogs play in the snow.\nABCDEFGHIJKLMNOPQRSTUVWXYZ\n"
SOURCE_LENGTHS = {  # batch size -> source lengths (pieces, before EOS), mixed in one batch
    1: [100],
    7: [1, 100, 2, 50, 3, 77, 100],
    64: [int(n) for n in np.random.default_rng(0).permutation(np.linspace(1, 100, 64))],
}
MAX_NEW_TOKENS = 12
VARIANTS = {
    "lstm-general-feeding": {
        "cell": "lstm",
        "attention": "general",
        "input_feeding": True,
        "bridge": "copy",  # needs decoder_hidden_size == 2 x encoder_hidden_size
        "decoder_hidden_size": 24,
    },
    "gru-bahdanau-fused": {"cell": "gru", "attention": "bahdanau", "input_feeding": False},
}


def save_tiny_translator(path: Path, joint: TokenizerConfig | None = None, **model: object) -> Path:
    """A tiny translator's checkpoint: a char vocabulary per side, or with ``joint`` one
    tokenizer of that config trained on both sides' text (a joint vocabulary)."""
    torch.manual_seed(0)
    sizes = {"embedding_size": 16, "encoder_hidden_size": 12, "decoder_hidden_size": 20}
    tokenizer = {"kind": "char"} if joint is None else {"kind": joint.kind, "joint": True}
    recipe = recipe_from_dict(
        {
            "task": "translation",
            "tokenizer": tokenizer,
            "model": {**sizes, "encoder_layers": 2, **model},
        }
    )
    if joint is None:
        source = train_tokenizer(TokenizerConfig(kind="char"), SOURCE_TEXT)
        target = train_tokenizer(TokenizerConfig(kind="char"), TARGET_TEXT)
    else:
        source = target = train_tokenizer(joint, SOURCE_TEXT + TARGET_TEXT)
    translator = EncoderDecoder(recipe.model, source.vocab_size, target.vocab_size)
    with torch.no_grad():
        translator.decoder.output.weight.mul_(8.0)
    sides = {"source": source.to_dict(), "target": target.to_dict()}
    save_checkpoint(
        path, Checkpoint("translation", recipe_to_dict(recipe), sides, translator.state_dict())
    )
    return path


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def exported(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """``(checkpoint, bundle)`` of each tiny translator."""
    folder = tmp_path_factory.mktemp(request.param)
    checkpoint = save_tiny_translator(folder / "translator.safetensors", **VARIANTS[request.param])
    return checkpoint, export_bundle(checkpoint, folder / "bundle")


@pytest.fixture(scope="module", params=[False, True], ids=["host-state", "io-binding"])
def runtimes(
    request: pytest.FixtureRequest, exported: tuple[Path, Path]
) -> tuple[Translator, Translator]:
    """PyTorch and ONNX Runtime translators; the ONNX one keeps its state in numpy arrays or
    (as on CUDA) in ONNX Runtime's memory with I/O binding and the select graph."""
    checkpoint, bundle = exported
    reference = load(checkpoint, device="cpu")
    runtime = load_bundle(bundle, device="cpu", threads=1, io_binding=request.param)
    assert isinstance(reference, Translator) and isinstance(runtime, Translator)
    assert runtime.step_function.io_binding is request.param
    return reference, runtime


def make_sources(lengths: list[int], vocab_size: int) -> list[list[int]]:
    generator = np.random.default_rng(len(lengths))
    return [generator.integers(4, vocab_size, n).tolist() for n in lengths]


def host(array: object) -> np.ndarray:
    """A state entry as numpy, whether numpy already or an ONNX Runtime ``OrtValue``."""
    return array.numpy() if hasattr(array, "numpy") else np.asarray(array)


# --- the bundle -----------------------------------------------------------------------------


def test_bundle_holds_checked_graphs_tokenizers_and_manifest(exported: tuple[Path, Path]) -> None:
    checkpoint, bundle = exported
    assert sorted(p.name for p in bundle.iterdir()) == [
        "encoder.onnx",
        "manifest.json",
        "select.onnx",
        "source_tokenizer.json",  # two vocabularies: a file each
        "step.onnx",
        "target_tokenizer.json",
    ]
    for graph in ("encoder.onnx", "step.onnx", "select.onnx"):
        onnx.checker.check_model(onnx.load(str(bundle / graph)), full_check=True)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert (manifest["format"], manifest["kind"]) == ("seqgen-bundle", "translation")
    assert manifest["seqgen_version"] == seqgen.__version__
    model = load(checkpoint, device="cpu")
    names = list(model.step_function.model.state_names)
    assert manifest["state"]["names"] == names
    recurrent = manifest["state"]["recurrent"]
    assert set(recurrent) | set(manifest["state"]["source_side"]) == set(names)
    graphs = manifest["graphs"]
    encoder_inputs = [(i["name"], i["shape"]) for i in graphs["encoder"]["inputs"]]
    assert encoder_inputs == [("source_ids", ["rows", "source_len"]), ("source_lengths", ["rows"])]
    assert [o["name"] for o in graphs["encoder"]["outputs"]] == names
    assert [i["name"] for i in graphs["step"]["inputs"]] == ["tokens", *names, "top_k"]
    step_outputs = graphs["step"]["outputs"]
    top = ["log_probs", "top_log_probs", "top_ids"]
    new = [f"new_{name}" for name in recurrent]
    assert [o["name"] for o in step_outputs] == [*top, *new, "attention"]
    attention = {"name": "attention", "dtype": "float32", "shape": ["rows", "source_len"]}
    assert step_outputs[-1] == attention
    vocab = model.target_tokenizer.vocab_size
    assert step_outputs[0] == {"name": "log_probs", "dtype": "float32", "shape": ["rows", vocab]}
    top_ids = {"name": "top_ids", "dtype": "int64", "shape": ["rows", "top_k"]}
    assert step_outputs[2] == top_ids
    memory = next(o for o in graphs["encoder"]["outputs"] if o["name"] == "memory")
    assert memory["shape"] == ["rows", "source_len", 24]  # the encoder's rows: its sentences
    # The step takes the source side once per sentence (format 2), the rest per row.
    step_shapes = {i["name"]: i["shape"] for i in graphs["step"]["inputs"]}
    assert step_shapes["memory"] == ["sentences", "source_len", 24]
    assert step_shapes["source_mask"] == ["sentences", "source_len"]
    assert step_shapes["hidden"][0] == "rows" and step_shapes["tokens"] == ["rows"]
    assert manifest["format_version"] == 7  # 5: top_k; 6: grouped steps; 7: int8 ones too
    assert "output_rows" not in graphs  # no shortlist: the step holds the output layer
    select_inputs = [i["name"] for i in graphs["select"]["inputs"]]
    assert select_inputs == ["rows", "sentences", *names]
    assert [o["name"] for o in graphs["select"]["outputs"]] == ["selected_" + n for n in names]
    assert manifest["special_ids"] == {"pad": 0, "unk": 1, "bos": 2, "eos": 3}
    assert manifest["decoding"]["beam_size"] == model.recipe.decoding.beam_size
    for side, tokenizer in (("source", model.source_tokenizer), ("target", model.target_tokenizer)):
        assert json.loads((bundle / f"{side}_tokenizer.json").read_text()) == tokenizer.to_dict()


def test_graphs_carry_no_stack_traces_or_paths_of_the_exporting_machine(
    exported: tuple[Path, Path],
) -> None:
    _, bundle = exported
    for graph in ("encoder.onnx", "step.onnx", "select.onnx"):
        nodes = onnx.load(str(bundle / graph)).graph.node
        assert nodes and not any(node.metadata_props or node.doc_string for node in nodes)
        assert str(Path(seqgen.__file__).parent).encode() not in (bundle / graph).read_bytes()


def test_an_lstm_encoder_graph_stops_each_row_at_its_length(exported: tuple[Path, Path]) -> None:
    """Each LSTM node of the encoder graph takes the rows' lengths (``sequence_lens``) and
    gives the decoder's first cell state itself: the graph holds no recomputation of it
    over the whole source (``final_cell_state``'s cumulative sum of the forget gates)."""
    _, bundle = exported
    model = json.loads((bundle / "manifest.json").read_text())["model"]
    nodes = onnx.load(str(bundle / "encoder.onnx")).graph.node
    lstms = [node for node in nodes if node.op_type == "LSTM"]
    if model["cell"] != "lstm":
        assert not lstms and not any(node.op_type == "CumSum" for node in nodes)
        return
    assert len(lstms) == 2 * model["encoder_layers"]  # two directions per layer
    assert all(len(node.input) > 4 and node.input[4] for node in lstms)
    assert not any(node.op_type == "CumSum" for node in nodes)


# --- parity with PyTorch --------------------------------------------------------------------


@pytest.mark.parametrize("batch", sorted(SOURCE_LENGTHS))
def test_per_step_log_probs_and_state_agree_within_1e_4(
    runtimes: tuple[Translator, Translator], batch: int
) -> None:
    torch_step, onnx_step = (runtime.step_function for runtime in runtimes)
    sources = make_sources(SOURCE_LENGTHS[batch], runtimes[0].source_tokenizer.vocab_size)
    torch_state, tokens = torch_step.start(sources)
    onnx_state, onnx_tokens = onnx_step.start(sources)
    np.testing.assert_array_equal(tokens, onnx_tokens)
    generator = np.random.default_rng(1)
    worst = 0.0
    for position in range(MAX_NEW_TOKENS):
        expected, torch_state = torch_step.step(tokens, torch_state)
        log_probs, onnx_state = onnx_step.step(tokens, onnx_state)
        assert log_probs.dtype == np.float32 and log_probs.shape == expected.shape
        worst = max(worst, float(np.abs(log_probs - expected).max()))
        tokens = expected.argmax(axis=1)  # both follow PyTorch's choices
        if position in (3, 7):
            # A beam's layout (two rows per sentence), then rows in uneven groups (each its
            # own sentence).
            rows = np.arange(len(tokens)).repeat(2)
            if position == 7:
                rows = generator.integers(0, len(tokens), len(tokens) + position)
            torch_state = torch_step.select(torch_state, rows)
            onnx_state = onnx_step.select(onnx_state, rows)
            tokens = tokens[rows]
    for name in torch_step.model.state_names:
        difference = np.abs(host(onnx_state[name]) - torch_state[name].numpy().astype(np.float32))
        worst = max(worst, float(difference.max()))
    assert worst < 1e-4, f"max difference {worst:.2e}"


@pytest.mark.parametrize("batch", sorted(SOURCE_LENGTHS))
def test_greedy_and_beams_5_and_8_are_token_identical(
    runtimes: tuple[Translator, Translator], batch: int
) -> None:
    sources = make_sources(SOURCE_LENGTHS[batch], runtimes[0].source_tokenizer.vocab_size)
    common = {"max_new_tokens": MAX_NEW_TOKENS, "eos_id": 3, "banned_token_ids": (0, 1, 2)}
    greedy, beams = [], []
    for runtime in runtimes:
        step_function = runtime.step_function
        greedy.append(greedy_search(step_function, *step_function.start(sources), **common))
        # Beam 8 reads more candidates than the graph's top ones hold: the whole log_probs.
        beams.append(
            [
                beam_search(step_function, *step_function.start(sources), beam_size=k, **common)
                for k in (5, 8)
            ]
        )
    for torch_result, onnx_result in zip(greedy[0], greedy[1], strict=True):
        assert onnx_result.tokens == torch_result.tokens
        np.testing.assert_allclose(onnx_result.score, torch_result.score, atol=1e-3)
    for torch_beams, onnx_beams in zip(beams[0], beams[1], strict=True):
        for torch_best, onnx_best in zip(torch_beams, onnx_beams, strict=True):
            assert [h.tokens for h in onnx_best] == [h.tokens for h in torch_best]


@pytest.mark.parametrize("io_binding", [False, True])
def test_narrowed_steps_bring_only_the_top_candidates_to_the_host(
    exported: tuple[Path, Path], io_binding: bool
) -> None:
    """A search that reads few log-probs per row gets the graph's top ones, as many as it
    asks for (the step's ``top_k``, format 5), best first, as TopLogProbs: only those cross
    to the host (from the device, with I/O binding)."""
    checkpoint, bundle = exported
    full = load_bundle(bundle, device="cpu", threads=1, io_binding=io_binding).step_function
    sources = make_sources(SOURCE_LENGTHS[7], 20)
    state, tokens = full.start(sources)
    expected, _ = full.step(tokens, state)
    assert expected.shape[1] > TOP_CANDIDATES and np.isfinite(expected).all()
    narrow = full.narrowed(13)
    assert full.candidates is None  # a view: the step function itself is unchanged
    top, _ = narrow.step(tokens, state)
    assert isinstance(top, TopLogProbs) and top.shape == (7, 13)
    best = np.argsort(-expected, axis=1)[:, :13]
    np.testing.assert_array_equal(top.token_ids, best)
    np.testing.assert_allclose(top.values, np.take_along_axis(expected, best, axis=1), atol=1e-6)
    np.testing.assert_allclose(top.dense(expected.shape[1])[:, best[0, 0]], expected[:, best[0, 0]])
    wide, _ = full.narrowed(33).step(tokens, state)  # more than the graph holds: all of them
    assert isinstance(wide, np.ndarray) and np.isfinite(wide).all()
    # The PyTorch adapter narrows the same way, to exactly the candidates asked for.
    torch_step = seqgen.load(checkpoint, device="cpu", backend="torch").step_function
    torch_state, _ = torch_step.start(sources)
    torch_top, _ = torch_step.narrowed(13).step(tokens, torch_state)
    assert isinstance(torch_top, TopLogProbs) and torch_top.shape == (7, 13)
    np.testing.assert_array_equal(torch_top.token_ids, best[:, :13])
    np.testing.assert_allclose(torch_top.values, top.values, atol=1e-4)
    most, _ = full.narrowed(TOP_CANDIDATES).step(tokens, state)
    assert isinstance(most, TopLogProbs) and most.shape == (7, TOP_CANDIDATES)
    np.testing.assert_array_equal(most.token_ids[:, :13], best)


def test_translate_from_the_bundle_equals_pytorch(runtimes: tuple[Translator, Translator]) -> None:
    reference, runtime = runtimes
    sentences = ["ein mann", "", "zwei hunde spielen im schnee.", "fährt"]
    for options in ({"beam_size": 1}, {"beam_size": 5, "n_best": 3}, {"batch_size": 1}):
        expected = reference.translate_n_best(sentences, max_length=15, **options)
        got = runtime.translate_n_best(sentences, max_length=15, **options)
        assert [[h.text for h in best] for best in got] == [[h.text for h in e] for e in expected]
        assert got[1][0].text == ""  # an empty line stays empty


def test_concurrent_batches_translate_as_one_batch_at_a_time(
    exported: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three batches at once on each backend (threads, one per batch) give what one batch
    after the other gives; torch's thread count and the model's mode are put back."""
    checkpoint, bundle = exported
    reference = load(checkpoint, device="cpu")
    runtime = load_bundle(bundle, device="cpu", threads=3)
    assert runtime.step_function.workers == 3
    sentences = ["ein mann", "zwei hunde spielen im schnee.", "fährt", "ein", "hunde im park"]
    expected = reference.translate(sentences, beam_size=3, batch_size=2, max_length=12)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    threads = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    reference.step_function.model.train()  # as the training loop's validation finds it
    seen = []
    search = Translator.search

    def recording(self: Translator, sources: list, settings: object) -> list:
        seen.append(threading.get_ident())
        return search(self, sources, settings)

    monkeypatch.setattr(Translator, "search", recording)
    for translator in (reference, runtime):
        seen.clear()
        got = translator.translate(sentences, beam_size=3, batch_size=2, max_length=12)
        assert got == expected
        assert len(seen) == 3 and threading.get_ident() not in seen  # searched by the pool
    assert threads == [1, 3]  # one thread per batch while decoding, then as it was
    assert reference.step_function.model.training  # put back in training mode


# --- no torch on the bundle's path ----------------------------------------------------------


def test_a_translator_bundle_runs_where_torch_cannot_be_imported(
    exported: tuple[Path, Path],
) -> None:
    checkpoint, bundle = exported
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "import seqgen\n"
        f"translator = seqgen.load({str(bundle)!r}, kind='translation')\n"
        "print(translator.translate(['ein mann', 'zwei hunde'], max_length=15))\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'torch' and sys.modules[m]]\n"
    )
    root = Path(seqgen.__file__).parent.parent
    environment = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environment
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no provider noise where CUDA is missing
    expected = load(checkpoint, device="cpu").translate(["ein mann", "zwei hunde"], max_length=15)
    assert result.stdout.strip() == repr(expected)


def test_translate_command_with_a_bundle_never_imports_torch(
    exported: tuple[Path, Path], tmp_path: Path
) -> None:
    # import torch is most of a second and a half of start-up: writing --output must not pull it in
    checkpoint, bundle = exported
    source, output = tmp_path / "source.txt", tmp_path / "output.txt"
    source.write_text("ein mann\nzwei hunde\n", encoding="utf-8")
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "from seqgen.cli import main\n"
        "main(standalone_mode=False)\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'torch' and sys.modules[m]]\n"
    )
    arguments = ["translate", "--model", str(bundle), "--input", str(source)]
    arguments += ["--output", str(output), "--max-length", "15", "--device", "cpu"]
    root = Path(seqgen.__file__).parent.parent
    environment = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script, *arguments], capture_output=True, text=True, env=environment
    )
    assert result.returncode == 0, result.stderr
    expected = load(checkpoint, device="cpu").translate(["ein mann", "zwei hunde"], max_length=15)
    assert output.read_text(encoding="utf-8").splitlines() == expected


# --- float16 --------------------------------------------------------------------------------


@pytest.mark.slow
def test_fp16_translator_bundle_runs_close_to_float32(
    exported: tuple[Path, Path], tmp_path: Path
) -> None:
    checkpoint, bundle = exported
    half_bundle = export_bundle(checkpoint, tmp_path / "half", fp16=True)
    manifest = json.loads((half_bundle / "manifest.json").read_text())
    assert manifest["precision"] == "float16"
    half = load_bundle(half_bundle, device="cpu", threads=1).step_function
    full = load_bundle(bundle, device="cpu", threads=1).step_function
    sources = make_sources(SOURCE_LENGTHS[7], 20)
    state, tokens = half.start(sources)
    assert host(state["hidden"]).dtype == np.float16
    log_probs, _ = half.step(tokens, state)
    expected, _ = full.step(tokens, full.start(sources)[0])
    assert log_probs.dtype == np.float32
    assert np.abs(log_probs - expected).max() < 0.05


# --- bad input ------------------------------------------------------------------------------


@pytest.fixture
def bundle_copy(exported: tuple[Path, Path], tmp_path: Path) -> Path:
    return shutil.copytree(exported[1], tmp_path / "bundle")


def assert_one_line(error: pytest.ExceptionInfo[Exception], *fragments: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize("missing", ["encoder.onnx", "select.onnx", "target_tokenizer.json"])
def test_a_missing_file_is_named(bundle_copy: Path, missing: str) -> None:
    (bundle_copy / missing).unlink()
    with pytest.raises(CheckpointError) as error:
        load_bundle(bundle_copy)
    assert_one_line(error, f"missing {missing}", "re-export")


def test_a_graph_with_other_inputs_than_the_manifest_lists_is_refused(bundle_copy: Path) -> None:
    shutil.copyfile(bundle_copy / "select.onnx", bundle_copy / "step.onnx")
    with pytest.raises(CheckpointError) as error:
        load_bundle(bundle_copy)
    assert_one_line(error, "step graph has inputs", "expected ['tokens'")


@pytest.mark.parametrize("version", [1, 2, 3])
def test_a_translator_bundle_of_an_older_format_is_refused_in_one_line(
    bundle_copy: Path, version: int
) -> None:
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    (bundle_copy / "manifest.json").write_text(json.dumps({**manifest, "format_version": version}))
    with pytest.raises(CheckpointError) as error:
        load_bundle(bundle_copy)
    assert_one_line(
        error, f"translation bundle of format {version}", "re-export it with this seqgen"
    )


def as_format_4(bundle: Path) -> None:
    """Turn a bundle's step graph back into format 4's: ``TopK`` of a fixed ``K``, no
    ``top_k`` input (what the packaged translators and earlier exports hold)."""
    import onnx

    step = onnx.load(str(bundle / "step.onnx"))
    cap = next(node for node in step.graph.node if node.op_type == "Min")
    top = next(node for node in step.graph.node if node.op_type == "TopK")
    top.input[1] = cap.input[1]
    step.graph.node.remove(cap)
    step.graph.input.remove(next(i for i in step.graph.input if i.name == "top_k"))
    for output in step.graph.output[1:3]:
        output.type.tensor_type.shape.dim[1].dim_value = TOP_CANDIDATES
    onnx.save(step, str(bundle / "step.onnx"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    entry = manifest["graphs"]["step"]
    entry["inputs"] = [i for i in entry["inputs"] if i["name"] != "top_k"]
    for output in entry["outputs"][1:3]:
        output["shape"] = ["rows", TOP_CANDIDATES]
    (bundle / "manifest.json").write_text(json.dumps({**manifest, "format_version": 4}))


def test_a_format_4_bundle_still_decodes_as_before(
    exported: tuple[Path, Path], bundle_copy: Path
) -> None:
    """Format 5 only added the step's ``top_k`` input: a format 4 step, which returns its
    fixed 16 candidates and is fed no ``top_k``, loads and gives the same hypotheses."""
    as_format_4(bundle_copy)
    sources = make_sources(SOURCE_LENGTHS[7], 20)
    common = {"max_new_tokens": MAX_NEW_TOKENS, "eos_id": 3, "banned_token_ids": (0, 1, 2)}
    found = []
    for bundle in (exported[1], bundle_copy):
        step_function = load_bundle(bundle, device="cpu", threads=1).step_function
        state, first_tokens = step_function.start(sources)
        narrow, _ = step_function.narrowed(5).step(first_tokens, state)
        greedy = greedy_search(step_function, *step_function.start(sources), **common)
        beams = beam_search(step_function, *step_function.start(sources), beam_size=5, **common)
        found.append((narrow.shape[1], [h.tokens for h in greedy], [b[0].tokens for b in beams]))
    assert found[0][0] == 5 and found[1][0] == TOP_CANDIDATES  # as asked / the fixed K
    assert found[0][1:] == found[1][1:]


def test_a_step_graph_taking_the_source_side_per_row_is_refused(bundle_copy: Path) -> None:
    import onnx

    # Format 1's step graph, as far as the adapter can tell: memory's first axis is rows.
    step = onnx.load(str(bundle_copy / "step.onnx"))
    memory = next(node for node in step.graph.input if node.name == "memory")
    memory.type.tensor_type.shape.dim[0].dim_param = "rows"
    onnx.save(step, str(bundle_copy / "step.onnx"))
    with pytest.raises(CheckpointError) as error:
        load_bundle(bundle_copy, device="cpu")
    assert_one_line(error, "once per row (bundle format 1)", "re-export it with this seqgen")


def test_a_damaged_recipe_in_the_manifest_is_named(bundle_copy: Path) -> None:
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["recipe"]["decoding"]["beem_size"] = 4
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError) as error:
        load_bundle(bundle_copy)
    assert_one_line(error, "damaged recipe", "re-export")


def test_a_translator_bundle_given_to_generate_names_its_kind(bundle_copy: Path) -> None:
    with pytest.raises(CheckpointError) as error:
        load(bundle_copy, kind="language_model")
    assert_one_line(error, "holds a translator", "seqgen translate")


def test_the_select_graph_is_needed_for_io_binding(bundle_copy: Path) -> None:
    runtime = load_bundle(bundle_copy, device="cpu", io_binding=False).step_function
    with pytest.raises(CheckpointError) as error:
        OnnxTranslatorStep(runtime.encoder_session, runtime.step_session, None, io_binding=True)
    assert_one_line(error, "no select graph")


# --- a lexical shortlist ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def shortlisted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(checkpoint, bundle)`` of a tiny translator with a lexical shortlist that leaves out
    part of its target vocabulary."""
    folder = tmp_path_factory.mktemp("shortlisted")
    path = save_tiny_translator(
        folder / "translator.safetensors", shortlist=2, shortlist_frequent=32, input_feeding=False
    )
    checkpoint = load_checkpoint(path)
    weights = checkpoint.weights
    vocab = weights["decoder.output.weight"].shape[0]
    generator = torch.Generator().manual_seed(2)
    shape = weights["shortlist_table"].shape
    weights["shortlist_table"] = torch.randint(4, vocab, shape, generator=generator)
    weights["shortlist_frequent"] = torch.randperm(vocab - 4, generator=generator)[:32] + 4
    save_checkpoint(path, checkpoint)
    return path, export_bundle(path, folder / "bundle")


@pytest.mark.parametrize("io_binding", [False, True])
def test_a_shortlisted_bundle_decodes_as_pytorch_does(
    shortlisted: tuple[Path, Path], io_binding: bool
) -> None:
    checkpoint, bundle = shortlisted
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["shortlist"] == {"file": "shortlist.json", "per_source": 2, "frequent": 32}
    step_inputs = manifest["graphs"]["step"]["inputs"]
    per_sentence = ["sentences", "sentence_shortlist"]
    # The output layer's rows of the batch's shortlist come from the output_rows graph,
    # run once per batch (bundle format 4).
    width = manifest["model"]["decoder_hidden_size"]  # the output layer's input
    rows = [
        {"name": "output_weight", "dtype": "float32", "shape": ["shortlist", width]},
        {"name": "output_bias", "dtype": "float32", "shape": ["shortlist"]},
    ]
    assert step_inputs[-8:] == [
        {"name": "output_ids", "dtype": "int64", "shape": ["shortlist"]},
        *rows,
        {"name": "output_columns", "dtype": "int64", "shape": per_sentence},
        {"name": "output_mask", "dtype": "float32", "shape": per_sentence},
        # format 6: each group of sentences scored against its own union (float32 exports)
        {"name": "output_group_rows", "dtype": "int64", "shape": ["groups", "group_rows"]},
        {"name": "output_row_offsets", "dtype": "int64", "shape": ["rows"]},
        {"name": "top_k", "dtype": "int64", "shape": [1]},  # format 5
    ]
    output_rows = manifest["graphs"]["output_rows"]
    assert output_rows["inputs"] == [step_inputs[-8]] and output_rows["outputs"] == rows
    log_probs = manifest["graphs"]["step"]["outputs"][0]
    assert log_probs == {
        "name": "log_probs",
        "dtype": "float32",
        "shape": ["rows", per_sentence[1]],
    }
    reference = load(checkpoint, device="cpu")
    runtime = load_bundle(bundle, device="cpu", threads=1, io_binding=io_binding)
    vocab = reference.target_tokenizer.vocab_size
    sources = make_sources(SOURCE_LENGTHS[7], reference.source_tokenizer.vocab_size)
    torch_state, tokens = reference.step_function.start(sources)
    onnx_state, _ = runtime.step_function.start(sources)
    expected, _ = reference.step_function.step(tokens, torch_state)
    got, _ = runtime.step_function.step(tokens, onnx_state)
    outside = np.isneginf(expected)
    assert expected.shape == got.shape == (7, vocab) and 0 < outside.sum(axis=1).min()
    np.testing.assert_array_equal(np.isneginf(got), outside)
    assert np.abs(got[~outside] - expected[~outside]).max() < 1e-4
    sentences = ["ein mann", "", "zwei hunde spielen im schnee.", "fährt"]
    for options in ({"beam_size": 1}, {"beam_size": 5, "n_best": 3}):
        for shortlist in (True, False):
            settings = {"max_length": 15, "shortlist": shortlist, **options}
            want = reference.translate_n_best(sentences, **settings)
            have = runtime.translate_n_best(sentences, **settings)
            assert [[h.text for h in b] for b in have] == [[h.text for h in b] for b in want]
    full, _ = runtime.step_function.start(sources, shortlist=False)
    unlisted, _ = runtime.step_function.step(tokens, full)
    assert np.isfinite(unlisted).all()  # the whole vocabulary on request


def test_a_grouped_step_searches_as_pytorch_does_in_groups_of_any_size(
    shortlisted: tuple[Path, Path],
) -> None:
    """Beam search scores groups of ``group_sentences`` (8 unless set; greedy search the
    batch as one group), sentences finishing at different steps so that groups shrink and
    empty: every group size gives PyTorch's hypotheses, whose step scores the batch's union."""
    checkpoint, bundle = shortlisted
    reference = load(checkpoint, device="cpu")
    runtime = load_bundle(bundle, device="cpu", threads=1)
    step_function = runtime.step_function
    assert step_function.grouped and step_function.group_sentences == 8
    sentences = ["ein mann", "zwei hunde spielen im schnee.", "fährt", "ein kind", "eine frau"]
    sentences += ["hunde laufen.", "ein mann fährt.", "schnee", "zwei", "im", "spielen"]
    settings = {"max_length": 12, "beam_size": 3, "n_best": 2}
    want = [[h.text for h in best] for best in reference.translate_n_best(sentences, **settings)]
    for group in (1, 2, 3, 8, 64):
        step_function.group_sentences = group
        have = runtime.translate_n_best(sentences, **settings)
        assert [[h.text for h in best] for best in have] == want, group
    state, _ = step_function.start([[5, 6], [7], [8, 9]], beam_size=3)
    assert state["output_group_rows"].shape[0] == 1  # 64 sentences a group: one
    # A score is its product plus its bias in any group: the same bits for every grouping.
    sources = make_sources(SOURCE_LENGTHS[7], reference.source_tokenizer.vocab_size)
    stepped = []
    for group in (1, 3, 64):
        step_function.group_sentences = group
        state, tokens = step_function.start(sources, beam_size=3)
        stepped.append(step_function.step(tokens, state)[0])
    np.testing.assert_array_equal(stepped[0], stepped[2])
    np.testing.assert_array_equal(stepped[1], stepped[2])


def test_a_bundle_without_its_shortlist_file_is_refused(
    shortlisted: tuple[Path, Path], tmp_path: Path
) -> None:
    bundle = shutil.copytree(shortlisted[1], tmp_path / "bundle")
    (bundle / "shortlist.json").write_text('{"table": [[1, 2]], "frequent": []}')
    with pytest.raises(CheckpointError) as error:
        load_bundle(bundle)
    assert_one_line(error, "shortlist is missing or damaged", "re-export")
    (bundle / "shortlist.json").unlink()
    with pytest.raises(CheckpointError) as error:
        load_bundle(bundle)
    assert_one_line(error, "missing shortlist.json", "re-export")


def test_a_shortlisted_step_without_its_output_rows_graph_is_refused(
    shortlisted: tuple[Path, Path], tmp_path: Path
) -> None:
    """A format-3 step graph under a format-4 manifest, as far as the adapter can tell: it
    takes a shortlist, and no graph gives it the output layer's rows."""
    bundle = shutil.copytree(shortlisted[1], tmp_path / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["graphs"]["output_rows"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError) as error:
        load_bundle(bundle, device="cpu")
    assert_one_line(error, "no output_rows graph (bundle format 3 or older)", "re-export it")


def test_the_step_graph_gathers_the_gate_table_unless_it_is_too_large(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the decoder's gate table the first layer's embedding product is a table gathered
    per step (no LSTM node); above GATE_TABLE_LIMIT the LSTM node stays. The graph computes
    the table from the weights (ONNX Runtime folds it when a session starts), except that
    the exporter folds a product as small as this one's into a stored constant itself; a
    large table stored would fail the packing of the bundled models (LARGEST_STORED)."""
    onnx = pytest.importorskip("onnx")
    from seqgen.layers import cells

    checkpoint = save_tiny_translator(tmp_path / "translator.safetensors", input_feeding=False)
    vocab = load(checkpoint, device="cpu").target_tokenizer.vocab_size
    found = {}
    for label, limit in (("table", cells.GATE_TABLE_LIMIT), ("node", 0)):
        monkeypatch.setattr(cells, "GATE_TABLE_LIMIT", limit)
        bundle = export_bundle(checkpoint, tmp_path / label)  # checks parity with PyTorch
        graph = onnx.load(str(bundle / "step.onnx")).graph
        shapes = [list(initializer.dims) for initializer in graph.initializer]
        found[label] = ({node.op_type for node in graph.node}, shapes, constant_products(graph))
    operations, shapes, products = found["table"]
    assert "LSTM" not in operations
    assert ([vocab, 4 * 20] in shapes) != (len(products) == 1)  # stored, or computed
    assert "LSTM" in found["node"][0] and [vocab, 4 * 20] not in found["node"][1]


def test_a_float16_gate_table_is_multiplied_in_float32_when_asked() -> None:
    from seqgen.layers.cells import embedding_gates

    torch.manual_seed(0)
    embedding, rnn = nn.Embedding(50, 16).half(), nn.LSTM(16, 32, batch_first=True).half()
    plain = embedding_gates(embedding, rnn)
    in_float32 = embedding_gates(embedding, rnn, torch.float32)
    expected = embedding_gates(embedding.float(), rnn.float())
    assert (plain.dtype, in_float32.dtype) == (torch.float16, torch.float32)
    assert torch.equal(in_float32, expected)


@pytest.mark.slow
def test_a_float16_export_leaves_no_product_of_weights_to_compute_per_step(tmp_path: Path) -> None:
    """The bundled translator's float16 step graph, as seqgen's CPU sessions optimise it: the
    gate table's product of two weights is folded when the session starts. (It was not: ONNX
    Runtime has no float16 Gemm on the CPU, so it ran at every step, 8x slower in a browser.
    The casts of float16 weights to float32 it inserts for its float32 kernels do remain.)"""
    bundle = export_bundle(model_path("multi30k-de-en"), tmp_path / "fp16", fp16=True)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED  # as seqgen
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(bundle / "step.onnx"), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(options.optimized_model_filepath).graph
    constant = {initializer.name for initializer in graph.initializer}
    computed_from_weights = []
    for node in graph.node:  # in topological order
        if node.input and set(filter(None, node.input)) <= constant:
            constant.update(node.output)
            computed_from_weights.append(node.op_type)
    assert computed_from_weights and set(computed_from_weights) == {"Cast"}


def constant_products(graph) -> list:
    """The Gemm nodes of ``graph`` that multiply two initializers (folded at session start)."""
    constants = {initializer.name for initializer in graph.initializer}
    return [n for n in graph.node if n.op_type == "Gemm" and set(n.input[:2]) <= constants]


# --- int8 -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_int8_bundle_runs_close_to_float32_on_the_cpu_only(
    shortlisted: tuple[Path, Path], tmp_path: Path
) -> None:
    checkpoint, bundle = shortlisted
    int8_bundle = export_bundle(checkpoint, tmp_path / "int8", int8=True)
    manifest = json.loads((int8_bundle / "manifest.json").read_text())
    assert manifest["matmul"] == "int8" and manifest["precision"] == "float32"
    step_graph = onnx.load(str(int8_bundle / "step.onnx"))
    assert "MatMulIntegerToFloat" in {node.op_type for node in step_graph.graph.node}
    # The output layer's int8 rows, each group's transposed as its product reads them, and
    # their scales come from the output_rows graph once per batch, which takes the groups'
    # unions (format 7); the step holds no copy of the table.
    assert manifest["format_version"] == 7
    width = manifest["model"]["decoder_hidden_size"]
    groups = ["groups", "group_shortlist"]
    rows = [
        {"name": "output_weight", "dtype": "int8", "shape": ["groups", width, "group_shortlist"]},
        {"name": "output_weight_scale", "dtype": "float32", "shape": ["groups", 1, groups[1]]},
        {"name": "output_bias", "dtype": "float32", "shape": ["shortlist"]},
    ]
    ids = [{"name": "output_ids", "dtype": "int64", "shape": groups}]
    assert manifest["graphs"]["output_rows"]["inputs"] == ids
    assert manifest["graphs"]["output_rows"]["outputs"] == rows
    assert manifest["graphs"]["step"]["inputs"][-8:-5] == rows
    vocab = manifest["model"]["target_vocab_size"]
    int8 = onnx.TensorProto.INT8
    tables = [init for init in step_graph.graph.initializer if init.data_type == int8]
    assert tables and not any(vocab in init.dims for init in tables)
    quantized = load_bundle(int8_bundle, threads=1)  # "auto" takes the CPU for int8
    assert quantized.device == "cpu"
    full = load_bundle(bundle, device="cpu", threads=1)
    sources = make_sources(SOURCE_LENGTHS[7], 20)
    state, tokens = quantized.step_function.start(sources)
    full_state = full.step_function.start(sources)[0]
    # The encoder's first LSTM layer is a gate table and a Scan per direction
    # (encoder.table_lstm), its second still LSTM nodes. Its products of values within
    # [-1, 1] are int8: the recurrence inside each Scan, the keys, the bridge from the
    # hidden states (the cell states' stays float32).
    encoder = onnx.load(str(int8_bundle / "encoder.onnx")).graph
    encoder_ops = [node.op_type for node in encoder.node]
    assert encoder_ops.count("Scan") == 2 and encoder_ops.count("LSTM") == 2
    assert encoder_ops.count("MatMulIntegerToFloat") == 2 and "ReduceMax" not in encoder_ops
    for scan in (node for node in encoder.node if node.op_type == "Scan"):
        body = next(attribute.g for attribute in scan.attribute if attribute.name == "body")
        assert [node.op_type for node in body.node].count("MatMulIntegerToFloat") == 1
    for name in ("memory", "keys", "hidden", "cell"):
        difference = np.abs(state[name] - full_state[name]).max()
        assert 0 < difference < 0.05 * max(np.abs(full_state[name]).max(), 1)
    got, _ = quantized.step_function.step(tokens, state)
    expected, _ = full.step_function.step(tokens, full_state)
    outside = np.isneginf(expected)  # the same shortlist
    np.testing.assert_array_equal(np.isneginf(got), outside)
    assert 0 < np.abs(got[~outside] - expected[~outside]).max() < 0.1
    sentences = ["ein mann", "zwei hunde spielen im schnee."]
    assert len(quantized.translate(sentences, beam_size=5, max_length=15)) == 2
    # A score is its integer product times its scales plus its bias in any group: the same
    # bits for every grouping, as in float32.
    stepped = []
    for group in (1, 3, 64):
        quantized.step_function.group_sentences = group
        state, tokens = quantized.step_function.start(sources, beam_size=3)
        stepped.append(quantized.step_function.step(tokens, state)[0])
    np.testing.assert_array_equal(stepped[0], stepped[2])
    np.testing.assert_array_equal(stepped[1], stepped[2])
    with pytest.raises(SeqgenError) as error:
        load_bundle(int8_bundle, device="cuda")
    assert_one_line(error, "int8 bundle", "--device cpu")
    manifest["matmul"] = "int4"
    (int8_bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError) as error:
        load_bundle(int8_bundle)
    assert_one_line(error, "'int4'", "upgrade seqgen")


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_an_input_fed_int8_step_has_no_float32_weight_product_left(
    cell: str, tmp_path: Path
) -> None:
    """With input feeding the first layer's weight on the fed-back vector is a slice of its
    input weight (the embedding's share is the gate table): that product is int8 too. Each
    product reads values within [-1, 1] (the hidden state, the fed-back tanh, attention's
    context over the encoder's states, from a Scan for an LSTM's one layer): one fixed
    scale each, no range found per row. An LSTM's recurrent and fed-back products, which
    its gates add, are one product of the two joined (a GRU's are not simply added)."""
    path = tmp_path / "translator.safetensors"
    checkpoint = save_tiny_translator(path, cell=cell, encoder_layers=1)
    int8_bundle = export_bundle(checkpoint, tmp_path / "int8", int8=True)
    ops = [node.op_type for node in onnx.load(str(int8_bundle / "step.onnx")).graph.node]
    # hidden and feed (joined for an LSTM), attention's output layer, the output layer
    products = 3 if cell == "lstm" else 4
    assert ops.count("MatMulIntegerToFloat") == ops.count("QuantizeLinear") == products
    assert "Gemm" not in ops and "Slice" not in ops and "ReduceMax" not in ops
    sources = make_sources(SOURCE_LENGTHS[7], 20)
    # Against PyTorch, which a float32 bundle matches within 1e-4 (tested above): one export
    # fewer, in a suite whose time goes mostly to exporting.
    log_probs = []
    for step_function in (
        load(checkpoint, device="cpu").step_function,
        load_bundle(int8_bundle, device="cpu", threads=1).step_function,
    ):
        state, tokens = step_function.start(sources)
        log_probs.append(np.asarray(step_function.step(tokens, state)[0]))
    expected, got = log_probs
    assert 0 < np.abs(got - expected).max() < 0.1


def test_int8_and_fp16_together_are_refused(exported: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(SeqgenError) as error:
        export_bundle(exported[0], tmp_path / "both", fp16=True, int8=True)
    assert_one_line(error, "--fp16", "--int8", "not both")
    assert not (tmp_path / "both").exists()


# --- a joint vocabulary -------------------------------------------------------------------


def test_a_joint_vocabulary_is_stored_once_and_older_two_file_bundles_still_load(
    tmp_path: Path,
) -> None:
    config = TokenizerConfig(kind="sentencepiece", vocab_size=100)
    checkpoint = save_tiny_translator(tmp_path / "joint.safetensors", joint=config, cell="gru")
    bundle = export_bundle(checkpoint, tmp_path / "bundle")
    names = sorted(p.name for p in bundle.iterdir())
    assert names == [
        "encoder.onnx",
        "manifest.json",
        "select.onnx",
        "step.onnx",
        "tokenizer.json",
        "tokenizer.model",
    ]
    manifest = json.loads((bundle / "manifest.json").read_text())
    for side in ("source", "target"):
        entry = manifest["tokenizers"][side]
        assert (entry["file"], entry["sentencepiece_model"]) == (
            "tokenizer.json",
            "tokenizer.model",
        )
    reference = load(checkpoint, device="cpu")
    assert (
        json.loads((bundle / "tokenizer.json").read_text()) == reference.target_tokenizer.to_dict()
    )
    runtime = load_bundle(bundle, device="cpu", threads=1)
    assert runtime.source_tokenizer is runtime.target_tokenizer  # the one file, parsed once
    sentences = ["ein mann fährt fahrrad.", "zwei hunde", ""]
    expected = reference.translate(sentences, max_length=15)
    assert runtime.translate(sentences, max_length=15) == expected
    # As older seqgen wrote it: a copy per side, each named by its manifest entry.
    for side in ("source", "target"):
        shutil.copyfile(bundle / "tokenizer.json", bundle / f"{side}_tokenizer.json")
        shutil.copyfile(bundle / "tokenizer.model", bundle / f"{side}.model")
        manifest["tokenizers"][side].update(
            file=f"{side}_tokenizer.json", sentencepiece_model=f"{side}.model"
        )
    (bundle / "tokenizer.json").unlink()
    (bundle / "tokenizer.model").unlink()
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    older = load_bundle(bundle, device="cpu", threads=1)
    assert older.source_tokenizer is not older.target_tokenizer
    assert older.translate(sentences, max_length=15) == expected
