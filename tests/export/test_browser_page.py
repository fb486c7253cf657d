"""The web page (export/web) in headless Chromium, driven by playwright-core: it loads the
bundled translator served as static files, translates what is typed (offline once loaded)
as Python does, and shows bad input as a visible message. Headless Chromium here has no GPU
(navigator.gpu gives no adapter): asked for WebGPU, the page says so and runs WebAssembly.
With --enable-unsafe-webgpu it gives a software adapter (SwiftShader, Vulkan on the CPU), and
the page runs onnxruntime-web's WebGPU build on it (the last test; in this file so that it
shares the exported bundle with the others under pytest-xdist's --dist loadfile). An int8
export of the translator runs on WebAssembly too."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from seqgen.bundles.reader import load_bundle

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _skip_without_a_browser(node_package: Path) -> None:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium chromium-driver)")
    if not (node_package / "node_modules" / "playwright-core").is_dir():
        pytest.skip("playwright-core is not installed: npm ci --prefix export/js")


def _write_lines(lines: list[str], path: Path) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _first_sentences(data_dir: str, count: int) -> list[str]:
    """The first ``count`` German sentences of test_2016_flickr."""
    source = Path(data_dir) / "multi30k" / "test_2016_flickr.de.gz"
    return gzip.decompress(source.read_bytes()).decode("utf-8").splitlines()[:count]


def _drive_page(node_package: Path, bundle: Path, lines: Path, *options: str) -> dict:
    """What export/web/test/drive-page.mjs reports of the page serving ``bundle``, typing
    the lines of the file ``lines`` into it in headless Chromium."""
    driver = node_package.parent / "web" / "test" / "drive-page.mjs"
    command = ["node", str(driver), str(bundle), str(lines), "--chromium", str(CHROMIUM)]
    result = subprocess.run([*command, *options], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def _translation_page(
    node_package: Path, bundle: Path, data_dir: str, tmp_path: Path, count: int, *options: str
) -> tuple[list[str], dict]:
    """The first ``count`` test_2016_flickr sentences and what the page serving the
    translator ``bundle`` shows for them (``options``: drive-page.mjs's)."""
    _skip_without_a_browser(node_package)
    sentences = _first_sentences(data_dir, count)
    lines = _write_lines(sentences, tmp_path / "sentences.txt")
    return sentences, _drive_page(node_package, bundle, lines, *options)


def test_browser_page_translates_as_python_does(
    node_package: Path, bundled: Callable[[str], Path], data_dir: str, tmp_path: Path
) -> None:
    bundle = bundled("multi30k-de-en")
    sentences, page = _translation_page(
        node_package, bundle, data_dir, tmp_path, 3,
        "--screenshot", str(tmp_path / "page.png"),
        "--bad-bundle", "/web/no-such-bundle/", "--backend", "webgpu",
    )  # fmt: skip
    # WebGPU was asked for where there is none: a visible notice, and WebAssembly runs.
    assert page["backend"] == "wasm" and page["task"].endswith("(ONNX Runtime Web, WebAssembly)")
    assert page["notice"] == (
        "WebGPU was asked for, but the browser gives no WebGPU adapter: running on WebAssembly."
    )
    # What the page shows for one typed sentence is Python's translation of that sentence.
    translator = load_bundle(bundle, device="cpu")
    expected = [translator.translate([sentence])[0] for sentence in sentences]
    assert [typed["output"] for typed in page["typed"]] == expected
    assert all(t["error"] is None and t["timing"].endswith(" ms") for t in page["typed"])
    assert page["emptyLine"] == {"output": "", "timing": "Type some text.", "error": None}
    assert "longer than the model's limit of 100 pieces" in page["longLine"]
    assert "no readable manifest.json" in page["badBundle"]
    assert page["consoleErrors"] == []
    assert (tmp_path / "page.png").stat().st_size > 10_000


def test_browser_page_translates_an_int8_bundle_as_python_does(
    node_package: Path, bundled: Callable[..., Path], data_dir: str, tmp_path: Path
) -> None:
    """An int8 export (its products ``MatMulIntegerToFloat``, some inside the encoder's
    ``Scan``s: contrib operators of onnxruntime-web's WebAssembly build), typed and batched."""
    bundle = bundled("multi30k-de-en", int8=True)
    sentences, page = _translation_page(
        node_package, bundle, data_dir, tmp_path, 3,
        "--type", "2", "--bench", "3", "--long-line", "off",
    )  # fmt: skip
    assert page["backend"] == "wasm" and page["consoleErrors"] == []
    translator = load_bundle(bundle, device="cpu")
    assert [typed["output"] for typed in page["typed"]] == [
        translator.translate([sentence])[0] for sentence in sentences[:2]
    ]
    assert page["bench"]["greedy"]["translations"] == translator.translate(sentences, beam_size=1)
    assert page["bench"]["beam5"]["translations"] == translator.translate(sentences, beam_size=5)


@pytest.mark.parametrize("packaged", [False, True], ids=["exported", "packaged"])
def test_browser_page_classifies_as_python_does(
    node_package: Path, bundled: Callable[[str], Path], tmp_path: Path, packaged: bool
) -> None:
    """An exported bundle, and the model inside the seqgen package, whose graphs read their
    weights from the checkpoint beside them (the page hands it to onnxruntime-web as
    external data)."""
    from seqgen.checkpoints import packaged_bundle

    _skip_without_a_browser(node_package)
    bundle = packaged_bundle("sentiment") if packaged else bundled("sentiment")
    texts = ["a gorgeous , witty , seductive movie .", "a dull , lifeless mess ."]
    page = _drive_page(node_package, bundle, _write_lines(texts, tmp_path / "texts.txt"))
    classified = load_bundle(bundle, device="cpu").classify(texts, top_k=2)
    expected = ["   ".join(f"{label} {100 * p:.1f}%" for label, p in best) for best in classified]
    assert [typed["output"] for typed in page["typed"]] == expected
    assert page["longLine"] is not None and "the model reads the first 80" in page["longLine"]
    assert page["backend"] == "wasm" and page["notice"] is None  # auto, without an adapter
    assert page["consoleErrors"] == []


def test_browser_page_translates_on_webgpu_as_python_does(
    node_package: Path, bundled: Callable[[str], Path], data_dir: str, tmp_path: Path
) -> None:
    bundle = bundled("multi30k-de-en")
    sentences, page = _translation_page(
        node_package, bundle, data_dir, tmp_path, 2,
        "--backend", "webgpu", "--webgpu", "on", "--type", "1", "--bench", "2",
        "--long-line", "off",
    )  # fmt: skip
    if page["adapter"] is None:
        pytest.skip("this Chromium gives no WebGPU adapter, even with --enable-unsafe-webgpu")
    adapter = page["adapter"]
    name = f"{adapter['vendor']} {adapter['architecture']}".strip() or "unnamed"
    if adapter["fallback"]:
        name += ", software"
    # Bit parity is not promised on WebGPU (its shaders sum in other orders), so a near tie
    # could one day pick another token; on SwiftShader these sentences give Python's text.
    # The page runs WebGPU, says so in its title, and gives no notice of a fallback.
    assert page["backend"] == "webgpu", page["notice"]
    assert page["task"] == f"translator (ONNX Runtime Web, WebGPU: {name})"
    assert page["notice"] is None
    translator = load_bundle(bundle, device="cpu")
    # Typed: the page's translation of one sentence (the model's default beam) is Python's.
    assert [typed["output"] for typed in page["typed"]] == translator.translate(sentences[:1])
    assert page["typed"][0]["error"] is None
    # Both sentences at once, greedy and beam 5, as Python decodes the same batch.
    assert page["bench"]["greedy"]["translations"] == translator.translate(sentences, beam_size=1)
    assert page["bench"]["beam5"]["translations"] == translator.translate(sentences, beam_size=5)
    assert page["consoleErrors"] == []
