"""The ``seqgen`` command line: parse, call the Python API, print.

Heavy imports (torch) happen inside the commands, so ``seqgen --help`` is instant. Every
:class:`~seqgen.errors.SeqgenError` and usage error becomes one line on stderr with a
non-zero exit code; no traceback reaches the user.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import click

from seqgen import __version__
from seqgen.errors import SeqgenError
from seqgen.memory import keep_freed_memory

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Mirror folder holding the public corpora (else $SEQGEN_DATA_DIR, else download).",
)
device_option = click.option(
    "--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."
)
backend_option = click.option(
    "--backend",
    type=click.Choice(["auto", "torch", "onnx"]),
    default="auto",
    show_default=True,
    help="torch, or onnx (ONNX Runtime; a checkpoint is exported once into the cache). "
    "auto: onnx for a bundle folder, torch for a checkpoint.",
)
shortlist_option = click.option(
    "--shortlist/--no-shortlist",
    default=True,
    show_default=True,
    help="Translators with a lexical shortlist: score only the tokens it allows (faster).",
)


# click >= 8.2 reports a bare ``seqgen`` as this usage error whose message is the whole help.
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class SeqgenGroup(click.Group):
    """A click group whose errors are one line on stderr, never a traceback."""

    def main(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.WARNING, format="seqgen: %(levelname)s: %(message)s")
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)  # type: ignore[arg-type]
        except _NO_ARGS_IS_HELP as error:
            error.show()  # the help text as click prints it, not as an "error: Usage: ..." line
            sys.exit(error.exit_code)
        except click.ClickException as error:
            click.echo(f"seqgen: error: {error.format_message()}", err=True)
            sys.exit(error.exit_code)
        except SeqgenError as error:
            click.echo(f"seqgen: error: {error}", err=True)
            sys.exit(1)
        except (click.Abort, KeyboardInterrupt):
            click.echo("seqgen: interrupted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=SeqgenGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="seqgen")
def main() -> None:
    """Train, run and ship recurrent sequence models for text generation and translation."""


@main.command()
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
    """Train the model described by RECIPE (a TOML file)."""
    from seqgen.config import load_recipe
    from seqgen.training.loop import train as run_training

    loaded = load_recipe(recipe, overrides)
    output_dir = Path(output) if output else Path("runs") / Path(recipe).stem
    result = run_training(
        loaded, output_dir, resume=resume, data_dir=data_dir, show_progress=not quiet
    )
    if hasattr(result, "best_bleu"):
        summary, unit = f"best validation BLEU {result.best_bleu:.2f} ", "pieces"
    else:
        best = result.best_validation_loss
        summary = f"best validation loss {best:.4f} " if best is not None else ""
        unit = "tokens"
    click.echo(result.loop.summary(unit))
    click.echo(f"trained {result.steps} steps; {summary}-> {output_dir / 'best.safetensors'}")


@main.command()
@click.option(
    "--model",
    "model_path",
    type=click.Path(),
    default=None,
    help="Checkpoint, run folder or ONNX bundle [default: the bundled Shakespeare model].",
)
@click.option("--prompt", default="", help="Text to continue; empty starts from the start token.")
@click.option("--max-new-tokens", type=int, default=300, show_default=True)
@click.option(
    "--strategy",
    type=click.Choice(["greedy", "sample", "beam"]),
    default="sample",
    show_default=True,
)
@click.option(
    "--temperature",
    type=float,
    default=0.8,
    show_default=True,
    help="Sampling temperature; 0 is greedy.",
)
@click.option(
    "--top-k", type=int, default=0, show_default=True, help="Sample from the k best; 0 = all."
)
@click.option("--top-p", type=float, default=1.0, show_default=True, help="Nucleus sampling mass.")
@click.option("--beam-size", type=int, default=5, show_default=True)
@click.option(
    "--num-samples",
    type=int,
    default=1,
    show_default=True,
    help="Independent samples (or the n best beams).",
)
@click.option("--seed", type=int, default=None, help="Make sampling repeatable.")
@click.option("--stream", is_flag=True, help="Print each token as it is produced.")
@device_option
@backend_option
def generate(
    model_path: str | None,
    prompt: str,
    stream: bool,
    device: str,
    backend: str,
    **options: object,
) -> None:
    """Continue a prompt with a language model."""
    from seqgen.generation import GenerationOptions
    from seqgen.loading import load

    generation = GenerationOptions(**options)  # type: ignore[arg-type]
    generation.validate()  # before loading the model: bad flags fail fast
    generator = load(model_path, kind="language_model", device=device, backend=backend)
    if stream and generation.num_samples == 1 and generation.strategy != "beam":
        click.echo(prompt, nl=False)
        generator.generate(prompt, generation, on_text=lambda text: click.echo(text, nl=False))
        click.echo()
        return
    for index, text in enumerate(generator.generate(prompt, generation)):
        if generation.num_samples > 1:
            click.echo(f"--- sample {index + 1}")
        click.echo(text)


@main.command()
@click.option(
    "--model",
    "model_path",
    type=click.Path(),
    default=None,
    help="Checkpoint file, run folder or ONNX bundle folder [default: the bundled translator].",
)
@click.option(
    "--input",
    "input_file",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    help="UTF-8 sentences, one per line [default: stdin].",
)
@click.option(
    "--output",
    "output_file",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    help="Where translations go, one per line, written atomically [default: stdout].",
)
@click.option("--beam-size", type=int, default=None, help="1 is greedy [default: the model's].")
@click.option(
    "--n-best",
    type=int,
    default=1,
    show_default=True,
    help="Print the n best as 'line ||| translation ||| score'.",
)
@click.option(
    "--batch-size",
    type=int,
    default=None,
    help="Sentences decoded together [default: the model's; at least 1,000 on CUDA].",
)
@click.option("--max-length", type=int, default=None, help="At most this many target pieces.")
@click.option(
    "--timing", is_flag=True, help="Report the model's load time and the decoding speed on stderr."
)
@shortlist_option
@device_option
@backend_option
def translate(
    model_path: str | None,
    input_file: str,
    output_file: str,
    n_best: int,
    timing: bool,
    device: str,
    backend: str,
    **options: int | bool | None,
) -> None:
    """Translate sentences, one per line, keeping line alignment."""
    from seqgen.loading import load
    from seqgen.translation import TranslationOptions

    settings = TranslationOptions(n_best=n_best, **options)
    settings.validate()  # before loading the model: bad flags fail fast
    started = time.perf_counter()
    translator = load(model_path, kind="translation", device=device, backend=backend)
    loaded = time.perf_counter()
    lines = _read_lines(input_file)
    results = translator.translate_n_best(lines, n_best=n_best, **options)
    if timing:
        seconds = time.perf_counter() - loaded
        click.echo(
            f"model loaded in {loaded - started:.3f} s; decode: {seconds:.3f} s for "
            f"{len(lines)} lines ({len(lines) / max(seconds, 1e-9):.1f} sentences/s)",
            err=True,
        )
    if n_best == 1:
        text = "".join(f"{best[0].text}\n" for best in results)
    else:
        text = "".join(
            f"{index} ||| {hypothesis.text} ||| {hypothesis.score:.4f}\n"
            for index, hypotheses in enumerate(results)
            for hypothesis in hypotheses
        )
    _write_text(output_file, text)


@main.command()
@click.option(
    "--model",
    "model_path",
    type=click.Path(),
    default=None,
    help="Checkpoint file or run folder [default: the bundled Shakespeare model].",
)
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
    help="int8 matrix products in the decoding step, for CPUs (faster; BLEU in the README).",
)
def export(model_path: str | None, output: str, fp16: bool, int8: bool) -> None:
    """Export a generator or translator to an ONNX bundle that runs without PyTorch."""
    from seqgen.bundle import bundle_kind
    from seqgen.onnx_export import export_bundle
    from seqgen.pipelines import bundled_model_path

    written = export_bundle(model_path or bundled_model_path(), output, fp16=fp16, int8=int8)
    command = "translate" if bundle_kind(written) == "translation" else "generate"
    click.echo(f"wrote {written}; run it with: seqgen {command} --model {written}")


def _read_lines(path: str) -> list[str]:
    """Lines of a UTF-8 file or stdin (``-``), without their line endings."""
    from seqgen.errors import DataError

    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            data = Path(path).read_bytes()
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise DataError(f"no such file: {path}") from None
    except UnicodeDecodeError as error:
        name = "standard input" if path == "-" else path
        raise DataError(
            f"{name} is not UTF-8 (byte {error.start}); convert it, e.g. with iconv"
        ) from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _write_text(path: str, text: str) -> None:
    if path == "-":
        click.echo(text, nl=False)
        return
    from seqgen.errors import DataError
    from seqgen.files import atomic_write

    try:
        atomic_write(
            Path(path), lambda temporary: Path(temporary).write_text(text, encoding="utf-8")
        )
    except OSError as error:  # a parent that is a file, no permission, a full disk, ...
        raise DataError(f"cannot write {path} ({error.strerror or error})") from None


@main.command()
@click.option(
    "--model",
    "model_path",
    type=click.Path(),
    default=None,
    help="Checkpoint, run folder or ONNX bundle [default: the bundled Shakespeare model].",
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
    help="Generators: score this UTF-8 text file instead of a split.",
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
    model_path: str | None,
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
    """Generators: loss, perplexity, bits per token/char. Translators: BLEU and chrF."""
    from seqgen.loading import load

    if split and (text_file or source_file):
        raise SeqgenError("give --split, or --file / --source and --reference, not both")
    pipeline = load(model_path, device=device, backend=backend)
    if pipeline.kind == "translation":
        if text_file:
            raise SeqgenError(
                "--file scores a generator; a translator takes --source and --reference"
            )
        _evaluate_translator(
            pipeline, split, source_file, reference_file, beam_size, shortlist, data_dir
        )
        return
    if source_file or reference_file:
        raise SeqgenError("--source/--reference score a translator; a generator takes --file")
    if not hasattr(pipeline, "evaluate"):
        raise SeqgenError(
            "scoring a generator needs PyTorch: evaluate the checkpoint it was exported from"
        )
    _evaluate_generator(pipeline, split, text_file, data_dir)


def _evaluate_generator(
    generator, split: str | None, text_file: str | None, data_dir: str | None
) -> None:
    from seqgen.data.corpora import load_text, read_text_file
    from seqgen.data.splits import pick_split, text_splits

    if text_file:
        text, source = read_text_file(text_file), text_file
    else:
        split = split or "val"
        data = generator.recipe.data
        text = pick_split(text_splits(load_text(data.corpus, data_dir=data_dir), data), split)
        source = f"{data.corpus}:{split}"
    scores = generator.evaluate(text)
    click.echo(
        f"{source}: loss {scores.loss:.4f} nats/token | perplexity {scores.perplexity:.3f} | "
        f"{scores.bits_per_token:.4f} bits/token | {scores.bits_per_character:.4f} bits/char | "
        f"{scores.tokens} tokens"
    )


def _evaluate_translator(
    translator,
    split: str | None,
    source_file: str | None,
    reference_file: str | None,
    beam_size: int | None,
    shortlist: bool,
    data_dir: str | None,
) -> None:
    import time

    from seqgen.data.corpora import load_parallel, read_parallel_files
    from seqgen.evaluation.bleu import corpus_bleu, corpus_chrf

    if source_file or reference_file:
        if not (source_file and reference_file):
            raise SeqgenError("give both --source and --reference")
        sources, references = read_parallel_files(source_file, reference_file)
        name = source_file
    else:
        data = translator.recipe.data
        split = split or "val"
        if not data.corpus:
            raise SeqgenError(
                "this model was trained on files; evaluate it with --source and --reference"
            )
        corpus_split = {"val": "val", "test": "test_2016_flickr"}[split]
        sources, references = load_parallel(data.corpus, corpus_split, data_dir=data_dir)
        name = f"{data.corpus}:{corpus_split}"
    started = time.perf_counter()
    hypotheses = translator.translate(sources, beam_size=beam_size, shortlist=shortlist)
    seconds = time.perf_counter() - started
    beam = beam_size or translator.recipe.decoding.beam_size
    click.echo(
        f"{name}: {len(sources)} sentences, beam {beam}, "
        f"{seconds:.1f} s ({len(sources) / seconds:.0f} sentences/s)"
    )
    click.echo(str(corpus_bleu(hypotheses, references)))
    click.echo(str(corpus_chrf(hypotheses, references)))


@main.command()
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
        generator_overrides=tuple(split["generator"]),
        translator_overrides=tuple(split["translator"]),
        data_dir=data_dir,
    )
    report = run_benchmark(
        options, on_result=lambda r: click.echo(f"  {r.name}: {r.value:,.1f} {r.unit}", err=True)
    )
    click.echo(format_table(report))
    if json_file:
        _write_text(json_file, json.dumps(report, indent=2) + "\n")


def run() -> None:
    """Console-script entry point. The command owns its process, so malloc may keep what
    it frees (:mod:`seqgen.memory`); a program that imports seqgen keeps its own settings."""
    keep_freed_memory()
    main()


if __name__ == "__main__":
    run()
