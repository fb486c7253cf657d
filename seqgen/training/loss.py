"""Token-level cross-entropy for training, computed a block of rows at a time.

``functional.cross_entropy(logits.float(), ...)`` on bf16 logits of ``(tokens, vocab)``
writes five full-size float32 tensors per step (the cast, the log-softmax, the zeroed
gradient, its log-softmax backward, the cast back), each larger than the CPU's caches: on
the peer model (1,024 tokens x 8,000) that was a quarter of a training step. This
function keeps only the logits and one float per row, and works on blocks of rows small
enough to stay in cache; the gradient is written straight in the logits' dtype. Losses
and gradients equal PyTorch's up to float32 rounding (tests/test_loss.py).
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
        total = torch.zeros((), dtype=torch.float32, device=logits.device)
        for start in range(0, logits.shape[0], rows):
            block = logits[start : start + rows].float()
            lse = torch.logsumexp(block, dim=-1)
            log_sum_exp[start : start + rows] = lse
            target = block.gather(1, targets[start : start + rows, None])[:, 0]
            loss = lse - target
            if smoothing:
                loss = (1.0 - smoothing) * loss + smoothing * (lse - block.mean(dim=-1))
            total += loss.sum()
        ctx.save_for_backward(logits, targets, log_sum_exp)
        ctx.smoothing = smoothing
        return total

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor, None, None]:
        logits, targets, log_sum_exp = ctx.saved_tensors  # type: ignore[attr-defined]
        smoothing: float = ctx.smoothing  # type: ignore[attr-defined]
        vocab = logits.shape[-1]
        rows = _block_rows(vocab)
        grad_logits = torch.empty_like(logits)
        for start in range(0, logits.shape[0], rows):
            # A float32 copy (copy=True: fp32 logits must not be changed in place).
            block = logits[start : start + rows].to(torch.float32, copy=True)
            block.sub_(log_sum_exp[start : start + rows, None]).exp_()  # softmax
            index = targets[start : start + rows, None]
            block.scatter_add_(1, index, block.new_full(index.shape, smoothing - 1.0))
            if smoothing:
                block.sub_(smoothing / vocab)
            grad_logits[start : start + rows] = block.mul_(grad)
        return grad_logits, None, None
