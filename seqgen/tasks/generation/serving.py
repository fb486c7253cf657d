"""``POST /generate`` (``seqgen serve``): prompts in, continued texts out.

Body: ``{"prompt": "..." or ["...", ...], "model": NAME, "max_new_tokens": 200,
"strategy": "sample", "seed": 1, ..., "stream": false}`` (the options of
``seqgen generate``). Answer: ``{"texts": [...]}``, each the prompt and its continuation,
``num_samples`` per prompt, prompt by prompt. With ``"stream": true`` the continuation comes
as server-sent events while it is produced. A generator continues one prompt at a time, so
requests queue for the model rather than share a decode.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from seqgen.serving.endpoint import Endpoint, Stream
from seqgen.tasks.generation.pipeline import GenerationOptions, Generator


def generate(
    generator: Generator, prompts: list[str], options: GenerationOptions, stream: Stream
) -> list[list[str]]:
    """Each prompt's ``num_samples`` texts; ``stream(index, piece)`` gets the pieces."""
    results = []
    for index, prompt in enumerate(prompts):
        on_text = None if stream is None else (lambda piece, i=index: stream(i, piece))
        results.append(generator.generate(prompt, on_text=on_text, **asdict(options)))
    return results


def answer(results: list[list[str]], options: GenerationOptions) -> dict[str, Any]:
    return {"texts": [text for texts in results for text in texts]}


ENDPOINT = Endpoint(
    path="/generate",
    input_field="prompt",
    options_type=GenerationOptions,
    run=generate,
    answer=answer,
    server_options=(),
    streams=True,
    batches=False,
)
