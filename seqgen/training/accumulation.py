"""One optimizer step over several micro-batches: gradient accumulation, on one process or many.

A step's global batch is ``processes x train.accumulate_steps`` micro-batches. Each
micro-batch gives the *sum* of its losses and, before any forward pass, its weight (target
tokens for a translator or a language model; texts, or their class weights, for a
classifier). The step's loss is the weighted mean over the whole global batch::

    loss = sum over ranks and micro-batches of loss_sum / sum of their weights

so accumulating two half batches, or training on two processes, is the same update as one
full batch (up to float summation order), whatever the micro-batches' token counts. The
global weight is one all-reduce of one number before the backward passes; DDP averages the
gradients over ranks, hence the factor ``world_size`` below. Under DDP every micro-batch
but the last runs inside ``no_sync()``, so gradients cross the network once per step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from seqgen.errors import ConfigError
from seqgen.training.device import clip_gradients
from seqgen.training.distributed import Distributed, no_sync

Batch = TypeVar("Batch")


def micro_batch_positions(
    step: int, *, batches_per_epoch: int, distributed: Distributed, accumulate_steps: int
) -> list[tuple[int, int]]:
    """``(epoch, index)`` of each micro-batch this rank trains at ``step``.

    An epoch's batch list (the same on every rank, from the seed) is cut into global steps
    of ``world_size x accumulate_steps`` consecutive batches; rank ``r`` takes batches
    ``r, r + world_size, ...`` of each. The ranks' shares are disjoint, and one process
    with ``accumulate_steps = world_size x A`` trains exactly the same batches. The last
    batches of an epoch that cannot fill a global step are skipped, so every rank runs the
    same number of steps (a rank with one step more would wait for the others forever).
    """
    per_step = distributed.world_size * accumulate_steps
    steps_per_epoch = batches_per_epoch // per_step
    epoch, within = divmod(step, steps_per_epoch)
    return [
        (epoch, within * per_step + micro * distributed.world_size + distributed.rank)
        for micro in range(accumulate_steps)
    ]


def steps_per_epoch(
    batches_per_epoch: int, *, distributed: Distributed, accumulate_steps: int, what: str
) -> int:
    """Optimizer steps in one epoch of ``batches_per_epoch`` micro-batches; ConfigError
    where the data cannot fill one global step."""
    per_step = distributed.world_size * accumulate_steps
    if batches_per_epoch < per_step:
        raise ConfigError(
            f"the training data makes {batches_per_epoch} {what} per epoch, fewer than one "
            f"step's {distributed.world_size} processes x train.accumulate_steps = "
            f"{accumulate_steps}; use smaller batches, fewer processes or more data"
        )
    return batches_per_epoch // per_step


def accumulated_step(
    micro_batches: Sequence[Batch],
    *,
    weight_of: Callable[[Batch], float],
    loss_sum_of: Callable[[Batch], torch.Tensor],
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    grad_clip: float,
    distributed: Distributed,
) -> float:
    """Back-propagate every micro-batch, then clip and step once.

    ``loss_sum_of(batch)`` runs the forward pass through ``network`` (DDP or the model)
    and returns the batch's summed loss (a scalar tensor); ``weight_of(batch)`` what it
    counts. Returns this rank's share of the step's mean loss: the shares of all ranks sum
    to the global batch's mean.
    """
    weight = distributed.sum([float(sum(weight_of(batch) for batch in micro_batches))])[0]
    weight = max(weight, 1e-12)  # a step of empty batches (never with length filtering)
    optimizer.zero_grad(set_to_none=True)
    share = 0.0
    for position, batch in enumerate(micro_batches):
        last = position == len(micro_batches) - 1
        with contextlib.nullcontext() if last else no_sync(network):
            loss_sum = loss_sum_of(batch)
            loss = loss_sum / weight
            if distributed.enabled:
                loss = loss * distributed.world_size  # DDP divides the gradients by it
            loss.backward()
        share += float(loss_sum.detach()) / weight
    if grad_clip > 0:
        clip_gradients(optimizer_parameters(optimizer), grad_clip)
    optimizer.step()
    return share


def optimizer_parameters(optimizer: torch.optim.Optimizer) -> list[torch.nn.Parameter]:
    return [p for group in optimizer.param_groups for p in group["params"]]
