"""A translator's narrowed step on CUDA graphs (:mod:`seqgen.decoding.cuda_graphs`).

The step's inputs are the translator's state (recurrent state, and the source side once per
sentence), the gate table and the shortlist's output layer rows and per-sentence columns and
mask; the source side, the shortlist and the output layer change only when a sentence leaves
the batch or a new batch starts, which is what ``StepGraphs`` copies in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from seqgen.decoding.cuda_graphs import Run, StepGraphs, StepTensors
from seqgen.tasks.translation.decoder import OutputRows
from seqgen.tasks.translation.model import (
    EncoderDecoder,
    sentence_logits,
    sentence_token_ids,
)
from seqgen.tasks.translation.source_rows import (
    EMBEDDING_GATES,
    OUTPUT_COLUMNS,
    OUTPUT_IDS,
    OUTPUT_LAYER,
    OUTPUT_MASK,
    PER_SENTENCE,
    SHORTLIST_NAMES,
    SOURCE_NAMES,
)

TopLogProbsOf = Callable[..., tuple[torch.Tensor, torch.Tensor]]
"""``(rows, width)`` logits, ``k`` and ``masked=`` (some logits -inf) -> the ``k`` best
log-probs and their columns (``seqgen.decoding.torch_step.top_log_probs``)."""


class TranslatorGraphs:
    """A translator's narrowed step (``TranslatorStep``) on :class:`StepGraphs`, one set per
    number of candidates; ``top_log_probs`` is the adapter's own top-k, so a graphed step
    computes what the plain one does."""

    def __init__(self, model: EncoderDecoder, top_log_probs: TopLogProbsOf) -> None:
        self.model, self.top_log_probs = model, top_log_probs
        self.names = model.state_names
        self.by_candidates: dict[int, StepGraphs] = {}

    @property
    def graph_count(self) -> int:
        """Graphs kept, over every number of candidates and shape."""
        return sum(graphs.graph_count for graphs in self.by_candidates.values())

    def step(
        self, token_ids: torch.Tensor, state: Mapping[str, Any], candidates: int
    ) -> tuple[torch.Tensor, torch.Tensor, StepTensors]:
        """``(rows,)`` tokens on the device and a translator state -> the ``candidates``
        best log-probs and their token ids ``(rows, candidates)``, and the new recurrent
        state."""
        inputs = {"tokens": token_ids, **{name: state[name] for name in self.names}}
        if state.get(OUTPUT_MASK) is not None:
            inputs.update((name, state[name]) for name in SHORTLIST_NAMES)
        if state.get(EMBEDDING_GATES) is not None:
            inputs["embedding_gates"] = state[EMBEDDING_GATES]
        output = state.get(OUTPUT_LAYER)
        if output is not None:
            inputs.update(output_weight=output.weight, output_ids=state[OUTPUT_IDS])
            if output.bias is not None:
                inputs["output_bias"] = output.bias
        graphs = self.by_candidates.get(candidates)
        if graphs is None:
            graphs = self.by_candidates[candidates] = StepGraphs(
                self._run(candidates),
                per_row=("tokens", *(name for name in self.names if name not in SOURCE_NAMES)),
                per_sentence=PER_SENTENCE,
                recurrent=tuple(name for name in self.names if name not in SOURCE_NAMES),
                capture=token_ids.device.type == "cuda",
            )
        return graphs.step(inputs)

    def _run(self, candidates: int) -> Run:
        """The step on the graph's inputs (no host synchronisation in it)."""

        def run(inputs: StepTensors) -> tuple[torch.Tensor, torch.Tensor, StepTensors]:
            output = None
            if "output_weight" in inputs:
                output = OutputRows(inputs["output_weight"], inputs.get("output_bias"))
            state = {name: inputs[name] for name in self.names}
            logits, new_state = self.model.step(
                inputs["tokens"], state, output, inputs.get("embedding_gates")
            )
            logits, masked = logits.float(), OUTPUT_MASK in inputs
            if masked:  # each row to its own sentence's shortlist
                columns = inputs[OUTPUT_COLUMNS]
                logits = sentence_logits(logits, columns, inputs[OUTPUT_MASK])
            values, token_ids = self.top_log_probs(logits, candidates, masked=masked)
            if masked:
                token_ids = sentence_token_ids(inputs["output_ids"], columns, token_ids)
            recurrent = {n: new_state[n] for n in self.names if n not in SOURCE_NAMES}
            return values, token_ids, recurrent

        return run
