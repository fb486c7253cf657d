"""``POST /translate`` (``seqgen serve``): sentences in, translations out.

Body: ``{"text": "..." or ["...", ...], "model": NAME, "beam_size": 5, "n_best": 1, ...}``
(the options of ``seqgen translate``). Answer: ``{"translations": [...]}``, and with
``n_best`` above 1 also ``"n_best": [[{"text", "score"}, ...], ...]``, best first.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from seqgen.cores import available_cores
from seqgen.serving.endpoint import Endpoint, Stream
from seqgen.tasks.translation.pipeline import ScoredTranslation, TranslationOptions, Translator


def translate(
    translator: Translator, texts: list[str], options: TranslationOptions, stream: Stream
) -> list[list[ScoredTranslation]]:
    """Each sentence's n best. On the CPU the batch is split into one part per core, which
    the translator decodes side by side (its sentences are sorted by length first)."""
    settings = asdict(options)
    cores = available_cores() if str(translator.device) == "cpu" else 1
    settings["batch_size"] = min(translator.default_batch_size, math.ceil(len(texts) / cores))
    return translator.translate_n_best(texts, **settings)


def answer(results: list[list[ScoredTranslation]], options: TranslationOptions) -> dict[str, Any]:
    body: dict[str, Any] = {"translations": [best[0].text for best in results]}
    if options.n_best > 1:
        body["n_best"] = [
            [{"text": found.text, "score": round(found.score, 6)} for found in best]
            for best in results
        ]
    return body


ENDPOINT = Endpoint(
    path="/translate",
    input_field="text",
    options_type=TranslationOptions,
    run=translate,
    answer=answer,
)
