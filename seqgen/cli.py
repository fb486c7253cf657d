"""The ``seqgen`` command line: parse, call the Python API, print.

Heavy imports (torch) happen inside the commands, so ``seqgen --help`` is instant. Every
:class:`~seqgen.errors.SeqgenError` and usage error becomes one line on stderr with a
non-zero exit code; no traceback reaches the user.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from seqgen import __version__
from seqgen.errors import SeqgenError

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Mirror folder holding the public corpora (else $SEQGEN_DATA_DIR, else download).",
)
device_option = click.option(
    "--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."
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
    """Train, run and ship recurrent sequence models for text generation."""


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
    best = result.best_validation_loss
    summary = f"best validation loss {best:.4f} " if best is not None else ""
    click.echo(f"trained {result.steps} steps; {summary}-> {output_dir / 'best.safetensors'}")


@main.command()
@click.option(
    "--model",
    "model_path",
    type=click.Path(),
    default=None,
    help="Checkpoint file or run folder [default: the bundled Shakespeare model].",
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
def generate(
    model_path: str | None, prompt: str, stream: bool, device: str, **options: object
) -> None:
    """Continue a prompt with a language model."""
    from seqgen.pipelines import GenerationOptions, load

    generation = GenerationOptions(**options)  # type: ignore[arg-type]
    generation.validate()  # before loading the model: bad flags fail fast
    generator = load(model_path, device=device)
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
    help="Checkpoint file or run folder [default: the bundled Shakespeare model].",
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
    help="Score this UTF-8 text file instead of a split.",
)
@data_dir_option
@device_option
def evaluate(
    model_path: str | None,
    split: str | None,
    text_file: str | None,
    data_dir: str | None,
    device: str,
) -> None:
    """Print loss (nats/token), perplexity and bits per token and character."""
    from seqgen.data.corpora import load_text, read_text_file
    from seqgen.data.splits import pick_split, text_splits
    from seqgen.pipelines import load

    if split and text_file:
        raise SeqgenError("give --split or --file, not both")
    generator = load(model_path, device=device)
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


def run() -> None:
    """Console-script entry point."""
    main()


if __name__ == "__main__":
    run()
