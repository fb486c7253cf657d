"""A decoder step replayed from CUDA graphs (PyTorch on CUDA only).

On a GPU a decoding step is bound by the host, not the device: the step's ~50 operators each
cost tens of microseconds of Python and launching, while their kernels keep an H200 busy for
about a tenth of the step (README "Speed on a GPU"). A CUDA graph records the kernels once
and replays them with one launch (as PyTorch's ``torch.cuda.graphs`` documents, and as
vLLM and TensorRT-LLM do for their decoders).

A graph needs fixed shapes and fixed addresses, so each graph owns *static* buffers: the
step's inputs (tokens, recurrent state, source side, the output layer's rows) and its outputs
(the top-k log-probs and token ids, the new recurrent state). Rows only shrink within a batch
(finished sentences leave it), so a step replays the graph of a few more rows than it has: the
first ``rows`` rows of the buffers hold its rows, the rows past those hold stale values whose
results are never read (every operator of the step works row by row), and a smaller graph is
made once the rows have halved. Inputs kept once per sentence (a translator's source side,
the rows grouped ``rows / sentences`` to a sentence) are sliced the same way by sentence, and
a graph serves only steps of its own rows per sentence. The source side and the output layer
are copied in only when they change (a sentence left; a new batch). The graphs of the most
recent shapes are kept, so translating a batch of the same shape again reuses them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

# Shapes whose graphs are kept per step function; a shape's graphs hold buffers of about
# twice its first step's (at 5,000 rows of 40 source pieces the source side alone is about
# 800 MB), so only a few.
MAX_FAMILIES = 2

StepTensors = dict[str, torch.Tensor]
Run = Callable[[StepTensors], tuple[torch.Tensor, torch.Tensor, StepTensors]]
"""The step to capture: static inputs by name -> ``(values, token_ids, new recurrent state)``,
``values`` and ``token_ids`` ``(rows, K)``."""


@dataclass
class _Graph:
    rows: int
    inputs: StepTensors  # static, ``rows`` rows each (the output layer's: as given)
    values: torch.Tensor
    token_ids: torch.Tensor
    state: StepTensors
    replay: Callable[[], None]
    copied: dict[str, torch.Tensor]  # per constant input, the tensor last copied in


class StepGraphs:
    """Runs ``run`` from CUDA graphs, one per shape of its inputs (rows aside).

    Args:
        run: the step on static inputs (see :data:`Run`); it must not synchronise with the
            host (no ``.item()``, no copy to the CPU) and must work row by row.
        per_row: input names whose axis 0 is rows.
        per_sentence: input names whose axis 0 is sentences (the rows grouped ``rows /
            sentences`` to a sentence, sentence-major); every input in neither is constant
            over a batch's steps (the output layer's rows and ids).
        recurrent: the names among ``per_row`` that every step rewrites; the others (and
            the per-sentence ones) are copied in only when the state holds a different
            tensor.
        capture: False replays by calling ``run`` on the static buffers and copying its
            results into them, with everything else unchanged (tests on a CPU).
    """

    def __init__(
        self,
        run: Run,
        *,
        per_row: tuple[str, ...],
        per_sentence: tuple[str, ...] = (),
        recurrent: tuple[str, ...],
        capture: bool,
    ) -> None:
        self.run, self.per_row, self.per_sentence = run, per_row, per_sentence
        self.capture = capture
        self.every_step = frozenset(("tokens", *recurrent))  # copied in at every step
        # Per shape of the inputs (rows aside), its graphs for different row counts.
        self._families: OrderedDict[tuple, list[_Graph]] = OrderedDict()

    @property
    def graph_count(self) -> int:
        """Graphs kept, over all shapes."""
        return sum(len(family) for family in self._families.values())

    @property
    def shape_count(self) -> int:
        """Input shapes whose graphs are kept."""
        return len(self._families)

    def step(
        self, inputs: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, StepTensors]:
        """``inputs`` by name (per-row ones with ``rows`` rows) -> ``values`` and
        ``token_ids`` ``(rows, K)`` and the new recurrent state, ``rows`` rows each (copies:
        the graph's buffers are rewritten by the next step)."""
        rows = inputs["tokens"].shape[0]
        sentences = next(
            (inputs[name].shape[0] for name in self.per_sentence if name in inputs), rows
        )
        graph = self._graph_for(inputs, rows, rows // max(sentences, 1))
        for name, tensor in inputs.items():
            if name in self.every_step:
                graph.inputs[name][:rows].copy_(tensor, non_blocking=True)
            elif graph.copied.get(name) is not tensor:
                target = graph.inputs[name]
                if name in self.per_row or name in self.per_sentence:
                    target = target[: rows if name in self.per_row else sentences]
                target.copy_(tensor, non_blocking=True)
                graph.copied[name] = tensor
        graph.replay()
        state = {name: tensor[:rows].clone() for name, tensor in graph.state.items()}
        return graph.values[:rows], graph.token_ids[:rows], state

    def _graph_for(
        self, inputs: Mapping[str, torch.Tensor], rows: int, rows_per_sentence: int
    ) -> _Graph:
        """The graph for ``rows`` rows of inputs of these shapes (and rows per sentence): of
        those made for the shapes, the smallest that fits, unless it has more than twice the
        rows (finished sentences have left the batch): then one of exactly ``rows`` is made.
        So a batch's steps use about log2(first rows / last rows) graphs, and compute at most
        twice the rows they need."""
        leading = (*self.per_row, *self.per_sentence)
        key = tuple(
            (name, tensor.dtype, tuple(tensor.shape[1:] if name in leading else tensor.shape))
            for name, tensor in sorted(inputs.items())
        ) + (("rows per sentence", rows_per_sentence),)
        family = self._families.pop(key, [])
        self._families[key] = family  # now the most recently used
        fitting = [graph for graph in family if graph.rows >= rows]
        graph = min(fitting, key=lambda graph: graph.rows, default=None)
        if graph is None or graph.rows > 2 * rows:
            while len(self._families) > MAX_FAMILIES:
                self._families.popitem(last=False)  # the least recently used shapes
            graph = self._make(inputs, rows)
            family.append(graph)
        return graph

    def _make(self, inputs: Mapping[str, torch.Tensor], rows: int) -> _Graph:
        # The static inputs start as copies of this step's, so no row is ever uninitialised.
        static = {name: tensor.clone() for name, tensor in inputs.items()}
        copied = {n: t for n, t in inputs.items() if n not in self.every_step}
        if not self.capture:
            values, token_ids, state = self.run(static)

            def emulate() -> None:
                new_values, new_token_ids, new_state = self.run(static)
                values.copy_(new_values)
                token_ids.copy_(new_token_ids)
                for name, tensor in new_state.items():
                    state[name].copy_(tensor)

            return _Graph(rows, static, values, token_ids, state, emulate, copied)
        device = inputs["tokens"].device
        # A warm-up outside the capture, on a side stream as PyTorch asks: first calls set
        # things up (cuBLAS handles and workspaces) that a capture may not.
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            self.run(static)
        torch.cuda.current_stream(device).wait_stream(side)
        # capture_begin/end on the side stream, as torch.cuda.graph does but without its
        # gc.collect() and empty_cache(): a batch captures several graphs, and those cost
        # a second in all (H200, torch 2.11).
        graph = torch.cuda.CUDAGraph()
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            graph.capture_begin()
            try:
                values, token_ids, state = self.run(static)
            finally:
                graph.capture_end()
        torch.cuda.current_stream(device).wait_stream(side)
        return _Graph(rows, static, values, token_ids, state, graph.replay, copied)
