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
    format: str  # "bundle" (ONNX Runtime), "checkpoint" (PyTorch) or "ensemble"
    endpoint: Endpoint
    members: tuple[str, ...] = ()  # an ensemble's models, as --ensemble named them
    runtimes: tuple[str, ...] = ()  # an ensemble's members' runtimes, in that order

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
            "runtime": "+".join(dict.fromkeys(self.runtimes)) or _RUNTIMES[self.format],
            "device": str(self.pipeline.device),
            "defaults": defaults,
        }
        if self.members:
            described["members"] = list(self.members)
        labels = getattr(self.pipeline, "labels", None)
        if labels is not None:
            described["labels"] = list(labels)
        return described


def load_models(
    sources: Sequence[str], *, device: str, backend: str, ensembles: Sequence[str] = ()
) -> list[ServedModel]:
    """Load each ``--model`` (a bundled name, a checkpoint or run folder, a bundle folder)
    and each ``--ensemble`` (``NAME=A,B,...``: translators decoding as one); SeqgenError for
    two with one name. Neither given: the bundled translator."""
    from seqgen.loading import load, load_as_one

    parsed = [parse_ensemble(spec) for spec in ensembles]  # a bad spec fails before loading
    served: list[ServedModel] = []
    for source in sources or (() if ensembles else ("multi30k-de-en",)):
        pipeline = load(source, device=device, backend=backend)
        name = _unique_name(model_name(source), served)
        task = task_named(pipeline.task)
        served.append(
            ServedModel(name, source, task, pipeline, _format(source, backend), task.hook("serve"))
        )
    for spec, (name, members) in zip(ensembles, parsed, strict=True):
        pipeline = load_as_one(members, device=device, backend=backend)
        task = task_named(pipeline.task)
        served.append(
            ServedModel(
                name=_unique_name(name, served),
                source=spec,
                task=task,
                pipeline=pipeline,
                format="ensemble",
                endpoint=task.hook("serve"),
                members=members,
                runtimes=tuple(_RUNTIMES[_format(member, backend)] for member in members),
            )
        )
    return served


def parse_ensemble(spec: str) -> tuple[str, tuple[str, ...]]:
    """``NAME=A,B,...`` as ``(NAME, (A, B, ...))``; SeqgenError (one line) otherwise."""
    name, equals, listed = spec.partition("=")
    members = tuple(member.strip() for member in listed.split(","))
    if not equals or not name.strip() or len(members) < 2 or not all(members):
        raise SeqgenError(
            f"--ensemble {spec!r} is not NAME=MODEL,MODEL[,...]: name the ensemble, then two "
            "or more models (bundled names, checkpoints or bundle folders) between commas"
        )
    return name.strip(), members


# What runs each format's models (an ensemble: its members').
_RUNTIMES = {"bundle": "onnxruntime", "checkpoint": "pytorch"}


def _format(source: str, backend: str) -> str:
    """``bundle`` where ONNX Runtime runs ``source``, else ``checkpoint``. A bundled model's
    name is served from its bundle unless PyTorch is asked for."""
    from seqgen.bundles.reader import bundle_kind

    packaged = packaged_bundle(source) is not None and backend != "torch"
    is_bundle = packaged or bundle_kind(model_path(source)) is not None or backend == "onnx"
    return "bundle" if is_bundle else "checkpoint"


def _unique_name(name: str, served: Sequence[ServedModel]) -> str:
    if any(model.name == name for model in served):
        raise SeqgenError(
            f"two models are named {name!r}; serve one of them from a folder of another name"
        )
    return name


def model_name(source: str) -> str:
    """A bundled model's name, or the file's stem or the folder's name (a run folder's
    ``best.safetensors`` is named for its run)."""
    if source in bundled_models() and not Path(source).exists():
        return source
    path = Path(source).resolve()
    if path.is_file() and path.parent.joinpath("metrics.csv").exists():
        return path.parent.name
    return path.stem if path.is_file() else path.name
