"""The classifier's command line: ``seqgen classify``, and what ``seqgen evaluate`` prints.

Flags default to "not given" (None): the model's stored defaults fill them, then the
library's (``seqgen.decoding.options``). Heavy imports happen inside the functions.
"""

from __future__ import annotations

import json
from typing import Any

import click

from seqgen.cli.common import (
    EvaluationRequest,
    backend_option,
    device_option,
    lines_options,
    model_option,
    read_lines,
    write_text,
)
from seqgen.errors import SeqgenError

_DEFAULT = "[default: the model's]"


@click.command()
@model_option("the bundled sentiment model; or sentiment, spam")
@lines_options("texts")
@click.option("--top-k", type=int, default=None, help=f"Classes per text, best first {_DEFAULT}.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["tsv", "jsonl"]),
    default="tsv",
    show_default=True,
    help="tsv: label<TAB>probability (then the next best); jsonl: every class's probability.",
)
@click.option("--batch-size", type=int, default=None, help=f"Texts scored together {_DEFAULT}.")
@device_option
@backend_option
def classify(
    model_path: str | None,
    input_file: str,
    output_file: str,
    output_format: str,
    device: str,
    backend: str,
    **given: Any,
) -> None:
    """Name the class of each line's text (sentiment, spam, or your model's classes)."""
    from seqgen.decoding.options import check_each
    from seqgen.loading import load
    from seqgen.tasks.classification.pipeline import ClassificationOptions

    check_each(ClassificationOptions, given)  # bad flags fail before a model is loaded
    classifier = load(model_path, kind="classification", device=device, backend=backend)
    lines = read_lines(input_file)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise SeqgenError(f"line {number} of the input is empty; give one text per line")
    if output_format == "jsonl":
        options = classifier.options(**given)
        probabilities = classifier.probabilities(lines, batch_size=options.batch_size)
        text = "".join(_json_line(classifier.labels, row) + "\n" for row in probabilities)
    else:
        results = classifier.classify(lines, **given)
        text = "".join(
            "\t".join(f"{label}\t{probability:.4f}" for label, probability in best) + "\n"
            for best in results
        )
    write_text(output_file, text)


def _json_line(labels: list[str], probabilities: Any) -> str:
    best = int(probabilities.argmax())
    every = {label: round(float(p), 6) for label, p in zip(labels, probabilities, strict=True)}
    record = {"label": labels[best], "probability": every[labels[best]], "probabilities": every}
    return json.dumps(record, ensure_ascii=False)


def evaluate(classifier: Any, request: EvaluationRequest) -> list[str]:
    """Accuracy, per-class precision/recall/F1, macro-F1 and the confusion matrix of a split
    of the model's corpus or of ``--file`` (labelled; the registry's ``evaluate`` hook)."""
    from seqgen.data.labelled import read_labelled_file
    from seqgen.tasks.classification.evaluation import score_predictions
    from seqgen.tasks.classification.examples import label_ids, load_examples

    if request.source_file or request.reference_file:
        raise SeqgenError("--source/--reference score a translator; a classifier takes --file")
    data = classifier.recipe.data
    if request.text_file:
        texts, labels = read_labelled_file(
            request.text_file,
            text_column=data.text_column,
            label_column=data.label_column,
            delimiter=data.delimiter or None,
            header=data.header,
        )
        name = request.text_file
    else:
        split = request.split or "val"
        texts, labels = load_examples(classifier.recipe, split, data_dir=request.data_dir)
        name = f"{data.corpus or 'the recipe files'}:{split}"
    targets = label_ids(labels, classifier.labels, name)
    predicted = classifier.probabilities(texts).argmax(axis=1)
    return [f"{name}:", *score_predictions(classifier.labels, targets, predicted).report()]
