"""Token-level cross-entropy for training, computed a block of rows at a time.

``functional.cross_entropy(logits.float(), ...)`` on bf16 logits of ``(tokens, vocab)``
writes five full-size float32 tensors per step (the cast, the log-softmax, the zeroed
gradient, its log-softmax backward, the cast back), each larger than the CPU's caches: on
the peer model (1,024 tokens x 8,000) that was a quarter of a training step. This
function keeps only the logits and one float per row, and works on blocks of rows small
enough to stay in cache; the gradient is written straight in the logits' dtype. Float32
logits keep their softmax from the forward instead, which the backward turns into the
gradient in place: one exponential pass a step instead of two, and no copy (the peer
model's ~1,000 tokens x 3,000 candidates: about 10 -> 6 ms forward and backward). Losses and
gradients equal PyTorch's up to float32 rounding (tests/training/test_loss.py).
"""

from __future__ import annotations

import torch

# Rows per block: about a million float32 values (4 MiB), which fits this kind of CPU's
# L2 + L3 share; on CUDA fewer, larger blocks would do, but the count is small either way.
_BLOCK_VALUES = 1 << 20


def cross_entropy_sum(
    logits: torch.Tensor, targets: torch.Tensor, *, label_smoothing: float = 0.0
) -> torch.Tensor:
    """The summed cross-entropy of ``logits`` ``(tokens, vocab)`` (any float dtype) against
    ``targets`` ``(tokens,)`` int64, in float32: ``functional.cross_entropy(logits.float(),
    targets, label_smoothing=label_smoothing, reduction="sum")``. A 0-d tensor."""
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    return _CrossEntropySum.apply(logits, targets, label_smoothing)


def _block_rows(vocab: int) -> int:
    return max(1, _BLOCK_VALUES // max(1, vocab))


class _CrossEntropySum(torch.autograd.Function):
    """Forward: per row ``lse - (1 - s) * x[target] - s * mean(x)``, summed, where ``lse``
    is the row's log-sum-exp. Backward: ``softmax(x) - (1 - s) * onehot - s / vocab``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        logits: torch.Tensor,
        targets: torch.Tensor,
        smoothing: float,
    ) -> torch.Tensor:
        rows = _block_rows(logits.shape[-1])
        log_sum_exp = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
        # Float32: the softmax, kept for the backward (the same size as the logits it
        # replaces there); lower precisions recompute it in float32 from their logits.
        softmax = torch.empty_like(logits) if logits.dtype == torch.float32 else None
        total = torch.zeros((), dtype=torch.float32, device=logits.device)
        for start in range(0, logits.shape[0], rows):
            block = logits[start : start + rows].float()
            if softmax is None:
                lse = torch.logsumexp(block, dim=-1)
            else:
                lse = _softmax_into(block, softmax[start : start + rows])
            log_sum_exp[start : start + rows] = lse
            target = block.gather(1, targets[start : start + rows, None])[:, 0]
            loss = lse - target
            if smoothing:
                loss = (1.0 - smoothing) * loss + smoothing * (lse - block.mean(dim=-1))
            total += loss.sum()
        kept = logits if softmax is None else softmax
        ctx.save_for_backward(kept, targets, log_sum_exp)
        ctx.smoothing = smoothing
        ctx.is_softmax = softmax is not None
        return total

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor, None, None]:
        kept, targets, log_sum_exp = ctx.saved_tensors  # type: ignore[attr-defined]
        smoothing: float = ctx.smoothing  # type: ignore[attr-defined]
        rows = _block_rows(kept.shape[-1])
        if ctx.is_softmax:  # type: ignore[attr-defined]
            # The kept softmax becomes the gradient in place: nothing reads it afterwards.
            for start in range(0, kept.shape[0], rows):
                block = kept[start : start + rows]
                _to_gradient(block, targets[start : start + rows], smoothing, grad)
            return kept, None, None
        grad_logits = torch.empty_like(kept)
        for start in range(0, kept.shape[0], rows):
            # A float32 copy of the logits (copy=True: never changed in place).
            block = kept[start : start + rows].to(torch.float32, copy=True)
            block.sub_(log_sum_exp[start : start + rows, None]).exp_()  # softmax
            _to_gradient(block, targets[start : start + rows], smoothing, grad)
            grad_logits[start : start + rows] = block
        return grad_logits, None, None


def _to_gradient(
    softmax: torch.Tensor, targets: torch.Tensor, smoothing: float, grad: torch.Tensor
) -> None:
    """Turn a block's ``softmax`` ``(rows, vocab)`` into its logits' gradient in place:
    ``(softmax - (1 - s) * onehot(targets) - s / vocab) * grad``."""
    index = targets[:, None]
    softmax.scatter_add_(1, index, softmax.new_full(index.shape, smoothing - 1.0))
    if smoothing:
        softmax.sub_(smoothing / softmax.shape[-1])
    softmax.mul_(grad)


def _softmax_into(block: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Write ``block`` ``(rows, vocab)``'s softmax into ``out``; return its log-sum-exp
    ``(rows,)``. One exponential pass: ``exp(x - max)``, then its sum divides it."""
    peak = block.amax(dim=-1, keepdim=True)
    exps = torch.sub(block, peak, out=out).exp_()
    sums = exps.sum(dim=-1, keepdim=True)
    exps.div_(sums)
    return (peak + sums.log())[:, 0]
