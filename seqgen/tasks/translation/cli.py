"""The translator's command line: ``seqgen translate``, and what ``seqgen evaluate`` prints.

Flags default to "not given" (None): the model's stored decoding defaults fill them, then the
library's (``seqgen.decoding.options``). Heavy imports happen inside the functions.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from seqgen.cli.common import (
    EvaluationRequest,
    backend_option,
    device_option,
    lines_options,
    models_option,
    read_lines,
    shortlist_option,
    write_text,
)
from seqgen.errors import SeqgenError

_DEFAULT = "[default: the model's]"


@click.command()
@models_option(
    "the bundled translator",
    "Repeat it to decode with an ensemble: the mean of the models' log-probabilities at every "
    "step (they must share the target vocabulary; decoding defaults are the first model's).",
)
@lines_options("sentences")
@click.option("--beam-size", type=int, default=None, help=f"1 is greedy {_DEFAULT}.")
@click.option(
    "--n-best",
    type=int,
    default=None,
    help="Print the n best as 'line ||| translation ||| score' [default: 1].",
)
@click.option(
    "--batch-size",
    type=int,
    default=None,
    help="Sentences decoded together [default: the model's; at least 1,000 on CUDA].",
)
@click.option("--length-penalty", type=float, default=None, help=f"GNMT alpha {_DEFAULT}.")
@click.option(
    "--no-repeat-ngram-size", type=int, default=None, help=f"Ban repeated n-grams {_DEFAULT}."
)
@click.option(
    "--min-length", type=int, default=None, help=f"At least this many target pieces {_DEFAULT}."
)
@click.option(
    "--max-length", type=int, default=None, help=f"At most this many target pieces {_DEFAULT}."
)
@click.option(
    "--timing", is_flag=True, help="Report the model's load time and the decoding speed on stderr."
)
@click.option(
    "--attention-plot",
    type=click.Path(),
    default=None,
    help="Draw each translation's attention as a PNG heatmap: FILE.png for one line, else a "
    "folder of line-0001.png, ... (n-best: line-0001-2.png for the second).",
)
@shortlist_option
@device_option
@backend_option
def translate(
    model_paths: tuple[str, ...],
    input_file: str,
    output_file: str,
    timing: bool,
    attention_plot: str | None,
    device: str,
    backend: str,
    **given: Any,
) -> None:
    """Translate sentences, one per line, keeping line alignment."""
    from seqgen.decoding.options import check_each
    from seqgen.tasks.translation.ensemble import load_ensemble
    from seqgen.tasks.translation.pipeline import TranslationOptions

    check_each(TranslationOptions, given)  # bad flags fail before a model is loaded
    if attention_plot and len(model_paths) > 1:
        raise SeqgenError("--attention-plot draws one model's attention; give one --model with it")
    if attention_plot:
        from seqgen.plotting.curves import matplotlib_pyplot

        matplotlib_pyplot()  # a missing extra fails before a model is loaded
    started = time.perf_counter()
    translator = load_ensemble(model_paths, device=device, backend=backend)
    loaded = time.perf_counter()
    lines = read_lines(input_file)
    results = translator.translate_n_best(lines, **given)
    if timing:
        seconds = time.perf_counter() - loaded
        click.echo(
            f"model loaded in {loaded - started:.3f} s; decode: {seconds:.3f} s for "
            f"{len(lines)} lines ({len(lines) / max(seconds, 1e-9):.1f} sentences/s)",
            err=True,
        )
    if (given["n_best"] or 1) == 1:
        text = "".join(f"{best[0].text}\n" for best in results)
    else:
        text = "".join(
            f"{index} ||| {hypothesis.text} ||| {hypothesis.score:.4f}\n"
            for index, hypotheses in enumerate(results)
            for hypothesis in hypotheses
        )
    write_text(output_file, text)
    if attention_plot:
        for line, target in draw_attention(translator, lines, results, Path(attention_plot)):
            click.echo(f"attention of line {line} -> {target}", err=True)


def draw_attention(translator: Any, lines: list[str], results: list, path: Path):
    """Draw every translation's attention map; yields (line number, file). ``path`` is the
    file for a single translation named ``*.png``, else a folder of one file per translation."""
    from seqgen.plotting.attention import plot_attention

    drawn = [(n, s, found) for n, (s, found) in enumerate(zip(lines, results, strict=True), 1)]
    drawn = [(n, s, found) for n, s, found in drawn if s.strip()]
    single = len(drawn) == 1 and len(drawn[0][2]) == 1 and path.suffix.lower() == ".png"
    for number, sentence, hypotheses in drawn:
        for rank, hypothesis in enumerate(hypotheses, 1):
            suffix = "" if len(hypotheses) == 1 else f"-{rank}"
            target = path if single else path / f"line-{number:04d}{suffix}.png"
            found = translator.attention(sentence, hypothesis)
            title = f"{sentence}\n-> {hypothesis.text}"
            plot_attention(
                found.weights, found.source_pieces, found.target_pieces, target, title=title
            )
            yield number, target


def evaluate(translator: Any, request: EvaluationRequest) -> list[str]:
    """BLEU and chrF, with sacreBLEU's signatures, of the model's corpus split or of
    ``--source`` against ``--reference`` (the registry's ``evaluate`` hook)."""
    from seqgen.tasks.translation.bleu import corpus_bleu, corpus_chrf

    if request.text_file:
        raise SeqgenError(
            "--file scores a generator or a classifier; a translator takes --source and --reference"
        )
    sources, references, name = _evaluation_pairs(translator, request)
    options = translator.options(beam_size=request.beam_size, shortlist=request.shortlist)
    started = time.perf_counter()
    hypotheses = translator.translate(
        sources, beam_size=request.beam_size, shortlist=request.shortlist
    )
    seconds = time.perf_counter() - started
    return [
        f"{name}: {len(sources)} sentences, beam {options.beam_size}, "
        f"{seconds:.1f} s ({len(sources) / seconds:.0f} sentences/s)",
        str(corpus_bleu(hypotheses, references)),
        str(corpus_chrf(hypotheses, references)),
    ]


def _evaluation_pairs(
    translator: Any, request: EvaluationRequest
) -> tuple[list[str], list[str], str]:
    """The sources, references and a name for them: the files, or the corpus split."""
    from seqgen.data.corpora import load_parallel, read_parallel_files

    if request.source_file or request.reference_file:
        if not (request.source_file and request.reference_file):
            raise SeqgenError("give both --source and --reference")
        sources, references = read_parallel_files(request.source_file, request.reference_file)
        return sources, references, request.source_file
    data = translator.recipe.data
    if not data.corpus:
        raise SeqgenError(
            "this model was trained on files; evaluate it with --source and --reference"
        )
    corpus_split = {"val": "val", "test": "test_2016_flickr"}[request.split or "val"]
    sources, references = load_parallel(data.corpus, corpus_split, data_dir=request.data_dir)
    return sources, references, f"{data.corpus}:{corpus_split}"
