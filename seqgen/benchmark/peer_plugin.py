"""seqgen as a system of the peer benchmark harness (``../shared/bench/peers``).

Not imported by seqgen: the harness executes this file (``--plugin`` or ``BENCH_PLUGINS``)
with its own directory on ``sys.path``, so ``peerbench`` imports. From the repository root::

    export PEERS=<the harness's work folder> SEQGEN_DATA_DIR=<the corpus mirror>
    H=<the harness's folder>
    P=seqgen/benchmark/peer_plugin.py
    bash $H/speed_train.sh --plugin $P --systems onmt,seqgen --repeats 3
    bash $H/speed_decode.sh --plugin $P --systems onmt,seqgen,seqgen-onnx --repeats 5

Three systems share one training (``seqgen``, the PyTorch backend; ``seqgen-onnx``, its
checkpoint exported once to an ONNX bundle, before any timing; ``seqgen-onnx-int8``, to an
int8 bundle). They train ``recipes/peer-comparison.toml``: the harness's comparison model
on its piece files, batches of 64 sentences. ``seqgen-no-feed`` trains and decodes the same
recipe without input feeding. The seqgen command is ``$SEQGEN`` when set, else ``seqgen`` on
the PATH.
"""

import os
import re
import shutil
import subprocess

from peerbench import DATA, System, base_env, count_pieces

HERE = os.path.dirname(os.path.abspath(__file__))
RECIPE = os.path.join(HERE, "..", "..", "recipes", "peer-comparison.toml")
BATCH_SENTENCES = 64


def seqgen_command() -> str:
    found = os.environ.get("SEQGEN") or shutil.which("seqgen")
    if not found:
        raise FileNotFoundError("no seqgen command: pip install -e . or set SEQGEN=/path/seqgen")
    return found


class SeqGen(System):
    name = "seqgen"
    version = "dev"
    backend = "torch"
    model = {}  # --set overrides of the recipe's [model]

    def env(self):
        return base_env()  # 2 threads, no CUDA: the peers' conditions

    def train_cmd(self, run_dir, train_prefix, steps, one_epoch, bucket=None):
        if one_epoch:  # one pass: every sentence once, in batches of 64
            pairs = count_pieces(f"{train_prefix}.{self.src}")["lines"]
            steps = -(-pairs // BATCH_SENTENCES)
        sets = {
            "data.train_source": f"{train_prefix}.{self.src}",
            "data.train_target": f"{train_prefix}.{self.tgt}",
            "data.validation_source": os.path.join(DATA, "sp", f"val.{self.src}"),
            "data.validation_target": os.path.join(DATA, "sp", f"val.{self.tgt}"),
            "train.max_steps": int(steps),
            **{f"model.{key}": value for key, value in self.model.items()},
        }
        command = [seqgen_command(), "train", RECIPE, "--output", run_dir, "--quiet"]
        for key, value in sets.items():
            command += ["--set", f"{key}={value}"]
        return command

    def parse_train_log(self, log_path):
        with open(log_path, errors="replace") as log:
            found = re.findall(r"training loop: (\d+) steps in ([\d.]+) s", log.read())
        if not found:
            return {"loop_s": None, "steps": 0}
        steps, seconds = found[-1]
        return {"loop_s": float(seconds), "steps": int(steps)}

    def checkpoint(self, run_dir):
        path = os.path.join(run_dir, "last.safetensors")
        if not os.path.isfile(path):
            raise FileNotFoundError(path)
        return path

    def decode_cmd(self, run_dir, ckpt, src_path, out_path, beam, batch, max_len):
        command = [
            seqgen_command(), "translate", "--model", self.model_path(ckpt),
            "--input", src_path, "--output", out_path, "--beam-size", str(beam),
            "--batch-size", str(batch), "--max-length", str(max_len),
            "--device", "cpu", "--backend", self.backend, "--timing",
        ]  # fmt: skip
        return command, None, None

    def model_path(self, ckpt):
        return ckpt

    def parse_decode_log(self, log_path):
        with open(log_path, errors="replace") as log:
            found = re.findall(r"decode: ([\d.]+) s", log.read())
        return {"own_s": float(found[-1])} if found else {}


class SeqGenOnnx(SeqGen):
    """The same checkpoint, exported to an ONNX bundle once per harness run, before its first
    timing, and run by ONNX Runtime."""

    name = "seqgen-onnx"
    backend = "onnx"
    export_options = []  # extra `seqgen export` flags
    bundle_name = "onnx-bundle"

    def __init__(self):
        super().__init__()
        self._exported = set()  # the bundles this harness run has written

    def train_cmd(self, run_dir, train_prefix, steps, one_epoch, bucket=None):
        raise RuntimeError(f"{self.name} decodes seqgen's checkpoints; train 'seqgen' instead")

    def checkpoint(self, run_dir):
        # runs/seqgen-onnx/<run> -> the checkpoint that 'seqgen' trained in runs/seqgen/<run>
        parent, run = os.path.split(run_dir)
        return super().checkpoint(os.path.join(os.path.dirname(parent), "seqgen", run))

    def model_path(self, ckpt):
        # Exported anew once per harness run (this object's life), then reused by every
        # repeat: a bundle an earlier run left beside the checkpoint may hold the graphs of
        # older code, and timing it would measure that code.
        bundle = os.path.join(os.path.dirname(ckpt), self.bundle_name)
        if bundle not in self._exported:
            command = [seqgen_command(), "export", "--model", ckpt, "--output", bundle]
            command += self.export_options
            subprocess.run(command, check=True, env=self.env(), stdout=subprocess.DEVNULL)
            self._exported.add(bundle)
        return bundle


class SeqGenOnnxInt8(SeqGenOnnx):
    """The same bundle with int8 matrix products (``seqgen export --int8``)."""

    name = "seqgen-onnx-int8"
    export_options = ["--int8"]
    bundle_name = "onnx-int8-bundle"


class SeqGenNoFeed(SeqGen):
    """The same sizes without input feeding: the decoder reads the whole target in one fused
    RNN call in training (the issue's "measure BLEU and speed both ways")."""

    name = "seqgen-no-feed"
    model = {"input_feeding": "false"}


SYSTEMS = {
    system.name: system for system in (SeqGen(), SeqGenOnnx(), SeqGenOnnxInt8(), SeqGenNoFeed())
}
