"""The generator's command line: ``seqgen generate``, and what ``seqgen evaluate`` prints.

Flags default to "not given" (None): the model's stored decoding defaults fill them, then the
library's (``seqgen.decoding.options``). Heavy imports happen inside the functions.
"""

from __future__ import annotations

from typing import Any

import click

from seqgen.cli.common import EvaluationRequest, backend_option, device_option, model_option
from seqgen.errors import SeqgenError

_DEFAULT = "[default: the model's]"


@click.command()
@model_option("the bundled Shakespeare model")
@click.option("--prompt", default="", help="Text to continue; empty starts from the start token.")
@click.option("--max-new-tokens", type=int, default=None, help=f"Tokens to add {_DEFAULT}.")
@click.option(
    "--strategy", type=click.Choice(["greedy", "sample", "beam"]), default=None, help=_DEFAULT
)
@click.option("--temperature", type=float, default=None, help=f"0 is greedy {_DEFAULT}.")
@click.option(
    "--top-k", type=int, default=None, help=f"Sample from the k best; 0 = all {_DEFAULT}."
)
@click.option("--top-p", type=float, default=None, help=f"Nucleus sampling mass {_DEFAULT}.")
@click.option("--beam-size", type=int, default=None, help=_DEFAULT)
@click.option(
    "--num-samples", type=int, default=None, help=f"Samples, or the n best beams {_DEFAULT}."
)
@click.option("--length-penalty", type=float, default=None, help=f"Beam: GNMT alpha {_DEFAULT}.")
@click.option(
    "--no-repeat-ngram-size", type=int, default=None, help=f"Ban repeated n-grams {_DEFAULT}."
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
    **given: Any,
) -> None:
    """Continue a prompt with a language model."""
    from seqgen.decoding.options import check_each
    from seqgen.loading import load
    from seqgen.tasks.generation.pipeline import GenerationOptions

    check_each(GenerationOptions, given)  # bad flags fail before a model is loaded
    generator = load(model_path, kind="generation", device=device, backend=backend)
    options = generator.options(**given)
    if stream and options.num_samples == 1 and options.strategy != "beam":
        click.echo(prompt, nl=False)
        generator.generate(prompt, on_text=lambda text: click.echo(text, nl=False), **given)
        click.echo()
        return
    for index, text in enumerate(generator.generate(prompt, **given)):
        if options.num_samples > 1:
            click.echo(f"--- sample {index + 1}")
        click.echo(text)


def evaluate(generator: Any, request: EvaluationRequest) -> list[str]:
    """Loss, perplexity and bits per token and character of a split of the model's corpus or
    of ``--file`` (the registry's ``evaluate`` hook)."""
    from seqgen.data.corpora import load_text, read_text_file
    from seqgen.data.splits import pick_split, text_splits

    if request.source_file or request.reference_file:
        raise SeqgenError("--source/--reference score a translator; a generator takes --file")
    if request.text_file:
        text, source = read_text_file(request.text_file), request.text_file
    else:
        if generator.recipe is None:
            raise SeqgenError(
                "scoring a generator needs PyTorch: evaluate the checkpoint it was exported from"
            )
        split = request.split or "val"
        data = generator.recipe.data
        corpus = load_text(data.corpus, data_dir=request.data_dir)
        text, source = pick_split(text_splits(corpus, data), split), f"{data.corpus}:{split}"
    scores = generator.evaluate(text)
    return [
        f"{source}: loss {scores.loss:.4f} nats/token | perplexity {scores.perplexity:.3f} | "
        f"{scores.bits_per_token:.4f} bits/token | {scores.bits_per_character:.4f} bits/char | "
        f"{scores.tokens} tokens"
    ]
