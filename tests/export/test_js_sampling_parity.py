"""Seeded sampling in the JavaScript runtime (export/js) gives Python's text: numpy's
``default_rng(seed).random()`` ported bit for bit (export/js/src/search/numpy-random.js) and
the draw computed as seqgen/decoding/search.py computes it."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from seqgen.bundles.reader import load_bundle

# Seeds of one 32-bit word, of two, and of five (more words than SeedSequence's pool of 4).
SEEDS = [0, 1, 42, 2**32 - 1, 2**32 + 5, 2**128 + 3]


def test_numpy_random_equals_numpy(node_package: Path) -> None:
    script = (
        "const { defaultRng } = await import(process.argv[1]);"
        "const seeds = JSON.parse(process.argv[2]);"
        "console.log(JSON.stringify(seeds.map((s) => {"
        "  const random = defaultRng(BigInt(s));"
        "  return Array.from({ length: 1000 }, random);"
        "})));"
    )
    module = (node_package / "src" / "search" / "numpy-random.js").as_uri()
    seeds = json.dumps([str(seed) for seed in SEEDS])
    result = subprocess.run(
        ["node", "--input-type=module", "-e", script, module, seeds],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    for seed, numbers in zip(SEEDS, found, strict=True):
        expected = np.random.default_rng(seed).random(1000).tolist()
        assert numbers == expected, f"seed {seed}"  # bit for bit: JSON keeps every double


def _generate_js(node_package: Path, bundle: Path, prompt: str, *options: str) -> str:
    command = ["node", str(node_package / "bin" / "seqgen.js"), "generate", str(bundle), *options]
    result = subprocess.run(
        command, input=prompt + "\n", capture_output=True, text=True, encoding="utf-8"
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def generator(bundled: Callable[[str], Path]) -> Any:
    """The bundled character model's bundle on Python's ONNX path."""
    return load_bundle(bundled("shakespeare-char"), device="cpu")


@pytest.mark.parametrize(
    ("seed", "options"),
    [
        (1, {}),
        (2, {}),
        (3, {}),
        (4, {"temperature": 1.2, "top_p": 0.9, "no_repeat_ngram_size": 3}),
        (6, {"top_k": 10}),
    ],
)
def test_seeded_continuations_equal_python(
    node_package: Path,
    bundled: Callable[[str], Path],
    generator: Any,
    seed: int,
    options: dict[str, float],
) -> None:
    bundle = bundled("shakespeare-char")
    expected = generator.generate(
        "ROMEO:", max_new_tokens=200, seed=seed, strategy="sample", **options
    )[0]
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in options.items()]
    found = _generate_js(
        node_package, bundle, "ROMEO:", "--strategy=sample", f"--seed={seed}",
        "--max-length=200", *flags,
    )  # fmt: skip
    assert found == expected
    assert len(found) == len("ROMEO:") + 200  # characters: 200 new tokens


def test_several_samples_of_one_call_equal_python(
    node_package: Path, bundled: Callable[[str], Path], generator: Any
) -> None:
    # --num-samples 3: three rows decoded together, the draws interleaved row by row; with
    # beam search, the 3 best beams.
    bundle = bundled("shakespeare-char")
    for options in ({"seed": 5}, {"strategy": "beam", "beam_size": 4}):
        expected = generator.generate("ROMEO:", max_new_tokens=100, num_samples=3, **options)
        flags = [f"--{name.replace('_', '-')}={value}" for name, value in options.items()]
        found = _generate_js(
            node_package, bundle, "ROMEO:", "--num-samples=3", "--max-length=100", *flags
        )
        assert found == expected and len(set(found)) == 3
