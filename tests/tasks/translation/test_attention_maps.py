"""Attention maps of translations: the weights of the returned hypothesis, and their pictures."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import seqgen
from seqgen.cli import main

SENTENCES = ["Ein Mann fährt Fahrrad auf der Straße.", "Zwei Hunde spielen im Schnee."]


@pytest.fixture(scope="module")
def translator():
    return seqgen.load("multi30k-de-en")


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_each_row_sums_to_one_over_the_source(translator):
    best = translator.translate_n_best(SENTENCES[:1], n_best=2)[0]
    for hypothesis in best:
        found = translator.attention(SENTENCES[0], hypothesis)
        source = translator.encode_sources(SENTENCES[:1])[0]
        assert found.weights.shape == (len(hypothesis.token_ids) + 1, len(source) + 1)
        assert np.allclose(found.weights.sum(axis=1), 1.0, atol=1e-5)
        assert found.source_pieces[-1] == found.target_pieces[-1] == "</s>"
        assert len(found.target_pieces) == found.weights.shape[0]


def test_the_map_is_that_of_the_translation_search_found(translator):
    """The best translation's map is the default, and a word's row peaks on its source word."""
    found = translator.attention(SENTENCES[1])
    assert "".join(found.target_pieces[:-1]).replace(" ", "") == (
        translator.translate(SENTENCES[1:2])[0].replace(" ", "")
    )
    dogs = found.target_pieces.index("dogs")
    assert found.source_pieces[int(found.weights[dogs].argmax())] == "Hunde"


def test_translate_draws_one_picture_per_translation(tmp_path):
    folder = tmp_path / "maps"
    text = "\n".join([SENTENCES[0], "", SENTENCES[1]]) + "\n"
    args = ["translate", "--attention-plot", str(folder), "--n-best", "2"]
    result = CliRunner().invoke(main, args, input=text)
    assert result.exit_code == 0, result.output
    names = sorted(path.name for path in folder.iterdir())
    assert names == ["line-0001-1.png", "line-0001-2.png", "line-0003-1.png", "line-0003-2.png"]
    width, height = png_size(folder / "line-0001-1.png")
    assert 400 <= width <= 3000 and 300 <= height <= 3000


def test_one_line_and_a_png_name_draws_that_file(tmp_path):
    target = tmp_path / "map.png"
    result = CliRunner().invoke(
        main, ["translate", "--attention-plot", str(target)], input="Ein Hund.\n"
    )
    assert result.exit_code == 0 and png_size(target)[0] > 300


def test_without_matplotlib_it_names_the_extra(tmp_path):
    hide = "import sys; sys.modules['matplotlib'] = None; from seqgen.cli import run; run()"
    done = subprocess.run(
        [sys.executable, "-c", hide, "translate", "--attention-plot", str(tmp_path / "a.png")],
        input="Ein Hund.\n",
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "pip install 'seqgen[plot]'" in done.stderr
    assert done.stderr.count("\n") == 1 and not (tmp_path / "a.png").exists()


def test_a_bundle_gives_the_attention_pytorch_gives(translator, tmp_path):
    """The step graph outputs its attention weights; the forced pass over the bundle's graphs
    gives PyTorch's map."""
    bundle = tmp_path / "de-en"
    result = CliRunner().invoke(
        main, ["export", "--model", "multi30k-de-en", "--output", str(bundle)]
    )
    assert result.exit_code == 0, result.output
    onnx_translator = seqgen.load(str(bundle))
    hypothesis = translator.translate_n_best(SENTENCES[:1])[0][0]
    from_bundle = onnx_translator.attention(SENTENCES[0], hypothesis)
    from_torch = translator.attention(SENTENCES[0], hypothesis)
    assert from_bundle.target_pieces == from_torch.target_pieces
    assert np.abs(from_bundle.weights - from_torch.weights).max() < 1e-4
    target = tmp_path / "map.png"
    args = ["translate", "--model", str(bundle), "--attention-plot", str(target)]
    assert CliRunner().invoke(main, args, input="Ein Hund.\n").exit_code == 0
    assert png_size(target)[0] > 300
