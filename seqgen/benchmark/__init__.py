"""``seqgen bench``: training and decoding speed on the current device, as a table and JSON.

Each figure is the median of several timed runs after an untimed warm-up (the machines are
noisy); FLOP/s count the models' matrix products (``flops.py``) against the device's peak.
``quick`` shrinks every measurement to a smoke test that finishes in well under a minute on
a 2-core CPU.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from seqgen.benchmark import flops
from seqgen.benchmark.classification import classification_throughput
from seqgen.benchmark.measure import peak_memory_bytes
from seqgen.benchmark.suites import (
    Result,
    generator_sampling,
    generator_training,
    translation_decoding,
    translator_training,
)
from seqgen.checkpoints import bundled_model_path
from seqgen.training.device import resolve_device


@dataclass(frozen=True)
class BenchOptions:
    """What to measure; ``*_overrides`` are ``--set`` strings for each recipe."""

    quick: bool = False
    device: str = "auto"
    repeats: int = 3
    generator: str | None = None  # checkpoint; None: the bundled one
    translator: str | None = None
    classifier: str | None = None
    generator_overrides: tuple[str, ...] = ()
    translator_overrides: tuple[str, ...] = ()
    data_dir: str | None = None


def run_benchmark(options: BenchOptions, *, on_result: Any = None) -> dict[str, Any]:
    """Run every measurement; returns the report (``results`` and the machine's facts)."""
    device = resolve_device(options.device)
    generator = Path(options.generator or bundled_model_path("generation"))
    translator = Path(options.translator or bundled_model_path("translation"))
    classifier = Path(options.classifier or bundled_model_path("classification"))
    _check_tasks(
        [(generator, "generation"), (translator, "translation"), (classifier, "classification")]
    )
    quick, repeats = options.quick, 1 if options.quick else options.repeats
    results: list[Result] = []

    def keep(*new: Result) -> None:
        results.extend(new)
        for result in new:
            if on_result is not None:
                on_result(result)

    common = {"repeats": repeats, "data_dir": options.data_dir}
    keep(
        generator_training(
            generator,
            device,
            steps=1 if quick else 10,
            overrides=options.generator_overrides,
            **common,
        )
    )
    keep(
        translator_training(
            translator,
            device,
            steps=5 if quick else 50,
            overrides=options.translator_overrides,
            **common,
        )
    )
    keep(
        *translation_decoding(
            translator,
            device,
            sentences=100 if quick else None,
            overrides=options.translator_overrides,
            **common,
        )
    )
    keep(
        generator_sampling(
            generator,
            device,
            rows=8 if quick else 64,
            new_tokens=50 if quick else 300,
            repeats=repeats,
        )
    )
    sentences = 100 if quick else None
    keep(*classification_throughput(classifier, device, sentences=sentences, **common))
    return _report(device, options, repeats, results)


def _check_tasks(models: list[tuple[Path, str]]) -> None:
    """CheckpointError, before any measurement, for a checkpoint of another task than its
    option's (``--translator`` given a generator, ...)."""
    from seqgen.checkpoints import check_task
    from seqgen.task import task_named
    from seqgen.training.checkpoint import load_checkpoint

    for path, kind in models:
        check_task(path, task_named(load_checkpoint(path).kind), task_named(kind))


def _report(
    device: torch.device, options: BenchOptions, repeats: int, results: list[Result]
) -> dict[str, Any]:
    """The results with the machine's facts: device and its peak, versions, memory."""
    peak, how = _device_peak(device)
    return {
        "device": _device_name(device),
        "peak_flops_per_second": peak,
        "peak_from": how,
        "torch": torch.__version__,
        "onnxruntime": _onnxruntime_version(),
        "python": platform.python_version(),
        "quick": options.quick,
        "repeats": repeats,
        "peak_memory_bytes": peak_memory_bytes(),
        "cuda_peak_allocated_bytes": (
            torch.cuda.max_memory_allocated() if device.type == "cuda" else None
        ),
        "results": [asdict(result) for result in results],
    }


def format_table(report: dict[str, Any]) -> str:
    """The report as an aligned text table."""
    peak = report["peak_flops_per_second"]
    lines = [
        f"device: {report['device']} (peak {_giga(peak)} GFLOP/s: {report['peak_from']})",
        f"{'measurement':<34} {'value':>12}  {'unit':<12} {'GFLOP/s':>8} {'of peak':>8}",
    ]
    for row in report["results"]:
        achieved = row["flops_per_second"]
        share = f"{100 * achieved / peak:.1f}%" if achieved and peak else "-"
        lines.append(
            f"{row['name']:<34} {row['value']:>12,.1f}  {row['unit']:<12} "
            f"{_giga(achieved):>8} {share:>8}"
        )
    lines.append(f"peak memory: {report['peak_memory_bytes'] / 2**20:,.0f} MiB (process RSS)")
    if report["cuda_peak_allocated_bytes"] is not None:
        lines.append(f"CUDA peak allocated: {report['cuda_peak_allocated_bytes'] / 2**20:,.0f} MiB")
    return "\n".join(lines)


def _giga(value: float | None) -> str:
    return f"{value / 1e9:.1f}" if value else "-"


def _device_peak(device: torch.device) -> tuple[float | None, str]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = flops.gpu_peak(name)
        return peak, "dense bf16 tensor cores" if peak else f"unknown for {name}"
    return flops.cpu_peak()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in _cpuinfo().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "CPU",
    )
    return f"{model}, {torch.get_num_threads()} threads"


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _onnxruntime_version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__
