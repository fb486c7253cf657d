"""Self-describing checkpoints that load without executing code.

One safetensors file holds the model weights, and its string metadata holds the format
version, the model kind, the resolved recipe and the tokenizer as JSON: a checkpoint needs
neither the training data nor the recipe file to be used. A ``last`` checkpoint also holds
what ``--resume`` needs (optimizer moments, RNG state, the hidden state carried across
batches) under the ``training/`` prefix, in the same file, so weights and training state can
never disagree. Files are written to a temporary name and renamed, so a crash never leaves
a half-written checkpoint.

Equal weights are stored once (format 2): a translator that shares its source and target
embeddings and ties the output layer to them holds one (vocab, embedding) matrix three times
in its state dict, and writing it once halves the bundled translators. The metadata's
``aliases`` table names each weight left out and the stored one it equals; loading restores
every name, so a state dict round-trips unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from seqgen.config import parse_json
from seqgen.errors import CheckpointError
from seqgen.files import atomic_write

FORMAT_NAME = "seqgen-checkpoint"
FORMAT_VERSION = 2  # 2: equal weights stored once (``aliases``)
TRAINING_PREFIX = "training/"


@dataclass
class Checkpoint:
    """What a checkpoint file holds, decoded."""

    kind: str  # the task's name (the task registry's key, seqgen.tasks)
    recipe: dict[str, Any]
    tokenizer: dict[str, Any]
    weights: dict[str, torch.Tensor]
    info: dict[str, Any] = field(default_factory=dict)  # step, validation metrics, ...
    training: dict[str, Any] | None = None  # resume state, only in "last" checkpoints


def _flatten_training_state(training: dict[str, Any]) -> tuple[dict[str, torch.Tensor], Any]:
    """Split nested training state into named tensors and a JSON skeleton pointing at them."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(value: Any, name: str) -> Any:
        if isinstance(value, torch.Tensor):
            tensors[TRAINING_PREFIX + name] = value.detach().cpu().contiguous()
            return {"__tensor__": name}
        if isinstance(value, dict):
            return {
                "__dict__": [
                    [walk(k, f"{name}.k{i}"), walk(v, f"{name}.{i}")]
                    for i, (k, v) in enumerate(value.items())
                ]
            }
        if isinstance(value, (list, tuple)):
            return [walk(v, f"{name}.{i}") for i, v in enumerate(value)]
        return value

    return tensors, walk(training, "state")


def _unflatten_training_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict) and "__tensor__" in skeleton:
        return tensors[TRAINING_PREFIX + skeleton["__tensor__"]]
    if isinstance(skeleton, dict) and "__dict__" in skeleton:
        return {
            _unflatten_training_state(k, tensors): _unflatten_training_state(v, tensors)
            for k, v in skeleton["__dict__"]
        }
    if isinstance(skeleton, list):
        return [_unflatten_training_state(v, tensors) for v in skeleton]
    return skeleton


def save_checkpoint(
    path: str | Path, checkpoint: Checkpoint, *, dtype: torch.dtype | None = None
) -> None:
    """Write ``checkpoint`` atomically; ``dtype`` (e.g. float16) casts floating weights."""
    weights = {}
    for name, tensor in checkpoint.weights.items():
        # A copy: tied weights share memory, which safetensors refuses to write.
        tensor = tensor.detach().cpu().clone()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        weights[name] = tensor.contiguous()
    aliases = _equal_weights(weights)
    for name in aliases:
        del weights[name]
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "kind": checkpoint.kind,
        "recipe": json.dumps(checkpoint.recipe),
        "tokenizer": json.dumps(checkpoint.tokenizer),
        "info": json.dumps(checkpoint.info),
        "aliases": json.dumps(aliases),
    }
    if checkpoint.training is not None:
        tensors, skeleton = _flatten_training_state(checkpoint.training)
        weights.update(tensors)
        metadata["training"] = json.dumps(skeleton)
    atomic_write(Path(path), lambda temporary: save_file(weights, temporary, metadata=metadata))


def _equal_weights(weights: dict[str, torch.Tensor]) -> dict[str, str]:
    """{name: the earlier name it equals} for each matrix whose dtype, shape and values equal
    an earlier matrix's: tied parameters, whatever the model calls them. Vectors are always
    stored (equal biases, zeros at initialisation, would save nothing worth a name)."""
    aliases: dict[str, str] = {}
    kept: list[str] = []
    for name, tensor in weights.items():
        if tensor.dim() < 2:
            continue
        same = (
            other
            for other in kept
            if weights[other].dtype == tensor.dtype
            and weights[other].shape == tensor.shape
            and torch.equal(weights[other], tensor)
        )
        original = next(same, None)
        if original is None:
            kept.append(name)
        else:
            aliases[name] = original
    return aliases


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A checkpoint file, or a run folder (its ``best.safetensors``)."""
    path = Path(path)
    if path.is_dir():
        if (path / "manifest.json").exists():
            raise CheckpointError(f"{path} is an exported ONNX bundle, not a PyTorch checkpoint")
        path = path / "best.safetensors"
    if not path.exists():
        raise CheckpointError(
            f"no such checkpoint: {path}; pass a .safetensors file, a run folder or a bundle folder"
        )
    return path


def load_checkpoint(path: str | Path, *, with_training_state: bool = False) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`; weights come back as stored."""
    path = resolve_checkpoint_path(path)
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(
            f"{path} is not a readable checkpoint (corrupt or truncated: {error})"
        ) from None
    if metadata.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path} is not a seqgen checkpoint (no '{FORMAT_NAME}' metadata)")
    version_text = metadata.get("format_version", "0")
    if not version_text.isdigit():
        raise CheckpointError(f"{path} has a damaged format_version {version_text!r}; retrain it")
    version = int(version_text)
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {version}, newer than this seqgen reads "
            f"({FORMAT_VERSION}); upgrade seqgen"
        )
    return _decode(path, metadata, tensors, with_training_state=with_training_state)


def _decode(
    path: Path,
    metadata: dict[str, str],
    tensors: dict[str, torch.Tensor],
    *,
    with_training_state: bool,
) -> Checkpoint:
    """The checkpoint's metadata parsed and checked: each JSON entry a table nested no
    deeper than config.MAX_JSON_DEPTH (a 200,000-deep one crashed the parser)."""
    try:
        checkpoint = Checkpoint(
            kind=metadata["kind"],
            recipe=_table(metadata, "recipe"),
            tokenizer=_table(metadata, "tokenizer"),
            weights=_with_aliases(
                {k: v for k, v in tensors.items() if not k.startswith(TRAINING_PREFIX)},
                _table(metadata, "aliases", default="{}"),
            ),
            info=_table(metadata, "info", default="{}"),
        )
        if with_training_state and "training" in metadata:
            skeleton = parse_json(metadata["training"])
            checkpoint.training = _unflatten_training_state(skeleton, tensors)
    except KeyError as error:
        raise CheckpointError(
            f"{path} has damaged metadata (no {error}); retrain or re-export it"
        ) from None
    except (TypeError, ValueError) as error:  # json's errors are ValueErrors
        raise CheckpointError(
            f"{path} has damaged metadata ({error}); retrain or re-export it"
        ) from None
    return checkpoint


def _with_aliases(weights: dict[str, torch.Tensor], aliases: dict[str, Any]) -> dict[str, Any]:
    """``weights`` with each aliased name restored as a copy of the weight it equals (a copy,
    so that code changing one weight in place never changes another); ValueError for an
    alias of a weight the file does not hold."""
    for name, original in aliases.items():
        if not isinstance(original, str) or original not in weights:
            raise ValueError(f"its aliases name {original!r}, which it does not hold")
        weights[name] = weights[original].clone()
    return weights


def _table(metadata: dict[str, str], key: str, *, default: str | None = None) -> dict[str, Any]:
    """The JSON table stored under ``key``; ValueError for anything else."""
    text = metadata[key] if default is None else metadata.get(key, default)
    try:
        value = parse_json(text)
    except ValueError as error:
        raise ValueError(f"its {key} is not readable JSON: {error}") from None
    if not isinstance(value, dict):
        raise ValueError(f"its {key} is a JSON {type(value).__name__}, not a table")
    return value


def build_model(
    make: Callable[[], torch.nn.Module], checkpoint: Checkpoint, path: Path, device: torch.device
) -> torch.nn.Module:
    """``make()``, the model a checkpoint's config describes, with the checkpoint's weights,
    on ``device``. The config is first built on the meta device (no memory) and checked
    against the weights in the file (names, shapes, dtypes) and against the memory
    available, so a damaged config (``hidden_size = 10**9``) is one CheckpointError line,
    not a terabyte allocation."""
    try:
        with torch.device("meta"):
            skeleton = make()
    except (RuntimeError, ValueError, OverflowError) as error:  # sizes past int64
        raise CheckpointError(
            f"{path}: its config describes a model too large to build "
            f"({str(error).splitlines()[0]}); the file is damaged: retrain or re-export it"
        ) from None
    check_weights(skeleton.state_dict(), checkpoint.weights, path)
    check_memory(skeleton, path)
    model = make()
    load_weights(model, checkpoint, path, device)
    return model


def check_weights(
    expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], path: Path
) -> None:
    """CheckpointError, in one line, where the weights in the file are not those the
    config builds: a name missing or extra, another shape, or integers where floating
    point weights belong (int8 tensors would load as garbage numbers)."""
    damaged = "the file is damaged or its config is not its weights'; retrain or re-export it"
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing or extra:
        what = f"no {missing[0]}" if missing else f"an unknown tensor {extra[0]}"
        raise CheckpointError(f"{path}: weights do not match its config ({what}); {damaged}")
    for name, tensor in expected.items():
        stored = found[name]
        if tuple(stored.shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{path}: its config builds {name} of shape {tuple(tensor.shape)}, the file "
                f"holds {tuple(stored.shape)}; {damaged}"
            )
        if stored.is_floating_point() != tensor.is_floating_point():
            raise CheckpointError(
                f"{path}: {name} is stored as {str(stored.dtype).removeprefix('torch.')} "
                f"where {str(tensor.dtype).removeprefix('torch.')} belongs; {damaged}"
            )


def available_memory() -> int | None:
    """Bytes of memory the system can still give (Linux ``MemAvailable``), or None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(skeleton: torch.nn.Module, path: Path) -> None:
    """CheckpointError where the model (float32) would not fit in the memory available."""
    needed = sum(t.numel() * 4 for t in skeleton.state_dict().values())
    available = available_memory()
    if available is not None and needed > available:
        raise CheckpointError(
            f"{path}: its model needs {needed / 2**30:,.1f} GiB, more than the "
            f"{available / 2**30:,.1f} GiB of memory available; free memory or use a "
            "larger machine"
        )


def load_weights(
    model: torch.nn.Module, checkpoint: Checkpoint, path: Path, device: torch.device
) -> None:
    """Put a checkpoint's weights into ``model`` (float32) and move it to ``device``;
    CheckpointError, in one line, where they do not fit the model its config builds."""
    check_weights(model.state_dict(), checkpoint.weights, path)
    try:
        model.load_state_dict(
            {k: v.float() if v.is_floating_point() else v for k, v in checkpoint.weights.items()}
        )
    except RuntimeError as error:
        first_line = str(error).splitlines()[0]
        raise CheckpointError(f"{path}: weights do not match its config ({first_line})") from None
    model.to(device)
