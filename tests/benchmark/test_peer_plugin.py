"""The peer benchmark plugin: its commands run seqgen, and its parsers read what seqgen prints.

The harness itself (``../shared/bench/peers``) is not needed: a stand-in ``peerbench`` module
gives the plugin the four names it imports, as the harness's ``load_plugins`` would.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from seqgen.cli import main

PLUGIN = Path(__file__).parents[2] / "seqgen" / "benchmark" / "peer_plugin.py"


class System:  # what peerbench.System gives a subclass
    src, tgt = "de", "en"


def count_pieces(path: str) -> dict:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return {"lines": len(lines), "tokens": sum(len(line.split()) for line in lines)}


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, Path]:
    """The plugin's SYSTEMS, loaded as the harness loads it, and its DATA folder."""
    data = tmp_path / "data"
    (data / "sp").mkdir(parents=True)
    rng = random.Random(0)
    words = [f"\u2581w{index}" for index in range(30)]
    for split, count in (("train", 130), ("val", 10)):
        source = [" ".join(rng.choices(words, k=rng.randint(2, 7))) for _ in range(count)]
        (data / "sp" / f"{split}.de").write_text("\n".join(source) + "\n", encoding="utf-8")
        target = [line.upper() for line in source]
        (data / "sp" / f"{split}.en").write_text("\n".join(target) + "\n", encoding="utf-8")
    stub = types.ModuleType("peerbench")
    stub.DATA, stub.System, stub.count_pieces = str(data), System, count_pieces
    stub.base_env = lambda extra=None: {"OMP_NUM_THREADS": "2", **(extra or {})}
    monkeypatch.setitem(sys.modules, "peerbench", stub)
    monkeypatch.setenv("SEQGEN", "seqgen")
    namespace = {"__file__": str(PLUGIN), "__name__": "bench_plugin"}
    exec(compile(PLUGIN.read_text(encoding="utf-8"), str(PLUGIN), "exec"), namespace)
    return namespace["SYSTEMS"], data


def run_seqgen(command: list[str], log: Path) -> None:
    """Run a plugin command in-process and write its output where the harness keeps logs."""
    assert command[0] == "seqgen"
    result = CliRunner().invoke(main, command[1:])
    assert result.exit_code == 0, (result.output, result.exception)
    log.write_text(result.output, encoding="utf-8")


def test_one_epoch_of_sentence_batches_then_decoding(
    harness: tuple[dict, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    systems, data = harness
    seqgen = systems["seqgen"]
    run = tmp_path / "runs" / "seqgen" / "speed_r0"
    command = seqgen.train_cmd(str(run), str(data / "sp" / "train"), None, one_epoch=True)
    assert command[command.index("train.max_steps=3") - 1] == "--set"  # 130 pairs / 64
    command += ["--set", "model.embedding_size=8", "--set", "model.encoder_hidden_size=8"]
    command += ["--set", "model.decoder_hidden_size=8"]
    run_seqgen(command, tmp_path / "train.log")
    parsed = seqgen.parse_train_log(str(tmp_path / "train.log"))
    assert parsed["steps"] == 3 and parsed["loop_s"] > 0
    checkpoint = seqgen.checkpoint(str(run))

    out = tmp_path / "out.pieces"
    command, stdin, stdout = seqgen.decode_cmd(
        str(run), checkpoint, str(data / "sp" / "val.de"), str(out), 5, 64, 100
    )
    assert stdin is None and stdout is None
    run_seqgen(command, tmp_path / "decode.log")
    assert len(out.read_text(encoding="utf-8").splitlines()) == 10
    assert seqgen.parse_decode_log(str(tmp_path / "decode.log"))["own_s"] > 0

    onnx = systems["seqgen-onnx"]
    assert onnx.checkpoint(str(tmp_path / "runs" / "seqgen-onnx" / "speed_r0")) == checkpoint
    with pytest.raises(RuntimeError, match="train 'seqgen'"):
        onnx.train_cmd(str(run), str(data / "sp" / "train"), 10, one_epoch=False)
    # The plugin exports in a subprocess of the harness's environment: run it in-process here.
    exports = []

    def exported(command: list[str], **_: object) -> None:
        exports.append(command)
        run_seqgen(command, tmp_path / "export.log")

    monkeypatch.setattr(subprocess, "run", exported)
    int8 = systems["seqgen-onnx-int8"]
    int8_bundle = Path(int8.model_path(checkpoint))
    assert int8_bundle.name == "onnx-int8-bundle"
    assert json.loads((int8_bundle / "manifest.json").read_text())["matmul"] == "int8"
    # Once per harness run, whatever bundle an earlier run left there (it may be older code).
    assert int8.model_path(checkpoint) == str(int8_bundle) and len(exports) == 1
    assert type(int8)().model_path(checkpoint) == str(int8_bundle) and len(exports) == 2


def test_the_no_feed_system_sets_the_recipe_without_input_feeding(
    harness: tuple[dict, Path], tmp_path: Path
):
    systems, data = harness
    plain = systems["seqgen"].train_cmd(str(tmp_path), str(data / "sp" / "train"), 7, False)
    no_feed = systems["seqgen-no-feed"].train_cmd(
        str(tmp_path), str(data / "sp" / "train"), 7, False
    )
    assert no_feed == [*plain, "--set", "model.input_feeding=false"]


def test_missing_checkpoint_and_unparsable_logs(harness: tuple[dict, Path], tmp_path: Path):
    seqgen = harness[0]["seqgen"]
    with pytest.raises(FileNotFoundError):
        seqgen.checkpoint(str(tmp_path / "nothing"))
    log = tmp_path / "empty.log"
    log.write_text("killed\n", encoding="utf-8")
    assert seqgen.parse_train_log(str(log)) == {"loop_s": None, "steps": 0}
    assert seqgen.parse_decode_log(str(log)) == {}
