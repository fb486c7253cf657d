"""Data-parallel training under torchrun on CPUs (gloo): two processes train what one
process accumulating the same global batch trains, resume, and fail in one line per rank.

Each test here starts Python processes that import torch (about 2 s each on the CI's two
cores), so there are few of them, on a tiny translator of a few steps.
Tolerance: the logged losses within 1e-5 relative (metrics.csv keeps 6 digits; gloo sums
the two ranks' gradients in another order than one process's backward pass does).
"""

from __future__ import annotations

import csv
import gc
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqgen.recipes import load_recipe
from seqgen.task import task_named
from seqgen.training import distributed
from seqgen.training.checkpoint import load_checkpoint
from seqgen.training.run import train

ROOT = Path(__file__).parents[2]

RECIPE = """\
task = "translation"

[data]
corpus = ""
train_source = '{folder}/train.src'
train_target = '{folder}/train.tgt'
validation_source = '{folder}/val.src'
validation_target = '{folder}/val.tgt'

[tokenizer]
kind = "word"

[model]
embedding_size = 16
encoder_hidden_size = 16
decoder_hidden_size = 32
dropout = 0.0

[train]
batch_tokens = 120
max_steps = 4
eval_every = 2
log_every = 1
average_last = 2
learning_rate = 1e-2
warmup_steps = 0
schedule = "constant"
seed = 5
device = "cpu"

[decoding]
beam_size = 1
max_length_ratio = 1.0
max_length_offset = 2
"""

WORDS = "a small dog runs in the park while two red cats sleep on warm stones".split()


def write_corpus(folder: Path) -> Path:
    """300 training and 10 validation pairs (a word-for-word 'translation'); the recipe."""
    rng = random.Random(4)
    for split, count in (("train", 300), ("val", 10)):
        sources = [" ".join(rng.choices(WORDS, k=rng.randint(3, 12))) for _ in range(count)]
        (folder / f"{split}.src").write_text("\n".join(sources) + "\n", encoding="utf-8")
        targets = [sentence.upper() for sentence in sources]
        (folder / f"{split}.tgt").write_text("\n".join(targets) + "\n", encoding="utf-8")
    recipe = folder / "recipe.toml"
    recipe.write_text(RECIPE.format(folder=folder), encoding="utf-8")
    return recipe


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def torchrun(recipe: Path, output: Path, *options: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node=2", "-m", "seqgen", "train", str(recipe)]
    command += ["--output", str(output), "--quiet", *options]
    return subprocess.run(command, capture_output=True, text=True, env=environment(), timeout=300)


def rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def losses(run: Path) -> list[float]:
    return [float(row["train_loss"]) for row in rows(run) if row["train_loss"]]


def test_two_processes_train_as_one_accumulating_their_global_batch_and_resume(
    tmp_path: Path,
) -> None:
    recipe = write_corpus(tmp_path)
    one = tmp_path / "one"
    train(load_recipe(recipe, ("train.accumulate_steps=2",)), one, show_progress=False)
    ddp = tmp_path / "ddp"
    first = torchrun(recipe, ddp, "--set", "train.max_steps=2")
    assert first.returncode == 0, first.stderr
    assert "global batch: 2 processes x 1 micro-batches x train.batch_tokens 120 = 240 tokens" in (
        first.stderr
    )
    resumed = torchrun(recipe, ddp, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    # Rank 0 alone reports, writes the folder and validates (twice: steps 2 and 4).
    assert resumed.stdout.count("trained 4 steps") == 1
    assert (
        sorted(os.listdir(ddp))
        == sorted(os.listdir(one))
        == [
            "averaged.safetensors",  # of the last two validated checkpoints, by rank 0 alone
            "best.safetensors",
            "last.safetensors",
            "metrics.csv",
            "step-0000002.safetensors",
            "step-0000004.safetensors",
        ]
    )
    assert [row["step"] for row in rows(ddp) if row["validation_bleu"]] == ["2", "4"]
    assert losses(ddp) == pytest.approx(losses(one), rel=1e-5)
    assert len(losses(one)) == 4
    weights = load_checkpoint(ddp / "last.safetensors").weights
    for name, tensor in load_checkpoint(one / "last.safetensors").weights.items():
        torch.testing.assert_close(weights[name], tensor, rtol=1e-4, atol=1e-5)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


DYING_RANK = """\
import os, sys
from seqgen.training import distributed
group = distributed.start("cpu", timeout_minutes=1)
group.sum([1.0])
if group.rank == 1:
    os._exit(3)  # killed mid-run, as by the OOM killer
try:
    group.sum([2.0])
except distributed.DistributedError as error:
    print(error)
    sys.exit(1)
"""


def test_a_run_frees_its_trainer_before_it_leaves_the_process_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DDP's reducer holds the process group and gloo's last work with its tensors: a run
    lets the trainer (and its DDP wrapper) go before leaving the group, not at interpreter
    exit, where gloo's threads freeing those tensors aborted a resumed two-process run now
    and then ("terminate called without an active exception")."""
    trainer_type = task_named("translation").hook("trainer")
    alive_at_stop: list[int] = []
    stop = distributed.stop

    def counting_stop(*, finished: bool = False) -> None:
        if finished:
            alive_at_stop.append(sum(type(o) is trainer_type for o in gc.get_objects()))
        stop(finished=finished)

    monkeypatch.setattr(distributed, "stop", counting_stop)
    recipe = load_recipe(write_corpus(tmp_path), ("train.max_steps=2",))
    train(recipe, tmp_path / "run", show_progress=False)
    assert alive_at_stop == [0]


def test_a_rank_that_dies_stops_the_others_with_one_error_line(tmp_path: Path) -> None:
    port = str(free_port())
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", DYING_RANK],
            env=environment(
                RANK=str(rank),
                LOCAL_RANK=str(rank),
                WORLD_SIZE="2",
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=port,
                TORCH_CPP_LOG_LEVEL="FATAL",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    survivor_out, survivor_err = ranks[0].communicate(timeout=120)
    ranks[1].communicate(timeout=60)
    assert ranks[1].returncode == 3
    assert ranks[0].returncode == 1, survivor_err
    assert survivor_out.count("\n") == 1
    assert survivor_out.startswith("rank 0 of 2: another training process stopped or stalled")
    assert "continue it with --resume" in survivor_out


def test_a_rendezvous_out_of_reach_is_one_error_line(tmp_path: Path) -> None:
    recipe = write_corpus(tmp_path)
    port = str(free_port())  # nobody listens there
    done = subprocess.run(
        [sys.executable, "-m", "seqgen", "train", str(recipe), "--output", str(tmp_path / "run")]
        + ["--set", "train.distributed_timeout_minutes=0.02"],
        env=environment(
            RANK="1", LOCAL_RANK="1", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(
        f"seqgen: error: rank 1 of 2 could not join the process group at 127.0.0.1:{port}"
    )
    assert not (tmp_path / "run").exists()
