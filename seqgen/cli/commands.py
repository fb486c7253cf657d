"""The commands every task shares: ``train``, ``evaluate``, ``export`` and ``bench``.

Each works from the task a recipe, checkpoint or bundle names (the task registry), so a new
task needs nothing here.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from seqgen.cli.common import (
    EvaluationRequest,
    backend_option,
    data_dir_option,
    device_option,
    model_option,
    models_option,
    shortlist_option,
    write_text,
)
from seqgen.errors import SeqgenError


@click.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a recipe value, e.g. --set train.learning_rate=3e-4 (repeatable).",
)
@click.option(
    "--output",
    type=click.Path(file_okay=False),
    default=None,
    help="Run folder for checkpoints and metrics.csv [default: runs/<recipe name>].",
)
@click.option(
    "--resume", is_flag=True, help="Continue the run in --output from its last checkpoint."
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@data_dir_option
def train(
    recipe: str,
    overrides: tuple[str, ...],
    output: str | None,
    resume: bool,
    quiet: bool,
    data_dir: str | None,
) -> None:
    """Train the model described by RECIPE (a TOML file).

    On several GPUs or machines, start it with torchrun (one process per GPU), e.g.
    torchrun --nproc_per_node=4 -m seqgen train RECIPE (docs/scale-out.md).
    """
    if _under_torchrun():
        # PyTorch's C++ logs of the rendezvous (retries, stack frames) would bury seqgen's
        # one-line error of each rank; TORCH_CPP_LOG_LEVEL=WARNING shows them again.
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")
    from seqgen.recipes import load_recipe
    from seqgen.training.run import train as run_training

    loaded = load_recipe(recipe, overrides)
    output_dir = Path(output) if output else Path("runs") / Path(recipe).stem
    result = run_training(
        loaded, output_dir, resume=resume, data_dir=data_dir, show_progress=not quiet
    )
    if _under_torchrun() and os.environ["RANK"] != "0":
        return  # rank 0 reports for the run
    click.echo(result.loop.summary(result.unit))
    best = output_dir / "best.safetensors"
    click.echo(f"trained {result.steps} steps; {result.best()} -> {best}")


def _under_torchrun() -> bool:
    """Whether torchrun (or a launcher like it) started this process as one rank of many."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR"))


@click.command()
@models_option(
    "the bundled Shakespeare model",
    "Translators: repeat it to score an ensemble (as seqgen translate does).",
)
@click.option(
    "--split",
    type=click.Choice(["val", "test"]),
    default=None,
    help="A split of the model's own corpus [default: val].",
)
@click.option(
    "--file",
    "text_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Score this UTF-8 file instead of a split: generators, text; classifiers, labelled "
    "lines laid out as in the recipe's data files (the bundled ones: text<TAB>label).",
)
@click.option(
    "--source",
    "source_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Translators: translate this file ...",
)
@click.option(
    "--reference",
    "reference_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="... and score it against this one.",
)
@click.option("--beam-size", type=int, default=None, help="Translators: 1 is greedy.")
@shortlist_option
@data_dir_option
@device_option
@backend_option
def evaluate(
    model_paths: tuple[str, ...],
    split: str | None,
    text_file: str | None,
    source_file: str | None,
    reference_file: str | None,
    beam_size: int | None,
    shortlist: bool,
    data_dir: str | None,
    device: str,
    backend: str,
) -> None:
    """Score a model on a split of its corpus or your files. Generators: loss, perplexity,
    bits per token/char. Translators: BLEU and chrF (of an ensemble, given --model more than
    once). Classifiers: accuracy, macro F1 and the confusion matrix."""
    from seqgen.loading import load_as_one
    from seqgen.task import task_named

    if split and (text_file or source_file):
        raise SeqgenError("give --split, or --file / --source and --reference, not both")
    pipeline = load_as_one(model_paths, device=device, backend=backend)
    request = EvaluationRequest(
        split, text_file, source_file, reference_file, beam_size, shortlist, data_dir
    )
    for line in task_named(pipeline.task).hook("evaluate")(pipeline, request):
        click.echo(line)


@click.command()
@model_option("the bundled Shakespeare model", bundles=False)
@click.option(
    "--output",
    type=click.Path(file_okay=False),
    required=True,
    help="Bundle folder to write (ONNX graphs, tokenizer, manifest.json).",
)
@click.option("--fp16", is_flag=True, help="Half-precision weights and state, for GPUs.")
@click.option(
    "--int8",
    is_flag=True,
    help="int8 matrix products in the decoding step (and a translator's encoder), for CPUs "
    "(faster; BLEU in the README).",
)
def export(model_path: str | None, output: str, fp16: bool, int8: bool) -> None:
    """Export a generator, translator or classifier to an ONNX bundle that runs without PyTorch."""
    from seqgen.bundles.export import export_bundle
    from seqgen.bundles.reader import bundle_kind
    from seqgen.checkpoints import bundled_model_path
    from seqgen.task import task_named

    written = export_bundle(model_path or bundled_model_path(), output, fp16=fp16, int8=int8)
    command = task_named(bundle_kind(written)).command
    click.echo(f"wrote {written}; run it with: seqgen {command} --model {written}")


@click.command()
@click.option("--quick", is_flag=True, help="A smoke test: small runs, under a minute on a CPU.")
@click.option("--repeats", type=int, default=3, show_default=True, help="Timed runs per figure.")
@click.option(
    "--generator",
    "generator",
    type=click.Path(),
    default=None,
    help="Generator checkpoint [default: the bundled one].",
)
@click.option(
    "--translator",
    "translator",
    type=click.Path(),
    default=None,
    help="Translator checkpoint [default: the bundled one].",
)
@click.option(
    "--classifier",
    "classifier",
    type=click.Path(),
    default=None,
    help="Classifier checkpoint [default: the bundled sentiment model].",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="MODEL.KEY=VALUE",
    help="Override a recipe value, e.g. --set translator.train.batch_tokens=4096 "
    "(MODEL is generator or translator; repeatable).",
)
@click.option(
    "--json",
    "json_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the report here as JSON.",
)
@data_dir_option
@device_option
def bench(
    quick: bool,
    repeats: int,
    generator: str | None,
    translator: str | None,
    classifier: str | None,
    overrides: tuple[str, ...],
    json_file: str | None,
    data_dir: str | None,
    device: str,
) -> None:
    """Measure training and decoding speed on this device; print a table, write JSON."""
    import json

    from seqgen.benchmark import BenchOptions, format_table, run_benchmark

    if repeats < 1:
        raise SeqgenError(f"--repeats must be at least 1, got {repeats}")
    split: dict[str, list[str]] = {"generator": [], "translator": []}
    for item in overrides:
        model, dot, rest = item.partition(".")
        if model not in split or not dot:
            raise SeqgenError(
                f"--set {item!r} must start with generator. or translator. "
                "(e.g. translator.train.batch_tokens=4096)"
            )
        split[model].append(rest)
    options = BenchOptions(
        quick=quick,
        device=device,
        repeats=repeats,
        generator=generator,
        translator=translator,
        classifier=classifier,
        generator_overrides=tuple(split["generator"]),
        translator_overrides=tuple(split["translator"]),
        data_dir=data_dir,
    )
    report = run_benchmark(
        options, on_result=lambda r: click.echo(f"  {r.name}: {r.value:,.1f} {r.unit}", err=True)
    )
    click.echo(format_table(report))
    if json_file:
        write_text(json_file, json.dumps(report, indent=2) + "\n")


def _serve() -> click.Command:
    from seqgen.cli.serve import serve

    return serve


def _plot() -> click.Command:
    from seqgen.cli.plot import plot

    return plot


COMMANDS = (train, evaluate, export, bench, _serve(), _plot())
