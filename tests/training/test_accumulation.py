"""Gradient accumulation: micro-batches add up to the update of one full batch.

Tolerance: 1e-6 relative on gradients and weights (float32 summation order is all that
differs), 1e-5 on logged losses (metrics.csv keeps 6 significant digits).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from seqgen.errors import ConfigError
from seqgen.recipes import load_recipe
from seqgen.training.accumulation import accumulated_step, micro_batch_positions, steps_per_epoch
from seqgen.training.checkpoint import load_checkpoint
from seqgen.training.distributed import Distributed, micro_batch_size
from seqgen.training.run import train


def token_loss_sum(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
    """Summed cross-entropy of ``targets`` ``(rows, time)``, 0 = padding, not counted."""
    inputs, targets = batch
    logits = model(inputs)  # (rows, time, vocab)
    return torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), targets.flatten(), ignore_index=0, reduction="sum"
    )


def test_two_micro_batches_give_the_update_of_one_batch_weighted_by_tokens() -> None:
    torch.manual_seed(0)
    inputs = torch.randn(6, 5, 8)
    targets = torch.randint(1, 7, (6, 5))
    targets[:2, 3:] = 0  # the first micro-batch has fewer real tokens than the second
    models, optimizers = [], []
    for _ in range(2):
        torch.manual_seed(1)
        model = torch.nn.Linear(8, 7)
        models.append(model)
        optimizers.append(torch.optim.SGD(model.parameters(), lr=0.5))
    one = Distributed()

    def step(model, optimizer, batches) -> float:
        return accumulated_step(
            batches,
            weight_of=lambda batch: int((batch[1] != 0).sum()),
            loss_sum_of=lambda batch: token_loss_sum(model, batch),
            network=model,
            optimizer=optimizer,
            grad_clip=0.0,
            distributed=one,
        )

    with torch.no_grad():  # the mean over the batch's real tokens, before the update
        mean = torch.nn.functional.cross_entropy(
            models[0](inputs).flatten(0, 1), targets.flatten(), ignore_index=0
        )
    whole = step(models[0], optimizers[0], [(inputs, targets)])
    halves = step(models[1], optimizers[1], [(inputs[:3], targets[:3]), (inputs[3:], targets[3:])])
    assert whole == pytest.approx(float(mean), rel=1e-6)
    assert halves == pytest.approx(whole, rel=1e-6)
    for first, second in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(first, second, rtol=1e-6, atol=1e-7)


def test_ranks_share_each_step_disjointly_as_one_process_accumulating() -> None:
    """Two ranks with one micro-batch each train what one process with two trains."""
    one = micro_batch_positions(
        3, batches_per_epoch=10, distributed=Distributed(), accumulate_steps=2
    )
    ranks = [
        micro_batch_positions(
            3,
            batches_per_epoch=10,
            distributed=Distributed(rank=rank, world_size=2),
            accumulate_steps=1,
        )
        for rank in range(2)
    ]
    assert sorted(ranks[0] + ranks[1]) == sorted(one)
    assert not set(ranks[0]) & set(ranks[1])
    # 10 batches make 5 steps of 2; step 5 starts epoch 1.
    assert one == [(0, 6), (0, 7)]
    assert micro_batch_positions(
        5, batches_per_epoch=10, distributed=Distributed(), accumulate_steps=2
    ) == [(1, 0), (1, 1)]


def test_an_epoch_too_small_for_one_global_step_is_refused() -> None:
    with pytest.raises(ConfigError, match="3 batches per epoch, fewer than one step's 2 processes"):
        steps_per_epoch(
            3, distributed=Distributed(world_size=2), accumulate_steps=2, what="batches"
        )


def test_a_global_batch_that_processes_times_micro_batches_do_not_divide_is_refused() -> None:
    four = Distributed(rank=0, world_size=4)
    assert (
        micro_batch_size("batch_size", 64, scope="global", distributed=four, accumulate_steps=2)
        == 8
    )
    assert (
        micro_batch_size("batch_size", 6, scope="process", distributed=four, accumulate_steps=2)
        == 6
    )
    with pytest.raises(ConfigError, match=r"train.batch_tokens = 100 .* do not divide it"):
        micro_batch_size("batch_tokens", 100, scope="global", distributed=four, accumulate_steps=2)


def losses(run: Path) -> list[float]:
    with (run / "metrics.csv").open(newline="", encoding="utf-8") as handle:
        return [float(row["train_loss"]) for row in csv.DictReader(handle) if row["train_loss"]]


def test_a_language_model_accumulating_two_half_batches_trains_as_one_full_batch(
    tmp_path: Path, write_recipe
) -> None:
    recipe = write_recipe()
    common = ("train.log_every=1", "train.max_steps=4", "train.eval_every=4")
    whole = tmp_path / "whole"
    halves = tmp_path / "halves"
    train(load_recipe(recipe, (*common, "train.batch_size=8")), whole, show_progress=False)
    train(
        load_recipe(recipe, (*common, "train.batch_size=4", "train.accumulate_steps=2")),
        halves,
        show_progress=False,
    )
    assert losses(halves) == pytest.approx(losses(whole), rel=1e-5)
    assert len(losses(whole)) == 4
    first, second = (load_checkpoint(run / "last.safetensors").weights for run in (whole, halves))
    for name, tensor in first.items():
        torch.testing.assert_close(second[name], tensor, rtol=1e-5, atol=1e-6)
