"""Input feeding's teacher-forcing loop as one autograd function, for training on the CPU.

With input feeding (Luong et al., 2015, 3.3) each target position's input holds the previous
position's attentional vector, so teacher forcing loops over the positions. Through autograd
every position records some twenty small operations, and the backward computes each weight's
gradient from that position alone: a ``(4 * hidden, rows) x (rows, 2 * hidden)`` product per
position and weight. Here the loop runs unrecorded and keeps what the backward needs; the
backward walks the positions in reverse for the recurrent gradients only, and the gradients
of the weights, the keys and the memory follow from all positions at once: a few large
products instead of many small ones.

It covers what the peer comparison trains: a one-layer LSTM decoder, Luong attention (dot or
general) and input feeding. Under CPU autocast the products run in bf16 (on AMX at these
shapes about 3.5x float32) with the weights cast once per call instead of once per position;
the recurrent state and the elementwise work stay in float32, as autocast keeps them.

Shapes: ``rows`` target sentences, ``time`` target positions, ``hidden`` the decoder's width,
``source_len`` and ``memory_size`` the encoder memory's.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from seqgen.tasks.translation.attention import Attention, DotAttention, GeneralAttention


def fuses(
    *, cell: str, layers: int, attention: Attention, input_feeding: bool, device: torch.device
) -> bool:
    """Whether :func:`input_feeding_loop` computes this decoder's teacher forcing."""
    luong = isinstance(attention, DotAttention | GeneralAttention)
    return input_feeding and luong and cell == "lstm" and layers == 1 and device.type == "cpu"


def input_feeding_loop(
    gates: torch.Tensor,
    hidden: torch.Tensor,
    cell: torch.Tensor,
    feed: torch.Tensor,
    keys: torch.Tensor,
    memory: torch.Tensor,
    source_mask: torch.Tensor,
    weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    keep: torch.Tensor | None,
) -> torch.Tensor:
    """The attentional vectors of every position, as the stepwise decoder computes them.

    Args:
        gates: ``(rows, time, 4 * hidden)``, the embedding's share of the LSTM's input
            product with both biases, ``bias_ih + bias_hh`` (for all positions at once).
        hidden, cell, feed: ``(rows, hidden)``, the initial state and attentional vector.
        keys: ``(rows, source_len, hidden)``; memory ``(rows, source_len, memory_size)``;
            source_mask ``(rows, source_len)`` bool, True = a real token.
        weights: ``weight_ih``'s columns for the fed vector ``(4 * hidden, hidden)``,
            ``weight_hh`` ``(4 * hidden, hidden)`` and the combine layer's ``W_c``
            ``(hidden, memory_size + hidden)``.
        keep: ``(rows, time, hidden)``, dropout's scaled mask of the attentional vectors, or
            None without dropout.

    Returns:
        ``(rows, time, hidden)``: position t's attentional vector after dropout (what the
        output layer reads and position t + 1 is fed), in float32 under autocast.
    """
    autocast = torch.is_autocast_enabled("cpu")
    products = torch.get_autocast_dtype("cpu") if autocast else gates.dtype
    state = torch.float32 if autocast else gates.dtype
    inputs = (gates, hidden, cell, feed, keys, memory, source_mask, *weights, keep)
    with _autocast_off():
        return _Loop.apply(*inputs, products, state)


def _autocast_off() -> contextlib.AbstractContextManager:
    """CPU autocast switched off where it is on (the loop casts for its products itself, in
    the forward and in a backward() run under autocast); a no-op elsewhere."""
    if torch.is_autocast_enabled("cpu"):
        return torch.autocast("cpu", enabled=False)
    return contextlib.nullcontext()


class _Loop(torch.autograd.Function):
    """:func:`input_feeding_loop`'s forward and backward."""

    @staticmethod
    def forward(ctx: Any, *inputs: Any) -> torch.Tensor:  # noqa: D102 (the function above)
        gates, hidden, cell, feed, keys, memory, mask, w_feed, w_hh, w_c, keep = inputs[:11]
        products, state = inputs[11:]
        typed = (gates, hidden, cell, feed, keys, memory, w_feed, w_hh, w_c)
        ctx.types = (products, state, [tensor.dtype for tensor in typed])
        rows, time, size = gates.shape
        width, memory_size = size // 4, memory.shape[2]
        w_input = torch.cat([w_feed, w_hh], dim=1).to(products).t()  # (2H, 4H): [feed; hidden]
        w_context, w_top = w_c.to(state).t().split([memory_size, width])
        keys, memory = keys.to(state), memory.to(state)
        saved = _Saved.allocate(time, rows, width, memory_size, state)
        saved.inputs[0] = torch.cat([feed, hidden], dim=1)
        saved.cells[0] = cell
        # -inf before the softmax gives padding exactly zero weight, as Attention does.
        score_bias = torch.zeros(rows, 1, mask.shape[1], dtype=state)
        score_bias.masked_fill_(~mask.unsqueeze(1), float("-inf"))
        keys_t, alphas = keys.transpose(1, 2), []
        # Every per-position view made once, a call per tensor (not one per position).
        sums, cells = gates.to(state).unbind(1), saved.cells.unbind(0)
        i, f, g, o = (gate.unbind(0) for gate in saved.acts.view(time, rows, 4, width).unbind(2))
        ins, feds = saved.inputs.unbind(0), saved.inputs[:, :, :width].unbind(0)
        tops = saved.inputs[:, :, width:].unbind(0)
        tops_3d = saved.inputs[:, :, None, width:].unbind(0)  # (rows, 1, hidden) for bmm
        contexts, contexts_3d = saved.contexts.unbind(0), saved.contexts.unsqueeze(2).unbind(0)
        attentionals, acts = saved.attentionals.unbind(0), saved.acts.unbind(0)
        keeps = None if keep is None else keep.unbind(1)
        for t in range(time):
            pre = torch.add(sums[t], torch.mm(ins[t].to(products), w_input))
            torch.sigmoid(pre, out=acts[t])
            torch.tanh(pre[:, 2 * width : 3 * width], out=g[t])
            new_cell = torch.addcmul(f[t] * cells[t], i[t], g[t], out=cells[t + 1])
            top = torch.mul(o[t], torch.tanh(new_cell), out=tops[t + 1])
            scores = torch.baddbmm(score_bias, tops_3d[t + 1], keys_t)
            alphas.append(torch.softmax(scores, dim=-1))
            torch.bmm(alphas[-1], memory, out=contexts_3d[t])
            combined = torch.addmm(torch.mm(contexts[t], w_context), top, w_top)
            attentional = torch.tanh(combined, out=attentionals[t])
            if keeps is None:
                feds[t + 1].copy_(attentional)
            else:
                torch.mul(attentional, keeps[t], out=feds[t + 1])
        saved.alphas = torch.cat(alphas, dim=1).transpose(0, 1)  # (time, rows, source_len)
        ctx.save_for_backward(keys, memory, w_feed, w_hh, w_c, keep, *saved.tensors())
        return saved.inputs[1:, :, :width].transpose(0, 1).contiguous()

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # noqa: D102
        with _autocast_off():
            return _Loop._backward(ctx, grad_out)

    @staticmethod
    def _backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        keys, memory, w_feed, w_hh, w_c, keep, *tensors = ctx.saved_tensors
        saved, (products, state, types) = _Saved(*tensors), ctx.types
        time, rows, size = saved.acts.shape
        width, memory_size = size // 4, memory.shape[2]
        w_input = torch.cat([w_feed, w_hh], dim=1).to(products)  # (4H, 2H)
        w_combine, memory_t = w_c.to(state), memory.transpose(1, 2)
        factors = saved.factors(keep)
        grads = _Grads(time, rows, width, memory_size, state)
        grad_outs = grad_out.to(state).unbind(1)
        grad_feed = torch.zeros(rows, width, dtype=state)  # of position t + 1's inputs
        grad_hidden = torch.zeros(rows, 1, width, dtype=state)
        grad_cell = torch.zeros(rows, width, dtype=state)
        # Every per-position view made once (see the forward).
        combine, cell, cell_gates, output_gate, forget = factors.by_position()
        alphas, zs = saved.alphas.unsqueeze(2).unbind(0), grads.z.unbind(0)
        joined = grads.joined.unbind(0)
        pre = grads.pre.unbind(0)
        pre_cells = grads.pre[:, :, : 3 * width].view(time, rows, 3, width).unbind(0)  # i, f, g
        pre_output = grads.pre[:, :, 3 * width :].unbind(0)
        for t in reversed(range(time)):
            grad_z = torch.mul(grad_outs[t] + grad_feed, combine[t], out=zs[t])
            grad_context, grad_top = torch.mm(grad_z, w_combine, out=joined[t]).split(
                [memory_size, width], dim=1
            )  # W_c's input, [context; hidden]
            grad_alpha = torch.bmm(grad_context.unsqueeze(1), memory_t)
            grad_scores = torch.ops.aten._softmax_backward_data(grad_alpha, alphas[t], -1, state)
            grads.scores[t] = grad_scores.squeeze(1)
            from_top = torch.add(grad_top.unsqueeze(1), grad_hidden)
            grad_top = torch.baddbmm(from_top, grad_scores, keys).squeeze(1)
            grad_cell = torch.addcmul(grad_cell, grad_top, cell[t])
            torch.mul(grad_cell.unsqueeze(1), cell_gates[t], out=pre_cells[t])
            torch.mul(grad_top, output_gate[t], out=pre_output[t])
            grad_cell = grad_cell * forget[t]
            grad_feed, grad_hidden = torch.mm(pre[t].to(products), w_input).split([width, width], 1)
            grad_hidden = grad_hidden.unsqueeze(1)
        return grads.result(saved, (grad_feed, grad_hidden.squeeze(1), grad_cell), products, types)


class _Saved:
    """What the forward keeps, position-major: ``inputs`` ``(time + 1, rows, 2 * hidden)``
    (the fed vector and hidden state each position reads, then the last position's),
    ``acts`` ``(time, rows, 4 * hidden)`` (the gates after their nonlinearities), ``cells``
    ``(time + 1, rows, hidden)`` (from the initial one), ``contexts`` ``(time, rows,
    memory_size)``, ``attentionals`` ``(time, rows, hidden)`` (before dropout) and, after
    the loop, ``alphas`` ``(time, rows, source_len)``."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        self.inputs, self.acts, self.cells, self.contexts, self.attentionals = tensors[:5]
        self.alphas = tensors[5] if len(tensors) > 5 else torch.empty(0)

    @classmethod
    def allocate(cls, time: int, rows: int, width: int, memory_size: int, dtype: Any) -> _Saved:
        def empty(*shape: int) -> torch.Tensor:
            return torch.empty(*shape, dtype=dtype)

        return cls(
            empty(time + 1, rows, 2 * width),
            empty(time, rows, 4 * width),
            empty(time + 1, rows, width),
            empty(time, rows, memory_size),
            empty(time, rows, width),
        )

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.inputs, self.acts, self.cells, self.contexts, self.attentionals, self.alphas

    def factors(self, keep: torch.Tensor | None) -> _Factors:
        """The elementwise derivatives, for all positions at once (fewer, larger operations
        than one set per position in the backward loop)."""
        i, f, g, o = self.acts.chunk(4, dim=2)
        tanh_cells = torch.tanh(self.cells[1:])
        # The pre-activations of i, f and g by the new cell state, stacked: (time, rows, 3, H).
        cell_gates = torch.stack(
            [g * i * (1 - i), self.cells[:-1] * f * (1 - f), i * (1 - g * g)], 2
        )
        combine = 1 - self.attentionals * self.attentionals
        if keep is not None:
            combine = combine * keep.transpose(0, 1).to(combine.dtype)
        return _Factors(
            cell_gates=cell_gates,
            output_gate=tanh_cells * o * (1 - o),
            cell=o * (1 - tanh_cells * tanh_cells),
            forget=f,
            combine=combine,
        )


@dataclass(frozen=True)
class _Factors:
    """Derivatives for the backward, ``(time, rows, hidden)`` each but ``cell_gates``: the
    input, forget and cell gates' pre-activations by the new cell state ``(time, rows, 3,
    hidden)``; ``output_gate``: the output gate's by the hidden state; ``cell``: the hidden
    state's by the cell state; ``forget``: the cell state's by the previous one; ``combine``:
    the fed vector's by ``W_c [context; hidden]`` (tanh's derivative times dropout's mask)."""

    cell_gates: torch.Tensor
    output_gate: torch.Tensor
    cell: torch.Tensor
    forget: torch.Tensor
    combine: torch.Tensor

    def by_position(self) -> tuple[tuple[torch.Tensor, ...], ...]:
        """``combine``, ``cell``, ``cell_gates``, ``output_gate`` and ``forget``, each as a
        tuple of one view per position."""
        factors = (self.combine, self.cell, self.cell_gates, self.output_gate, self.forget)
        return tuple(factor.unbind(0) for factor in factors)


class _Grads:
    """The backward's per-position gradients, position-major: ``pre`` ``(time, rows, 4 *
    hidden)`` (the gates' pre-activations), ``z`` ``(time, rows, hidden)`` (``W_c``'s
    outputs), ``joined`` ``(time, rows, memory_size + hidden)`` (``[context; hidden]``), and
    a list by position of ``scores`` ``(rows, source_len)``."""

    def __init__(
        self, time: int, rows: int, width: int, memory_size: int, dtype: torch.dtype
    ) -> None:
        self.pre = torch.empty(time, rows, 4 * width, dtype=dtype)
        self.z = torch.empty(time, rows, width, dtype=dtype)
        self.joined = torch.empty(time, rows, memory_size + width, dtype=dtype)
        self.scores: list[torch.Tensor] = [torch.empty(0)] * time

    def result(
        self,
        saved: _Saved,
        initial: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        products: torch.dtype,
        types: list[torch.dtype],
    ) -> tuple[torch.Tensor | None, ...]:
        """The gradients of :func:`input_feeding_loop`'s inputs, in its order (``types``: the
        dtypes of its tensors but the masks): the weights', keys' and memory's from all
        positions at once, one product each."""
        time, rows, size = self.pre.shape
        width, state = size // 4, self.pre.dtype
        memory_size = saved.contexts.shape[2]
        z, scores = self.z, torch.stack(self.scores)
        grad_contexts = self.joined[:, :, :memory_size]
        tops = saved.inputs[1:, :, width:]

        def summed(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
            """``sum_t left[t]^T right[t]`` over positions and rows: ``(a, b)``."""
            flat_left, flat_right = left.reshape(time * rows, -1), right.reshape(time * rows, -1)
            return torch.mm(flat_left.t().to(products), flat_right.to(products)).to(state)

        def per_row(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
            """``sum_t left[t, r]^T right[t, r]`` per row: ``(rows, a, b)``."""
            return torch.bmm(left.permute(1, 2, 0), right.transpose(0, 1))

        grad_input = summed(self.pre, saved.inputs[:-1])  # (4H, 2H): [feed; hidden] columns
        grad_feed, grad_hidden, grad_cell = initial
        grads = [
            self.pre.transpose(0, 1),
            grad_hidden,
            grad_cell,
            grad_feed,
            per_row(scores, tops),  # keys
            per_row(saved.alphas, grad_contexts),  # memory
            grad_input[:, :width],
            grad_input[:, width:],
            torch.cat([summed(z, saved.contexts), summed(z, tops)], dim=1),  # W_c
        ]
        typed = [grad.to(dtype) for grad, dtype in zip(grads, types, strict=True)]
        return (*typed[:6], None, *typed[6:], None, None, None)
