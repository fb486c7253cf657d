"""A generator's decoding options: its recipe's ``[decoding]`` section is stored with the
model, reaches ``generate`` from Python and the command line, and a flag or keyword wins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import seqgen
from seqgen.cli import main
from seqgen.tasks.generation.pipeline import Generator
from seqgen.training.checkpoint import load_checkpoint, save_checkpoint

STORED = {"strategy": "greedy", "max_new_tokens": 7}


@pytest.fixture(scope="module")
def with_stored_defaults(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run's best checkpoint with a ``[decoding]`` section of :data:`STORED`."""
    checkpoint = load_checkpoint(trained_run / "best.safetensors")
    checkpoint.recipe["decoding"] = {**checkpoint.recipe.get("decoding", {}), **STORED}
    path = tmp_path_factory.mktemp("stored") / "greedy7.safetensors"
    save_checkpoint(path, checkpoint)
    return path


def test_the_stored_defaults_reach_generate(with_stored_defaults: Path, trained_run: Path) -> None:
    generator = seqgen.load(with_stored_defaults, device="cpu")
    assert isinstance(generator, Generator)
    original = seqgen.load(trained_run, device="cpu")
    expected = original.generate("the", strategy="greedy", max_new_tokens=7)
    assert generator.generate("the") == expected
    assert len(expected[0]) == len("the") + 7  # characters
    # The caller's keyword wins; None is "not given".
    assert len(generator.generate("the", max_new_tokens=3, strategy=None)[0]) == len("the") + 3


def test_the_command_line_takes_the_stored_defaults_unless_a_flag_is_given(
    with_stored_defaults: Path,
) -> None:
    def generate(*flags: str) -> str:
        args = ["generate", "--model", str(with_stored_defaults), "--prompt", "the", *flags]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        return result.stdout.removesuffix("\n")  # click.echo's own line end

    assert len(generate()) == len("the") + 7
    assert generate() == generate()  # greedy, from the stored strategy
    assert len(generate("--max-new-tokens", "2")) == len("the") + 2


def test_no_repeat_ngram_size_is_a_per_call_option(trained_run: Path) -> None:
    generator = seqgen.load(trained_run, device="cpu")
    text = generator.generate("th", strategy="greedy", max_new_tokens=8, no_repeat_ngram_size=1)
    new = text[0][len("th") :]
    # The history starts at the prompt's last token, so no new character repeats one seen.
    assert len(new) == 8 and len(set("h" + new)) == 9


def test_a_bundle_stores_the_checkpoints_defaults(
    with_stored_defaults: Path, tmp_path: Path
) -> None:
    from seqgen.bundles.export import export_bundle

    bundle = export_bundle(with_stored_defaults, tmp_path / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    assert {k: manifest["generation"]["defaults"][k] for k in STORED} == STORED
    from_bundle = seqgen.load(bundle)
    from_checkpoint = seqgen.load(with_stored_defaults, device="cpu")
    assert from_bundle.generate("the") == from_checkpoint.generate("the")
