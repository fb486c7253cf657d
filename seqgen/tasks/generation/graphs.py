"""A generator's graphs, tokenizer and manifest entries in a bundle (``write_bundle`` hook).

The graphs are exactly the callables the PyTorch adapter (``LanguageModelStep``) calls:
``prime`` is ``start``'s ``model(token_ids, state)`` for one group of equal-length prompts,
and ``step`` is ``step``'s ``model(tokens[:, None], state)`` followed by the log-softmax;
``select`` gathers rows of the state. Inputs are named after the state keys and outputs
``new_<key>``; rows and the prompt's time axis are dynamic.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seqgen.bundles.export import (
    EXAMPLE_ROWS,
    EXAMPLE_TIME,
    PARITY_TOLERANCE,
    GraphSpec,
    export_graph,
    select_spec,
    special_ids,
    with_top_candidates,
)
from seqgen.decoding.onnx_session import NEW_PREFIX, STEP_OUTPUTS
from seqgen.errors import SeqgenError
from seqgen.tasks.generation import GRAPH_FILES, TOKENIZER_FILE
from seqgen.tasks.generation.config import GenerationDecodingConfig
from seqgen.tasks.generation.model import LanguageModel
from seqgen.tasks.generation.onnx_step import OnnxLanguageModelStep
from seqgen.tasks.generation.pipeline import Generator, banned_token_ids


class PrimeGraph(nn.Module):
    """``token_ids`` ``(rows, time)`` int64 + state -> the state after them."""

    def __init__(self, model: LanguageModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, token_ids: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        names = self.model.state_names
        _, new_state = self.model(token_ids, dict(zip(names, state, strict=True)))
        return tuple(new_state[name] for name in names)


class StepGraph(nn.Module):
    """``tokens`` ``(rows,)`` int64 + state -> ``log_probs`` ``(rows, vocab)`` float32, the top
    candidates (:func:`with_top_candidates`) and the new state."""

    def __init__(self, model: LanguageModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        names = self.model.state_names
        logits, new_state = self.model(tokens.unsqueeze(1), dict(zip(names, state, strict=True)))
        # As LanguageModelStep.step: log-softmax in float32, also for a float16 model.
        log_probs = torch.log_softmax(logits[:, 0].float(), dim=-1)
        return (*with_top_candidates(log_probs), *(new_state[name] for name in names))


def write_bundle(
    generator: Generator, model: LanguageModel, staging: Path, *, fp16: bool, int8: bool = False
) -> dict[str, Any]:
    """Write a generator's graphs and tokenizer into ``staging``; returns its manifest."""
    files = GRAPH_FILES
    dtype = next(model.parameters()).dtype
    rows = EXAMPLE_ROWS
    state = {
        name: torch.zeros(rows, model.config.num_layers, model.config.hidden_size, dtype=dtype)
        for name in model.state_names
    }
    state_axes = {name: {0: "rows"} for name in model.state_names}
    new_state = [NEW_PREFIX + name for name in model.state_names]
    specs = {
        "prime": GraphSpec(
            PrimeGraph(model),
            {"token_ids": torch.zeros(rows, EXAMPLE_TIME, dtype=torch.long), **state},
            new_state,
            {"token_ids": {0: "rows", 1: "time"}, **state_axes},
            {name: ["rows"] for name in new_state},
        ),
        "step": GraphSpec(
            StepGraph(model),
            {"tokens": torch.zeros(rows, dtype=torch.long), **state},
            [*STEP_OUTPUTS, *new_state],
            {"tokens": {0: "rows"}, **state_axes},
            {name: ["rows"] for name in [*STEP_OUTPUTS, *new_state]},
        ),
        "select": select_spec(state, state_axes),
    }
    graphs = {name: export_graph(spec, staging / files[name]) for name, spec in specs.items()}
    if not fp16:
        check_parity(generator.model, staging)
    tokenizer = generator.tokenizer
    (staging / TOKENIZER_FILE).write_text(json.dumps(tokenizer.to_dict()), encoding="utf-8")
    config = model.config
    return {
        "model": {
            "cell": config.cell,
            "num_layers": config.num_layers,
            "hidden_size": config.hidden_size,
            "vocab_size": model.vocab_size,
        },
        "state": {
            "names": list(model.state_names),
            "shape": ["rows", config.num_layers, config.hidden_size],
            "dtype": "float16" if fp16 else "float32",
        },
        "graphs": {name: {"file": files[name], **described} for name, described in graphs.items()},
        "tokenizer": {"file": TOKENIZER_FILE, "kind": tokenizer.kind},
        "special_ids": special_ids(tokenizer),
        "generation": {
            "defaults": asdict(GenerationDecodingConfig(**generator.defaults)),
            "prompt_starts_with": "bos",
            "banned_token_ids": list(banned_token_ids(tokenizer)),
            "eos_id": None,  # generated text ends at max_new_tokens, never at EOS
        },
        "training_info": generator.info,
    }


def check_parity(model: LanguageModel, folder: Path) -> None:
    """Run both graphs on two shapes and compare with PyTorch; SeqgenError if they disagree.

    The prompt lengths differ from the example's, which catches a frozen time axis that
    the shapes alone would not show.
    """
    onnx_step = OnnxLanguageModelStep.from_files(folder, GRAPH_FILES, device="cpu", threads=1)
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for rows, time in ((1, 1), (EXAMPLE_ROWS + 2, EXAMPLE_TIME + 3)):
        token_ids = torch.randint(0, model.vocab_size, (rows, time), generator=generator)
        with torch.inference_mode():
            _, state = model(token_ids[:, :-1]) if time > 1 else (None, model.initial_state(rows))
            logits, new_state = model(token_ids[:, -1:], state)
            expected = [torch.log_softmax(logits[:, 0], -1), *new_state.values()]
        primed = onnx_step.initial_state(rows)
        if time > 1:
            primed = onnx_step.prime(token_ids[:, :-1].numpy(), primed)
        log_probs, stepped = onnx_step.step(token_ids[:, -1].numpy(), primed)
        for got, want in zip([log_probs, *stepped.values()], expected, strict=True):
            worst = max(worst, float(np.abs(got - want.numpy()).max()))
    if worst > PARITY_TOLERANCE:
        raise SeqgenError(
            f"the exported graphs disagree with PyTorch (max difference {worst:.2g} > "
            f"{PARITY_TOLERANCE}); this torch version's ONNX exporter is not supported"
        )
