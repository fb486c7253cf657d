"""Checkpoints: self-describing safetensors files, atomic writes, and clear errors."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from seqgen.errors import CheckpointError
from seqgen.files import atomic_write
from seqgen.recipes import Recipe, recipe_from_dict, recipe_to_dict
from seqgen.tasks.generation.config import LanguageModelConfig
from seqgen.tasks.generation.model import LanguageModel
from seqgen.text import TokenizerConfig, tokenizer_from_dict, train_tokenizer
from seqgen.training.checkpoint import (
    FORMAT_NAME,
    FORMAT_VERSION,
    TRAINING_PREFIX,
    Checkpoint,
    load_checkpoint,
    resolve_checkpoint_path,
    save_checkpoint,
)

TEXT = "to be, or not to be: that is the question.\n"


def make_checkpoint(*, tie: bool = False, training: dict | None = None) -> Checkpoint:
    torch.manual_seed(0)
    recipe = Recipe(
        model=LanguageModelConfig(
            cell="lstm",
            embedding_size=32 if tie else 16,
            hidden_size=32,
            num_layers=2,
            dropout=0.1,
            tie_weights=tie,
        )
    )
    tokenizer = train_tokenizer(TokenizerConfig(kind="char"), TEXT)
    model = LanguageModel(recipe.model, tokenizer.vocab_size)
    return Checkpoint(
        kind="language_model",
        recipe=recipe_to_dict(recipe),
        tokenizer=tokenizer.to_dict(),
        weights=model.state_dict(),
        info={"step": 3, "validation": {"loss": 1.5}},
        training=training,
    )


def model_from(checkpoint: Checkpoint) -> LanguageModel:
    recipe = recipe_from_dict(checkpoint.recipe)
    tokenizer = tokenizer_from_dict(checkpoint.tokenizer)
    model = LanguageModel(recipe.model, tokenizer.vocab_size)
    model.load_state_dict({k: v.float() for k, v in checkpoint.weights.items()})
    return model.eval()


def logits_of(model: LanguageModel) -> torch.Tensor:
    token_ids = torch.tensor([[2, 5, 6, 7, 8, 5], [2, 9, 9, 4, 6, 7]])
    with torch.no_grad():
        return model(token_ids)[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.endswith(".tmp"))


def test_save_then_load_gives_identical_weights_and_metadata(tmp_path: Path) -> None:
    original = make_checkpoint()
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, original)
    loaded = load_checkpoint(path)
    assert loaded.kind == "language_model"
    assert loaded.recipe == original.recipe
    assert loaded.tokenizer == original.tokenizer
    assert loaded.info == original.info
    assert loaded.training is None
    assert loaded.weights.keys() == original.weights.keys()
    for name, tensor in original.weights.items():
        assert loaded.weights[name].dtype == tensor.dtype
        assert torch.equal(loaded.weights[name], tensor), name


def test_save_then_load_gives_identical_logits(tmp_path: Path) -> None:
    original = make_checkpoint()
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, original)
    before = logits_of(model_from(original))
    after = logits_of(model_from(load_checkpoint(path)))
    assert torch.equal(before, after)


def test_fp16_save_halves_floating_weights(tmp_path: Path) -> None:
    original = make_checkpoint()
    path = tmp_path / "half.safetensors"
    save_checkpoint(path, original, dtype=torch.float16)
    loaded = load_checkpoint(path)
    for name, tensor in original.weights.items():
        assert loaded.weights[name].dtype == torch.float16
        assert torch.equal(loaded.weights[name], tensor.half())
    full = tmp_path / "full.safetensors"
    save_checkpoint(full, original)
    assert path.stat().st_size < full.stat().st_size * 0.6
    torch.testing.assert_close(
        logits_of(model_from(loaded)), logits_of(model_from(original)), atol=1e-2, rtol=1e-2
    )


def test_saving_does_not_change_the_callers_tensors(tmp_path: Path) -> None:
    original = make_checkpoint()
    before = {k: v.clone() for k, v in original.weights.items()}
    save_checkpoint(tmp_path / "a.safetensors", original, dtype=torch.float16)
    for name, tensor in original.weights.items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, before[name])


def test_overwriting_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, make_checkpoint())
    second = make_checkpoint()
    second.info = {"step": 9}
    save_checkpoint(path, second)
    assert load_checkpoint(path).info == {"step": 9}
    assert leftovers(tmp_path) == []


def test_a_run_folder_means_its_best_checkpoint(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "best.safetensors", make_checkpoint())
    assert resolve_checkpoint_path(tmp_path) == tmp_path / "best.safetensors"
    assert load_checkpoint(tmp_path).info["step"] == 3


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint: .*nope.safetensors"):
        load_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="best.safetensors; pass a .safetensors file"):
        load_checkpoint(tmp_path)


def test_an_onnx_bundle_is_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(CheckpointError, match="exported ONNX bundle"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x00" * 7,
        bytes(range(256)) * 8,
        (16).to_bytes(8, "little") + b'{"a": not json}',
        (10**12).to_bytes(8, "little") + b"{}",
    ],
    ids=["empty", "too-small", "random", "bad-header", "huge-header"],
)
def test_corrupt_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable checkpoint") as caught:
        load_checkpoint(path)
    assert "\n" not in str(caught.value)


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "random.safetensors"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_truncated_file(tmp_path: Path, keep: float) -> None:
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, make_checkpoint())
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_a_safetensors_file_from_elsewhere(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not a seqgen checkpoint"):
        load_checkpoint(path)
    save_file({"weight": torch.zeros(2, 2)}, str(path))  # no metadata at all
    with pytest.raises(CheckpointError, match="not a seqgen checkpoint"):
        load_checkpoint(path)


def metadata_file(tmp_path: Path, **metadata: str) -> Path:
    path = tmp_path / "odd.safetensors"
    save_file({"weight": torch.zeros(2)}, str(path), metadata={"format": FORMAT_NAME, **metadata})
    return path


def test_a_newer_format_version_asks_for_an_upgrade(tmp_path: Path) -> None:
    path = metadata_file(tmp_path, format_version=str(FORMAT_VERSION + 1))
    with pytest.raises(CheckpointError, match=f"format {FORMAT_VERSION + 1}.*upgrade seqgen"):
        load_checkpoint(path)


def test_a_damaged_format_version(tmp_path: Path) -> None:
    path = metadata_file(tmp_path, format_version="one")
    with pytest.raises(CheckpointError, match="damaged format_version 'one'"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "metadata",
    [{}, {"kind": "language_model", "recipe": "{", "tokenizer": "{}"}],
    ids=["missing-keys", "bad-json"],
)
def test_damaged_metadata(tmp_path: Path, metadata: dict[str, str]) -> None:
    path = metadata_file(tmp_path, format_version=str(FORMAT_VERSION), **metadata)
    with pytest.raises(CheckpointError, match="damaged metadata"):
        load_checkpoint(path)


def test_tied_weights_are_stored_once_and_load_under_every_name(tmp_path: Path) -> None:
    from safetensors import safe_open

    tied = make_checkpoint(tie=True)
    path = tmp_path / "tied.safetensors"
    save_checkpoint(path, tied)
    with safe_open(str(path), framework="pt") as handle:
        stored = set(handle.keys())
    assert stored == set(tied.weights) - {"output.weight"}  # it is the embedding
    loaded = load_checkpoint(path)
    assert loaded.weights.keys() == tied.weights.keys()
    for name, tensor in tied.weights.items():
        assert torch.equal(loaded.weights[name], tensor), name
    model = model_from(loaded)
    assert model.output.weight is model.embedding.weight
    assert torch.equal(logits_of(model), logits_of(model_from(tied)))


def test_an_aliased_weight_loads_as_its_own_copy(tmp_path: Path) -> None:
    path = tmp_path / "tied.safetensors"
    save_checkpoint(path, make_checkpoint(tie=True))
    weights = load_checkpoint(path).weights
    weights["embedding.weight"].zero_()  # code may change a loaded weight in place
    assert weights["output.weight"].abs().sum() > 0


def test_an_alias_of_a_missing_weight_is_damaged_metadata(tmp_path: Path) -> None:
    path = metadata_file(
        tmp_path,
        format_version=str(FORMAT_VERSION),
        kind="language_model",
        recipe="{}",
        tokenizer="{}",
        aliases='{"output.weight": "no.such.weight"}',
    )
    with pytest.raises(CheckpointError, match="damaged metadata.*no.such.weight"):
        load_checkpoint(path)


def test_a_format_1_checkpoint_without_aliases_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "old.safetensors"
    save_file(
        {"weight": torch.ones(2)},
        str(path),
        metadata={
            "format": FORMAT_NAME,
            "format_version": "1",
            "kind": "language_model",
            "recipe": "{}",
            "tokenizer": "{}",
        },
    )
    assert torch.equal(load_checkpoint(path).weights["weight"], torch.ones(2))


# --- atomic writes --------------------------------------------------------------------------------


def test_atomic_write_leaves_nothing_when_the_write_fails(tmp_path: Path) -> None:
    target = tmp_path / "model.safetensors"

    def fail(temporary: str) -> None:
        Path(temporary).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fail)
    assert os.listdir(tmp_path) == []


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path: Path) -> None:
    target = tmp_path / "model.safetensors"
    save_checkpoint(target, make_checkpoint())
    before = target.read_bytes()

    def fail(temporary: str) -> None:
        Path(temporary).write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, fail)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_save_checkpoint_failure_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from seqgen.training import checkpoint as module

    def broken_save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError("no space left on device")

    monkeypatch.setattr(module, "save_file", broken_save_file)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "run" / "last.safetensors", make_checkpoint())
    assert os.listdir(tmp_path / "run") == []


def test_atomic_write_creates_the_folder_and_a_readable_file(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "file.txt"
    atomic_write(target, lambda temporary: Path(temporary).write_text("done"))
    assert target.read_text() == "done"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


# --- training state -------------------------------------------------------------------------------


def test_training_state_round_trip(tmp_path: Path) -> None:
    state = {
        "step": 12,
        "best_loss": 1.25,
        "never": math.inf,
        "nothing": None,
        "flag": True,
        "name": "adamw",
        "rng": torch.arange(5, dtype=torch.uint8),
        "carried": {"hidden": torch.randn(4, 2, 3), "cell": torch.randn(4, 2, 3)},
        "optimizer": {
            "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2, 2)}, 7: {}},
            "param_groups": [{"lr": 0.002, "params": [0, 7], "betas": [0.9, 0.999]}],
        },
        "list": [1, 2.5, [torch.zeros(1), "x"]],
    }
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, make_checkpoint(training=state))
    loaded = load_checkpoint(path, with_training_state=True)
    assert not any(name.startswith(TRAINING_PREFIX) for name in loaded.weights)
    restored = loaded.training
    assert restored is not None
    assert restored.keys() == state.keys()
    for key in ("step", "best_loss", "never", "nothing", "flag", "name"):
        assert restored[key] == state[key]
        assert type(restored[key]) is type(state[key])
    assert torch.equal(restored["rng"], state["rng"]) and restored["rng"].dtype == torch.uint8
    for name in ("hidden", "cell"):
        assert torch.equal(restored["carried"][name], state["carried"][name])
    optimizer = restored["optimizer"]
    assert list(optimizer["state"]) == [0, 7]  # int keys stay ints
    assert torch.equal(optimizer["state"][0]["exp_avg"], torch.ones(2, 2))
    assert torch.equal(optimizer["state"][0]["step"], torch.tensor(3.0))
    assert optimizer["state"][7] == {}
    assert optimizer["param_groups"] == state["optimizer"]["param_groups"]
    assert restored["list"][:2] == [1, 2.5]
    assert torch.equal(restored["list"][2][0], torch.zeros(1))
    assert restored["list"][2][1] == "x"


def test_training_state_is_only_read_when_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, make_checkpoint(training={"step": 1, "t": torch.ones(3)}))
    assert load_checkpoint(path).training is None
    assert load_checkpoint(path, with_training_state=True).training["step"] == 1
    # A checkpoint without training state gives None even when asked.
    save_checkpoint(tmp_path / "best.safetensors", make_checkpoint())
    assert load_checkpoint(tmp_path, with_training_state=True).training is None


def test_an_optimizer_state_survives_the_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, make_checkpoint(training={"optimizer": optimizer.state_dict()}))
    restored = load_checkpoint(path, with_training_state=True).training["optimizer"]
    fresh = torch.optim.AdamW(model.parameters(), lr=0.5)
    fresh.load_state_dict(restored)
    assert fresh.param_groups[0]["lr"] == 0.01
    for before, after in zip(
        optimizer.state_dict()["state"].values(),
        fresh.state_dict()["state"].values(),
        strict=True,
    ):
        for key in before:
            assert torch.equal(before[key], after[key])
