"""Run an exported bundle with ONNX Runtime: load it, check it, generate or translate. No torch.

A bundle is a folder written by ``seqgen.onnx_export``; ``export/README.md`` is its full
contract. A language model bundle::

    manifest.json    format name and version, kind, seqgen version, opset, precision,
                     "matmul": "int8" for int8 products (seqgen.onnx_quantize), each
                     graph's inputs and outputs (name, dtype, shape with symbolic axes
                     such as "rows" and "time"), state names, special token ids,
                     generation defaults and the ids generation bans
    prime.onnx       token_ids (rows, time) int64 + state -> new_<state>
    step.onnx        tokens (rows,) int64 + state -> log_probs (rows, vocab) float32,
                     top_log_probs and top_ids (rows, 32 or vocab), new_<state>
    select.onnx      rows (new_rows,) int64 + state -> selected_<state> (for GPUs)
    tokenizer.json   the tokenizer's to_dict()

A translator bundle::

    manifest.json    as above, with the recipe (decoding defaults, source length limit)
    encoder.onnx     source_ids (rows, source_len) int64 + source_lengths (rows,) int64
                     -> the first decoder state
    step.onnx        tokens (rows,) int64 + state -> log_probs, top_log_probs, top_ids
                     as above + new_<recurrent state>
    select.onnx      rows (new_rows,) int64 + state -> selected_<state> (for GPUs)
    source_tokenizer.json, target_tokenizer.json   the tokenizers' to_dict()
    source.model, target.model   the raw sentencepiece models, for other languages' ports

This module, the adapters (``seqgen.decoding.onnx_step``, ``onnx_translator_step``), the
search, the translation pipeline and the tokenizers import numpy, onnxruntime and
sentencepiece only, so other apps can run a bundle without PyTorch installed.

>>> generator = load_bundle("shakespeare-bundle")
>>> print(generator.generate("ROMEO:", max_new_tokens=100, seed=1)[0])
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime

from seqgen.config import recipe_from_dict
from seqgen.decoding.onnx_step import OnnxLanguageModelStep
from seqgen.decoding.onnx_translator_step import OnnxTranslatorStep
from seqgen.errors import CheckpointError, ConfigError, SeqgenError
from seqgen.generation import GenerationOptions, generate_text
from seqgen.text import Tokenizer, tokenizer_from_dict
from seqgen.translation import Translator

FORMAT_NAME = "seqgen-bundle"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
TRANSLATOR_TOKENIZER_FILES = {
    "source": "source_tokenizer.json",
    "target": "target_tokenizer.json",
}
# manifest["matmul"] of a bundle whose step graph multiplies in int8 (seqgen.onnx_quantize)
INT8_MATMUL = "int8"
GRAPH_FILES = {
    "language_model": {"prime": "prime.onnx", "step": "step.onnx", "select": "select.onnx"},
    "translation": {"encoder": "encoder.onnx", "step": "step.onnx", "select": "select.onnx"},
}
TOKENIZER_FILES = {
    "language_model": (TOKENIZER_FILE,),
    "translation": tuple(TRANSLATOR_TOKENIZER_FILES.values()),
}
ONNX_TYPE_NAMES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}
EXPORT_HINT = "export one with: seqgen export --model CHECKPOINT --output DIR"


class BundleGenerator:
    """A language model bundle: ONNX Runtime sessions, tokenizer and generation defaults."""

    kind = "language_model"

    def __init__(
        self,
        step_function: OnnxLanguageModelStep,
        tokenizer: Tokenizer,
        manifest: Mapping[str, Any],
        defaults: GenerationOptions,
    ) -> None:
        self.step_function = step_function
        self.tokenizer = tokenizer
        self.manifest = manifest
        self.defaults = defaults

    @property
    def device(self) -> str:
        """``"cuda"`` or ``"cpu"``: where ONNX Runtime runs the graphs."""
        return self.step_function.device

    def generate(
        self,
        prompt: str = "",
        options: GenerationOptions | None = None,
        *,
        on_text: Callable[[str], None] | None = None,
        **overrides: object,
    ) -> list[str]:
        """Continue ``prompt``; returns ``num_samples`` texts, each prompt + continuation.

        As :meth:`seqgen.pipelines.TextGenerator.generate`: ``options`` (default: the
        bundle's defaults) with keyword ``overrides`` of :class:`GenerationOptions` fields;
        ``on_text`` receives the continuation as it is produced.
        """
        options = (options or self.defaults).with_overrides(overrides)
        return generate_text(self.step_function, self.tokenizer, prompt, options, on_text=on_text)


def load_bundle(
    path: str | Path,
    *,
    device: str = "auto",
    threads: int | None = None,
    io_binding: bool | None = None,
) -> BundleGenerator | Translator:
    """Open a bundle folder on ``device`` (``auto``: CUDA when usable, else the CPU; an int8
    bundle runs on the CPU).

    ``threads``: a generator's ONNX Runtime CPU threads per operator (None: one per core);
    for a translator on the CPU, how many batches decode at once, each operator on one
    thread (None: one per core; see ``OnnxTranslatorStep.from_files``).
    ``io_binding`` keeps the state in ONNX Runtime's memory between steps (None: on CUDA
    only).

    Raises CheckpointError, in one line naming the problem, for a folder that is not a
    bundle, a missing or unreadable file, a newer format version, or graphs whose inputs
    and outputs are not those the manifest lists.
    """
    folder = Path(path)
    manifest = read_manifest(folder)
    device = _device_for(folder, manifest, device)
    if manifest["kind"] == "translation":
        return _load_translator(folder, manifest, device, threads, io_binding)
    files = GRAPH_FILES["language_model"]
    tokenizer = tokenizer_from_dict(_read_json(folder / TOKENIZER_FILE))
    step_function = OnnxLanguageModelStep.from_files(
        folder, files, device=device, threads=threads, io_binding=io_binding
    )
    _check_graphs(folder, files, step_function.sessions, manifest)
    return BundleGenerator(step_function, tokenizer, manifest, _defaults(folder, manifest))


def _device_for(folder: Path, manifest: dict[str, Any], device: str) -> str:
    """``device``, or the CPU for an int8 bundle: ONNX Runtime's int8 products
    (``DynamicQuantizeMatMul``) have CPU kernels only."""
    matmul = manifest.get("matmul")  # absent: float products
    if matmul is None:
        return device
    if matmul != INT8_MATMUL:
        raise CheckpointError(
            f"{folder / MANIFEST_FILE} asks for {matmul!r} matrix products, which this seqgen "
            "does not know; upgrade seqgen or re-export the bundle"
        )
    if device == "cuda":
        raise SeqgenError(
            f"{folder} is an int8 bundle, which runs on the CPU; use --device cpu, or export "
            "without --int8 (--fp16 for GPUs)"
        )
    return "cpu"


def _check_graphs(
    folder: Path,
    files: dict[str, str],
    sessions: dict[str, onnxruntime.InferenceSession | None],
    manifest: dict[str, Any],
) -> None:
    """CheckpointError where an open graph's inputs or outputs are not the manifest's."""
    for name, session in sessions.items():
        if session is not None:
            check_graph(folder / files[name], session, manifest["graphs"][name])


def _load_translator(
    folder: Path,
    manifest: dict[str, Any],
    device: str,
    threads: int | None,
    io_binding: bool | None,
) -> Translator:
    """The translation pipeline on the bundle's graphs."""
    files = GRAPH_FILES["translation"]
    tokenizers = {
        side: tokenizer_from_dict(_read_json(folder / file))
        for side, file in TRANSLATOR_TOKENIZER_FILES.items()
    }
    step_function = OnnxTranslatorStep.from_files(
        folder, files, device=device, threads=threads, io_binding=io_binding
    )
    _check_graphs(folder, files, step_function.sessions, manifest)
    if step_function.takes_output_ids:
        step_function.use_shortlist(*_read_shortlist(folder, manifest))
    try:
        recipe = recipe_from_dict(manifest["recipe"])
    except (KeyError, TypeError, ConfigError) as error:
        raise CheckpointError(
            f"{folder / MANIFEST_FILE} has a damaged recipe ({error}); re-export the bundle"
        ) from None
    info = manifest.get("training_info", {})
    return Translator(step_function, tokenizers["source"], tokenizers["target"], recipe, info)


def _read_shortlist(folder: Path, manifest: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, int]:
    """The lexical shortlist of a translator bundle: its table ``(source vocab, K)``, its
    frequent tokens ``(N,)`` (int64) and the target vocabulary's size."""
    try:
        entry, model = manifest["shortlist"], manifest["model"]
        stored = _read_json(folder / entry["file"])
        table = np.asarray(stored["table"], dtype=np.int64)
        frequent = np.asarray(stored["frequent"], dtype=np.int64)
        vocab_size = int(model["target_vocab_size"])
        shapes_agree = table.shape == (int(model["source_vocab_size"]), entry["per_source"])
    except (KeyError, TypeError, ValueError):
        shapes_agree = False
    if not shapes_agree or frequent.ndim != 1 or not 0 <= table.min() <= table.max() < vocab_size:
        raise CheckpointError(
            f"{folder / MANIFEST_FILE}: the step graph takes a shortlist, but the bundle's "
            "shortlist is missing or damaged; re-export the bundle"
        )
    return table, frequent, vocab_size


def is_bundle(path: str | Path) -> bool:
    """True when ``path`` is a folder with a seqgen bundle manifest (of any version)."""
    return bundle_kind(path) is not None


def bundle_kind(path: str | Path) -> str | None:
    """The ``kind`` a bundle's manifest states (``""`` if none), or None for no bundle."""
    try:
        manifest = json.loads((Path(path) / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        return None
    return str(manifest.get("kind", ""))


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a bundle folder, checked: format, version, kind and files present."""
    if not (folder / MANIFEST_FILE).is_file():
        what = "no such folder" if not folder.exists() else f"no {MANIFEST_FILE}"
        raise CheckpointError(f"{folder} is not a seqgen bundle ({what}); {EXPORT_HINT}")
    manifest = _read_json(folder / MANIFEST_FILE)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{folder / MANIFEST_FILE} is not a seqgen bundle manifest "
            f"(no format {FORMAT_NAME!r}); {EXPORT_HINT}"
        )
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{folder} has a damaged format_version {version!r}; re-export it")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{folder} has bundle format {version}, newer than this seqgen reads "
            f"({FORMAT_VERSION}); upgrade seqgen"
        )
    kind = manifest.get("kind")
    if kind not in GRAPH_FILES:
        raise CheckpointError(
            f"{folder} holds a {kind!r} bundle; this seqgen runs "
            f"{' and '.join(GRAPH_FILES)} bundles"
        )
    graphs = manifest.get("graphs")
    if not isinstance(graphs, dict) or set(graphs) != set(GRAPH_FILES[kind]):
        raise CheckpointError(
            f"{folder / MANIFEST_FILE} is damaged: it must list the graphs "
            f"{', '.join(GRAPH_FILES[kind])}; re-export the bundle"
        )
    for name in (MANIFEST_FILE, *TOKENIZER_FILES[kind], *GRAPH_FILES[kind].values()):
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder} is missing {name}; re-export the bundle")
    return manifest


def check_graph(path: Path, session: onnxruntime.InferenceSession, listed: Any) -> None:
    """CheckpointError unless the session's inputs and outputs are those the manifest lists."""
    found = {"inputs": session.get_inputs(), "outputs": session.get_outputs()}
    for side, nodes in found.items():
        actual = [_describe(n.name, ONNX_TYPE_NAMES.get(n.type, n.type), n.shape) for n in nodes]
        try:
            expected = [_describe(e["name"], e["dtype"], e["shape"]) for e in listed[side]]
        except (KeyError, TypeError):
            raise CheckpointError(
                f"the manifest's entry for {path.name} is damaged (no {side}); re-export the bundle"
            ) from None
        if actual != expected:
            raise CheckpointError(
                f"{path} does not match the manifest: its {side} are {', '.join(actual)}, "
                f"the manifest lists {', '.join(expected)}; re-export the bundle"
            )


def _describe(name: str, dtype: str, shape: Any) -> str:
    """``name:dtype[dim,...]``, e.g. ``tokens:int64[rows]``."""
    return f"{name}:{dtype}[{','.join(str(d) for d in shape)}]"


def _defaults(folder: Path, manifest: Mapping[str, Any]) -> GenerationOptions:
    """The manifest's generation defaults; fields this seqgen does not know are ignored."""
    listed = manifest.get("generation", {}).get("defaults", {})
    known = {field.name for field in fields(GenerationOptions)}
    try:
        defaults = GenerationOptions(**{k: v for k, v in listed.items() if k in known})
        defaults.validate()
    except (SeqgenError, TypeError, AttributeError) as error:
        raise CheckpointError(
            f"{folder / MANIFEST_FILE} has bad generation defaults ({error}); re-export it"
        ) from None
    return defaults


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            f"{path.parent} is missing {path.name}; re-export the bundle"
        ) from None
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not readable JSON ({error}); re-export it") from None
