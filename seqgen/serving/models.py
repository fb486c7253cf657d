"""The models a server holds: each loaded once with ``seqgen.load``, named, and described for
``GET /models``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from seqgen.checkpoints import bundled_models, model_path, packaged_bundle
from seqgen.errors import SeqgenError
from seqgen.serving.endpoint import Endpoint
from seqgen.task import Task, task_named


@dataclass
class ServedModel:
    """A loaded pipeline with its name, task, format and route."""

    name: str
    source: str  # what --model named
    task: Task
    pipeline: Any
    format: str  # "bundle" (ONNX Runtime) or "checkpoint" (PyTorch)
    endpoint: Endpoint

    def describe(self) -> dict[str, Any]:
        """What ``GET /models`` says of the model: task, format, device, route, defaults."""
        defaults = asdict(self.pipeline.options())
        for name in self.endpoint.server_options:
            defaults.pop(name, None)
        described = {
            "name": self.name,
            "task": self.task.name,
            "endpoint": self.endpoint.path,
            "format": self.format,
            "runtime": "onnxruntime" if self.format == "bundle" else "pytorch",
            "device": str(self.pipeline.device),
            "defaults": defaults,
        }
        labels = getattr(self.pipeline, "labels", None)
        if labels is not None:
            described["labels"] = list(labels)
        return described


def load_models(sources: Sequence[str], *, device: str, backend: str) -> list[ServedModel]:
    """Load each ``--model`` (a bundled name, a checkpoint or run folder, a bundle folder);
    SeqgenError for two with one name."""
    from seqgen.bundles.reader import bundle_kind
    from seqgen.loading import load

    served: list[ServedModel] = []
    for source in sources or ("multi30k-de-en",):
        pipeline = load(source, device=device, backend=backend)
        task = task_named(pipeline.task)
        # A bundled model name is served from its bundle unless PyTorch is asked for.
        packaged = packaged_bundle(source) is not None and backend != "torch"
        is_bundle = packaged or bundle_kind(model_path(source)) is not None or backend == "onnx"
        name = model_name(source)
        if any(model.name == name for model in served):
            raise SeqgenError(
                f"two models are named {name!r}; serve one of them from a folder of another name"
            )
        endpoint = task.hook("serve")
        served.append(
            ServedModel(
                name, source, task, pipeline, "bundle" if is_bundle else "checkpoint", endpoint
            )
        )
    return served


def model_name(source: str) -> str:
    """A bundled model's name, or the file's stem or the folder's name (a run folder's
    ``best.safetensors`` is named for its run)."""
    if source in bundled_models() and not Path(source).exists():
        return source
    path = Path(source).resolve()
    if path.is_file() and path.parent.joinpath("metrics.csv").exists():
        return path.parent.name
    return path.stem if path.is_file() else path.name
