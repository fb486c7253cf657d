"""The bundled models ship as bundles whose graphs read the checkpoint beside them
(seqgen.bundles.packing): inference without torch, the same outputs as PyTorch, weights
stored once, and nothing read from outside the folder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import seqgen
from seqgen.bundles.packing import LARGEST_STORED, WEIGHTS_FILE, pack_bundle
from seqgen.checkpoints import bundled_models, model_path, packaged_bundle
from seqgen.errors import CheckpointError

onnx = pytest.importorskip("onnx")

SENTENCES = ["Ein Hund läuft.", "Zwei Männer spielen Fußball auf einer Wiese.", "Eine Frau liest."]


@pytest.mark.parametrize("name", sorted(bundled_models()))
def test_a_bundled_model_is_a_bundle_over_its_checkpoint(name: str) -> None:
    folder = bundled_models()[name]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["weights"] == {"file": WEIGHTS_FILE}
    assert model_path(name) == folder / WEIGHTS_FILE
    checkpoint_bytes = (folder / WEIGHTS_FILE).stat().st_size
    referenced = 0
    for graph in manifest["graphs"].values():
        model = onnx.load(str(folder / graph["file"]), load_external_data=False)
        inline = [
            i for i in model.graph.initializer if i.data_location != onnx.TensorProto.EXTERNAL
        ]
        assert max((len(i.raw_data) for i in inline), default=0) <= LARGEST_STORED
        external = [
            i for i in model.graph.initializer if i.data_location == onnx.TensorProto.EXTERNAL
        ]
        referenced += len(external)
        for initializer in external:
            fields = {entry.key: entry.value for entry in initializer.external_data}
            assert fields["location"] == WEIGHTS_FILE
            assert int(fields["offset"]) + int(fields["length"]) <= checkpoint_bytes
    assert referenced, "no weight is read from the checkpoint"
    # The wheel holds the weights once: graphs and tokenizers add little to the checkpoint.
    total = sum(path.stat().st_size for path in folder.iterdir())
    assert total < checkpoint_bytes * 1.25 + 2_500_000
    # The translators' joint vocabulary: one tokenizer, named by both sides.
    for entry in manifest.get("tokenizers", {}).values():
        assert (entry["file"], entry["sentencepiece_model"]) == (
            "tokenizer.json",
            "tokenizer.model",
        )


@pytest.mark.parametrize("name", sorted(bundled_models()))
def test_inference_on_a_bundled_model_does_not_import_torch(name: str) -> None:
    task = seqgen.load(name, device="cpu").task
    call = {
        "translation": "model.translate(['Ein Hund läuft.'])",
        "generation": "model.generate('ROMEO:', max_new_tokens=5)",
        "classification": "model.classify(['a fine film'])",
    }[task]
    program = (
        f"import sys, seqgen; model = seqgen.load({name!r}); {call}; "
        "print(type(model).__name__, 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "False"


ENGLISH = ["A dog runs.", "Two men play football on a meadow.", "A woman reads a book."]


@pytest.mark.parametrize(
    ("name", "sentences"), [("multi30k-de-en", SENTENCES), ("multi30k-en-de", ENGLISH)]
)
def test_the_bundled_translators_decode_as_their_checkpoints_on_pytorch(
    name: str, sentences: list[str]
) -> None:
    bundle = seqgen.load(name, device="cpu")
    torch_model = seqgen.load(name, device="cpu", backend="torch")
    assert type(bundle.step_function).__name__ == "OnnxTranslatorStep"
    assert type(torch_model.step_function).__name__ == "TranslatorStep"
    for beam_size in (1, 5):
        expected = torch_model.translate(sentences, beam_size=beam_size)
        assert bundle.translate(sentences, beam_size=beam_size) == expected


def test_the_bundled_en_de_translator_writes_german() -> None:
    translated = seqgen.load("multi30k-en-de", device="cpu").translate(["A dog runs in the park."])
    assert translated == ["Ein Hund rennt im Park."]


def test_the_bundled_generator_and_classifiers_match_pytorch() -> None:
    generator = seqgen.load("shakespeare-char", device="cpu")
    reference = seqgen.load("shakespeare-char", device="cpu", backend="torch")
    assert generator.generate("ROMEO:", max_new_tokens=60, temperature=0) == reference.generate(
        "ROMEO:", max_new_tokens=60, temperature=0
    )
    texts = ["a gripping, funny film", "dull and far too long", "WINNER! Claim your prize"]
    for name in ("sentiment", "spam"):
        found = seqgen.load(name, device="cpu").classify(texts)
        expected = seqgen.load(name, device="cpu", backend="torch").classify(texts)
        assert [row[0][0] for row in found] == [row[0][0] for row in expected]
        np.testing.assert_allclose(
            [row[0][1] for row in found], [row[0][1] for row in expected], atol=1e-4
        )


def test_packing_a_fresh_export_keeps_its_outputs(tmp_path: Path) -> None:
    from seqgen.bundles.export import export_bundle

    checkpoint = model_path("spam")
    plain = export_bundle(checkpoint, tmp_path / "plain")
    packed = Path(shutil.copytree(plain, tmp_path / "packed"))
    assert pack_bundle(packed, checkpoint) == []  # every large initializer referenced
    texts = ["Free entry in 2 a wkly comp to win FA Cup final tkts", "see you at 5?", "ok"]
    assert seqgen.load(packed).classify(texts) == seqgen.load(plain).classify(texts)
    sizes = {folder.name: (folder / "classify.onnx").stat().st_size for folder in (plain, packed)}
    assert sizes["packed"] < sizes["plain"] / 5


def _copy_of_spam(tmp_path: Path) -> Path:
    folder = tmp_path / "spam"
    shutil.copytree(packaged_bundle("spam"), folder)
    return folder


def test_external_data_outside_the_folder_is_refused(tmp_path: Path) -> None:
    folder = _copy_of_spam(tmp_path)
    (tmp_path / "elsewhere.safetensors").write_bytes((folder / WEIGHTS_FILE).read_bytes())
    graph = onnx.load(str(folder / "classify.onnx"), load_external_data=False)
    for initializer in graph.graph.initializer:
        for entry in initializer.external_data:
            if entry.key == "location":
                entry.value = "../elsewhere.safetensors"
    onnx.save(graph, str(folder / "classify.onnx"))
    with pytest.raises(CheckpointError, match="cannot load .*classify.onnx") as error:
        seqgen.load(folder)
    assert "\n" not in str(error.value)


def test_a_checkpoint_linked_from_outside_is_refused(tmp_path: Path) -> None:
    folder = _copy_of_spam(tmp_path)
    outside = tmp_path / "outside.safetensors"
    (folder / WEIGHTS_FILE).rename(outside)
    (folder / WEIGHTS_FILE).symlink_to(outside)
    with pytest.raises(CheckpointError, match="leads outside the bundle"):
        seqgen.load(folder)


def test_a_missing_checkpoint_is_named(tmp_path: Path) -> None:
    folder = _copy_of_spam(tmp_path)
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match=f"missing {WEIGHTS_FILE}; re-export"):
        seqgen.load(folder)


def test_the_default_model_is_never_a_folder_that_shares_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shakespeare-char").mkdir()  # not a model: the default must not read it
    generator = seqgen.load(device="cpu")
    assert type(generator.step_function).__name__ == "OnnxLanguageModelStep"
    assert type(seqgen.load(device="cpu", backend="torch").step_function).__name__ != (
        "OnnxLanguageModelStep"
    )
