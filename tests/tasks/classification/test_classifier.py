"""Classification end to end on a tiny made-up corpus: the model, training, `seqgen classify`,
evaluation, export to a bundle, a pretrained encoder, and bad input."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result

import seqgen
from seqgen.cli import main
from seqgen.errors import ConfigError, DataError
from seqgen.recipes import load_recipe
from seqgen.tasks.classification.config import ClassifierConfig
from seqgen.tasks.classification.model import SequenceClassifier
from seqgen.tasks.classification.pipeline import Classifier
from seqgen.training.run import train

GOOD = "good fine great lovely warm bright".split()
BAD = "bad awful grim cold dull poor".split()
FILLER = "the a film story day it was and of in".split()

RECIPE = """\
task = "classification"

[data]
corpus = ""
train_file = '{folder}/train.tsv'
validation_file = '{folder}/val.tsv'
test_file = '{folder}/test.tsv'
max_length = 30

[tokenizer]
kind = "word"
vocab_size = 0

[model]
cell = "{cell}"
embedding_size = 16
hidden_size = 16
bidirectional = {bidirectional}
pooling = "{pooling}"
dropout = 0.0

[train]
batch_size = 16
max_steps = {steps}
eval_every = 40
log_every = 20
learning_rate = 1e-2
warmup_steps = 5
seed = 7
"""


def _sentence(rng: random.Random, positive: bool) -> str:
    words = [rng.choice(FILLER) for _ in range(rng.randint(2, 9))]
    words.insert(rng.randrange(len(words) + 1), rng.choice(GOOD if positive else BAD))
    return " ".join(words)


def _write_split(path: Path, count: int, seed: int) -> None:
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        positive = index % 2 == 0
        rows.append(f"{_sentence(rng, positive)}\t{'pos' if positive else 'neg'}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("labelled")
    for name, count, seed in (("train", 240, 1), ("val", 40, 2), ("test", 40, 3)):
        _write_split(folder / f"{name}.tsv", count, seed)
    return folder


def _recipe(folder: Path, target: Path, **values: object) -> Path:
    settings = {"cell": "lstm", "bidirectional": "true", "pooling": "max", "steps": 120}
    settings.update(values)
    target.write_text(RECIPE.format(folder=folder, **settings), encoding="utf-8")
    return target


@pytest.fixture(scope="module")
def run(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("classifier")
    recipe = _recipe(corpus, folder / "tiny.toml")
    result = train(load_recipe(recipe), folder / "run", show_progress=False)
    assert result.best_accuracy >= 0.9
    return folder / "run"


def invoke(*args: str | Path, input: str | None = None) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args], input=input)


def assert_one_line_error(result: Result, *words: str) -> None:
    assert result.exit_code != 0 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("seqgen: error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


# --- the model --------------------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["final", "max", "mean", "attention"])
@pytest.mark.parametrize(("cell", "bidirectional"), [("lstm", True), ("gru", False), ("rnn", True)])
def test_a_padded_batch_gives_each_text_what_it_gives_alone(
    pooling: str, cell: str, bidirectional: bool
) -> None:
    torch.manual_seed(0)
    config = ClassifierConfig(
        cell=cell, embedding_size=8, hidden_size=6, bidirectional=bidirectional, pooling=pooling
    )
    model = SequenceClassifier(config, vocab_size=20, num_classes=3).eval()
    texts = [[5, 3, 9, 2], [7], [4, 4, 11]]
    lengths = torch.tensor([len(t) for t in texts])
    padded = torch.zeros(3, 4, dtype=torch.long)
    for row, text in enumerate(texts):
        padded[row, : len(text)] = torch.tensor(text)
    with torch.no_grad():
        batched = model(padded, lengths)
        alone = torch.cat([model(torch.tensor([text])) for text in texts])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)


# --- training, classify, evaluate ---------------------------------------------------------------


def test_training_writes_a_self_describing_run(run: Path) -> None:
    classifier = seqgen.load(run, device="cpu")
    assert isinstance(classifier, Classifier) and classifier.task == "classification"
    assert classifier.labels == ["neg", "pos"]
    assert classifier.info["validation"]["accuracy"] >= 0.9
    header = (run / "metrics.csv").read_text(encoding="utf-8").splitlines()[0]
    assert "validation_accuracy" in header


def test_classify_from_python_and_the_command_line(run: Path) -> None:
    classifier = seqgen.load(run, device="cpu")
    best = classifier.classify(["the film was great", "it was awful"])
    assert [labels[0][0] for labels in best] == ["pos", "neg"]
    both = classifier.classify(["the day was lovely"], top_k=2)[0]
    assert [label for label, _ in both] == ["pos", "neg"]
    assert sum(p for _, p in both) == pytest.approx(1.0, abs=1e-5)
    result = invoke("classify", "--model", run, input="a great day\nthe cold story\n")
    assert result.exit_code == 0, result.output
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert [line[0] for line in lines] == ["pos", "neg"] and float(lines[0][1]) > 0.5
    jsonl = invoke("classify", "--model", run, "--format", "jsonl", input="a dull day\n")
    record = json.loads(jsonl.stdout)
    assert record["label"] == "neg" and set(record["probabilities"]) == {"neg", "pos"}


def test_a_texts_probabilities_do_not_depend_on_its_company(run: Path, corpus: Path) -> None:
    classifier = seqgen.load(run, device="cpu")
    texts = [line.split("\t")[0] for line in (corpus / "test.tsv").read_text().splitlines()]
    together = classifier.probabilities(texts, batch_size=7)
    alone = np.concatenate([classifier.probabilities([text]) for text in texts])
    # No padding enters: only the matrix kernels' summation order may differ with the rows.
    np.testing.assert_allclose(together, alone, atol=1e-6)
    assert (together.argmax(1) == alone.argmax(1)).all()


def test_evaluate_reports_accuracy_f1_and_the_confusion_matrix(run: Path, corpus: Path) -> None:
    result = invoke("evaluate", "--model", run, "--split", "test")
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.stdout and "macro-F1" in result.stdout
    assert "confusion" in result.stdout and result.stdout.count("pos") >= 2
    on_file = invoke("evaluate", "--model", run, "--file", corpus / "val.tsv")
    assert on_file.exit_code == 0 and "40 examples" in on_file.stdout


def test_resume_continues_where_the_run_stopped(corpus: Path, tmp_path: Path) -> None:
    """N steps straight == N/2 steps, then resume to N (a constant schedule: a cosine one
    depends on max_steps by design)."""
    from seqgen.training.checkpoint import load_checkpoint

    recipe = _recipe(corpus, tmp_path / "r.toml")
    constant = ["train.schedule=constant", "train.eval_every=20"]
    straight = train(load_recipe(recipe, [*constant, "train.max_steps=40"]), tmp_path / "a")
    train(load_recipe(recipe, [*constant, "train.max_steps=20"]), tmp_path / "b")
    longer = load_recipe(recipe, [*constant, "train.max_steps=40"])
    resumed = train(longer, tmp_path / "b", resume=True, show_progress=False)
    assert resumed.steps == straight.steps == 40
    a, b = (load_checkpoint(tmp_path / name / "last.safetensors") for name in ("a", "b"))
    for name, tensor in a.weights.items():
        assert torch.equal(tensor, b.weights[name]), name


# --- export ----------------------------------------------------------------------------------


def test_a_bundle_gives_the_same_labels_and_probabilities(
    run: Path, corpus: Path, tmp_path: Path
) -> None:
    from seqgen.bundles.export import export_bundle

    bundle = export_bundle(run, tmp_path / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["kind"] == "classification" and manifest["labels"] == ["neg", "pos"]
    texts = [line.split("\t")[0] for line in (corpus / "test.tsv").read_text().splitlines()]
    from_torch = seqgen.load(run, device="cpu").probabilities(texts)
    from_onnx = seqgen.load(bundle).probabilities(texts)
    np.testing.assert_allclose(from_onnx, from_torch, atol=1e-4)
    assert (from_onnx.argmax(1) == from_torch.argmax(1)).all()
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "import seqgen\n"
        f"print(seqgen.load({str(bundle)!r}).classify(['a great day'])[0][0][0])\n"
    )
    root = Path(seqgen.__file__).parent.parent
    environment = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environment
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "pos"


# --- a pretrained encoder -----------------------------------------------------------------------


def _pretrained_trainer(
    corpus: Path, trained_run: Path, tmp_path: Path, *, steps: int, gradual: bool = False
) -> Any:
    """A classifier trainer started from ``trained_run``'s layers, frozen for one step (then
    thawed together, or one layer a step with ``gradual``)."""
    from seqgen.recipes import recipe_from_dict
    from seqgen.tasks.classification.training import ClassificationTrainer
    from seqgen.training.checkpoint import load_checkpoint

    sizes = recipe_from_dict(load_checkpoint(trained_run / "best.safetensors").recipe).model
    overrides = [
        f"model.init_from={trained_run}",
        f"model.embedding_size={sizes.embedding_size}",
        f"model.hidden_size={sizes.hidden_size}",
        f"model.num_layers={sizes.num_layers}",
        "train.freeze_pretrained_steps=1",
        f"train.unfreeze={'gradual' if gradual else 'all'}",
    ]
    path = _recipe(corpus, tmp_path / "r.toml", bidirectional="false", steps=steps)
    return ClassificationTrainer(
        load_recipe(path, overrides), tmp_path / "run", resume=False, data_dir=None
    )


def test_a_language_models_layers_start_the_classifier(
    corpus: Path, trained_run: Path, tmp_path: Path
) -> None:
    from seqgen.training.checkpoint import load_checkpoint

    language_model = load_checkpoint(trained_run / "best.safetensors")
    trainer = _pretrained_trainer(corpus, trained_run, tmp_path, steps=2)
    assert trainer.tokenizer.to_dict() == language_model.tokenizer
    for name, tensor in trainer.model.state_dict().items():
        if name.startswith(("embedding.", "rnn.")):
            torch.testing.assert_close(tensor, language_model.weights[name].float())
    before = trainer.model.rnn.weight_hh_l0.detach().clone()
    trainer.train_step()  # frozen: the recurrent layer keeps its weights
    torch.testing.assert_close(trainer.model.rnn.weight_hh_l0, before)
    trainer.train_step()
    assert not torch.equal(trainer.model.rnn.weight_hh_l0, before)


def test_gradual_unfreezing_thaws_one_layer_at_a_time_from_the_top(
    corpus: Path, trained_run: Path, tmp_path: Path
) -> None:
    trainer = _pretrained_trainer(corpus, trained_run, tmp_path, steps=8, gradual=True)
    rnn = trainer.model.rnn
    # top recurrent layer first, the embedding last
    layers = [f"rnn.weight_hh_l{i}" for i in reversed(range(rnn.num_layers))]
    layers.append("embedding.weight")
    for step in range(len(layers) + 1):
        before = {name: trainer.model.state_dict()[name].clone() for name in layers}
        trainer.train_step()
        after = trainer.model.state_dict()
        changed = [not torch.equal(after[name], before[name]) for name in layers]
        assert changed == [position < step for position in range(len(layers))], step
    assert all(parameter.requires_grad for parameter in rnn.parameters())


def test_a_pretrained_encoder_must_fit(corpus: Path, trained_run: Path, tmp_path: Path) -> None:
    recipe = load_recipe(
        _recipe(corpus, tmp_path / "r.toml", bidirectional="false"),
        [f"model.init_from={trained_run}", "model.hidden_size=7"],
    )
    with pytest.raises(ConfigError, match="hidden_size"):
        train(recipe, tmp_path / "run", show_progress=False)
    with pytest.raises(ConfigError, match="bidirectional = false"):
        load_recipe(_recipe(corpus, tmp_path / "b.toml"), [f"model.init_from={trained_run}"])


# --- bad input ---------------------------------------------------------------------------------


def test_a_training_file_of_one_class(corpus: Path, tmp_path: Path) -> None:
    single = tmp_path / "train.tsv"
    single.write_text("a great day\tpos\nthe good film\tpos\n", encoding="utf-8")
    recipe = load_recipe(_recipe(corpus, tmp_path / "r.toml"), [f"data.train_file={single}"])
    with pytest.raises(DataError, match="only the class 'pos'"):
        train(recipe, tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run").exists()


def test_bad_rows_are_named_by_line(corpus: Path, tmp_path: Path) -> None:
    broken = tmp_path / "train.tsv"
    broken.write_text("a great day\tpos\nno label here\n", encoding="utf-8")
    recipe = _recipe(corpus, tmp_path / "r.toml")
    result = invoke(
        "train", recipe, "--set", f"data.train_file={broken}", "--output", tmp_path / "o"
    )
    assert_one_line_error(result, "line 2", "column")
    empty = tmp_path / "empty.tsv"
    empty.write_text("a great day\tpos\n\tneg\n", encoding="utf-8")
    result = invoke(
        "train", recipe, "--set", f"data.train_file={empty}", "--output", tmp_path / "e"
    )
    assert_one_line_error(result, "line 2", "text is empty")


def test_evaluation_with_a_label_the_model_does_not_know(run: Path, tmp_path: Path) -> None:
    unknown = tmp_path / "unknown.tsv"
    unknown.write_text("a great day\tpos\nthe film\tmeh\n", encoding="utf-8")
    result = invoke("evaluate", "--model", run, "--file", unknown)
    assert_one_line_error(result, "'meh'", "does not know")


def test_empty_lines_and_wrong_models(run: Path, trained_run: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.tsv"
    result = invoke("classify", "--model", run, "--output", output, input="good\n\nbad\n")
    assert_one_line_error(result, "line 2", "empty")
    assert not output.exists()
    assert_one_line_error(
        invoke("classify", "--model", trained_run, input="x\n"), "holds a generator"
    )
    assert_one_line_error(invoke("translate", "--model", run, input="x\n"), "holds a classifier")
    assert_one_line_error(
        invoke("classify", "--model", run, "--top-k", "0", input="x\n"), "top_k = 0"
    )


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_every_cell_exports(cell: str, corpus: Path, tmp_path: Path) -> None:
    """A plain tanh RNN too: it is exported as the GRU that computes it."""
    from seqgen.bundles.export import export_bundle

    recipe = load_recipe(_recipe(corpus, tmp_path / "r.toml", cell=cell, steps=3))
    result = train(recipe, tmp_path / "run", show_progress=False)
    assert result.steps == 3
    bundle = export_bundle(tmp_path / "run", tmp_path / "bundle")
    texts = ["a great day", "the story was dull and cold", "it"]
    from_torch = seqgen.load(tmp_path / "run", device="cpu").probabilities(texts)
    np.testing.assert_allclose(seqgen.load(bundle).probabilities(texts), from_torch, atol=1e-4)


def test_a_bundled_model_exports_by_name(tmp_path: Path) -> None:
    from seqgen.bundles.export import export_bundle

    bundle = export_bundle("spam", tmp_path / "spam")
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["kind"] == "classification" and manifest["labels"] == ["ham", "spam"]
    texts = ["WINNER!! Claim your free prize now, call 09061701461", "Ok see you at home later"]
    from_onnx = seqgen.load(bundle).probabilities(texts)
    np.testing.assert_allclose(from_onnx, seqgen.load("spam").probabilities(texts), atol=1e-4)
    assert from_onnx.argmax(1).tolist() == [1, 0]


def test_an_int8_export_pools_into_one_fixed_scale_product(tmp_path: Path) -> None:
    """The max pooling of LSTM outputs stays within [-1, 1] (value_range's ReduceMax), so
    the int8 output layer takes the fixed scale: no per-row range (Abs, ReduceMax, Div)."""
    onnx = pytest.importorskip("onnx", reason="reading graphs needs the export extra")
    from seqgen.bundles.export import export_bundle

    bundle = export_bundle("spam", tmp_path / "spam8", int8=True)
    graph = onnx.load(bundle / "classify.onnx", load_external_data=False).graph
    ops = [node.op_type for node in graph.node]
    assert "MatMulIntegerToFloat" in ops and "Abs" not in ops and "Div" not in ops
    texts = ["WINNER!! Claim your free prize now, call 09061701461", "Ok see you at home later"]
    from_int8 = seqgen.load(bundle).probabilities(texts)
    np.testing.assert_allclose(from_int8, seqgen.load("spam").probabilities(texts), atol=2e-2)
    assert from_int8.argmax(1).tolist() == [1, 0]


def test_tensorboard_shows_validation_samples(corpus: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe = load_recipe(
        _recipe(corpus, tmp_path / "tiny.toml", steps=40), ["train.tensorboard=true"]
    )
    train(recipe, tmp_path / "run", show_progress=False)
    board = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    board.Reload()
    assert [event.step for event in board.Scalars("validation/accuracy")] == [40]
    sample = board.Tensors("validation/samples/text_summary")[0].tensor_proto.string_val[0]
    assert sample.decode().count("**predicted**") == 5
