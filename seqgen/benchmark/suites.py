"""The measurements of ``seqgen bench``, each returning :class:`Result` rows.

Models and batch sizes come from the recipes stored in the checkpoints (by default the
bundled ones, whose recipes are ``recipes/shakespeare-char-lstm-long.toml`` and
``recipes/multi30k-de-en.toml``), with ``--set`` overrides on top. Training runs real
optimizer steps of the real trainers on the real corpora, in a temporary run folder.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from seqgen.benchmark import flops
from seqgen.benchmark.measure import CountingStep, median_rate
from seqgen.data.corpora import load_parallel
from seqgen.errors import SeqgenError
from seqgen.recipes import apply_overrides, recipe_from_dict
from seqgen.text import tokenizer_from_dict
from seqgen.training.checkpoint import load_checkpoint

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    """One measured figure: ``value`` in ``unit``, and its FLOP/s where counted."""

    name: str
    value: float
    unit: str
    flops_per_second: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _recipe(checkpoint_path: Path, device: torch.device, overrides: Sequence[str]) -> Any:
    checkpoint = load_checkpoint(checkpoint_path)
    values = apply_overrides(checkpoint.recipe, [f"train.device={device}", *overrides])
    return checkpoint, recipe_from_dict(values)


def generator_training(
    checkpoint_path: Path,
    device: torch.device,
    *,
    steps: int,
    repeats: int,
    overrides: Sequence[str],
    data_dir: str | None,
) -> Result:
    """Optimizer steps of the language-model trainer: target tokens per second."""
    from seqgen.tasks.generation.training import LanguageModelTrainer

    _, recipe = _recipe(checkpoint_path, device, overrides)
    with tempfile.TemporaryDirectory() as folder:
        trainer = LanguageModelTrainer(
            recipe, Path(folder) / "run", resume=False, data_dir=data_dir
        )
        trainer.model.train()
        rate, _ = median_rate(
            lambda: sum(trainer.train_step()[1] for _ in range(steps)), repeats=repeats
        )
        per_token = flops.language_model_token(recipe.model, trainer.tokenizer.vocab_size)
    shape = f"batch {recipe.train.batch_size} x {recipe.train.sequence_length}"
    return Result(
        "generator training",
        rate,
        "tokens/s",
        rate * per_token * flops.TRAINING_PASSES,
        {"model": _describe(recipe.model), "batch": shape},
    )


def translator_training(
    checkpoint_path: Path,
    device: torch.device,
    *,
    steps: int,
    repeats: int,
    overrides: Sequence[str],
    data_dir: str | None,
) -> Result:
    """Optimizer steps of the translation trainer: source + target pieces per second."""
    from seqgen.tasks.translation.training import TranslationTrainer

    checkpoint, recipe = _recipe(checkpoint_path, device, overrides)
    tokenizers = {side: tokenizer_from_dict(data) for side, data in checkpoint.tokenizer.items()}
    with tempfile.TemporaryDirectory() as folder:
        trainer = TranslationTrainer(
            recipe, Path(folder) / "run", resume=False, data_dir=data_dir, tokenizers=tokenizers
        )
        trainer.model.train()
        rate, _ = median_rate(
            lambda: sum(trainer.train_step()[1] for _ in range(steps)), repeats=repeats
        )
        sources = sum(len(s) + 1 for s in trainer.batches.sources)  # EOS too
        targets = sum(len(t) + 1 for t in trainer.batches.targets)
    vocab = tokenizers["target"].vocab_size
    mean_source = sources / len(trainer.batches.sources)
    per_piece = (
        sources * flops.encoder_token(recipe.model)
        + targets * flops.decoder_token(recipe.model, vocab, mean_source)
    ) / (sources + targets)
    return Result(
        "translator training",
        rate,
        "pieces/s",
        rate * per_piece * flops.TRAINING_PASSES,
        {"model": _describe(recipe.model), "batch": f"{recipe.train.batch_tokens} tokens"},
    )


def translation_decoding(
    checkpoint_path: Path,
    device: torch.device,
    *,
    sentences: int | None,
    repeats: int,
    overrides: Sequence[str],
    data_dir: str | None,
) -> list[Result]:
    """test_2016_flickr translated by both backends (and, on the CPU, an int8 bundle, whose
    rows count the same multiply-adds as float32), greedy and beam 5, in batches of each
    backend's default size (``Translator.default_batch_size``: the recipe's, at least 1,000
    sentences on CUDA) or of ``decoding.batch_size`` where ``overrides`` set it.

    On CUDA, ONNX Runtime runs on CUDA where its CUDA provider is usable, else on the CPU,
    and the rows say which."""
    from seqgen.checkpoints import load_checkpoint_pipeline

    _, recipe = _recipe(checkpoint_path, device, overrides)
    # Each backend's own default (at least 1,000 sentences on CUDA) unless overridden.
    named = apply_overrides({}, overrides).get("decoding", {})
    batch_override = recipe.decoding.batch_size if "batch_size" in named else None
    reference = load_checkpoint_pipeline(checkpoint_path, kind="translation", device=str(device))
    corpus = reference.recipe.data.corpus or "multi30k:de-en"
    lines, _ = load_parallel(corpus, "test_2016_flickr", data_dir=data_dir)
    lines = lines[:sentences] if sentences else lines
    backends = both_backends(reference, checkpoint_path, device)
    if device.type == "cpu":  # int8 bundles run on the CPU only
        backends.update(_int8_backend(checkpoint_path, reference.task))
    sources = reference.encode_sources(lines)
    model = reference.recipe.model
    vocab = reference.target_tokenizer.vocab_size
    bench = _DecodingBench(
        lines=lines,
        source_tokens=sum(len(s) + 1 for s in sources if s),
        model=model,
        target_tokenizer=reference.target_tokenizer,
        gate_table=flops.uses_gate_table(model.cell, vocab, model.decoder_hidden_size),
        batch_size=batch_override,
        repeats=repeats,
        device=device,
    )
    return [
        bench.measure(backend, translator, beam)
        for backend, translator in backends.items()
        for beam in (1, 5)
    ]


@dataclass(frozen=True)
class _DecodingBench:
    """One test set's decoding, timed and counted the same way for every backend and beam."""

    lines: list[str]
    source_tokens: int  # pieces the encoder reads, EOS included
    model: Any  # the recipe's model section
    target_tokenizer: Any
    gate_table: bool  # whether the model's size allows a gate table
    batch_size: int | None  # None: each backend's default
    repeats: int
    device: torch.device

    def measure(self, backend: str, translator: Any, beam: int) -> Result:
        """Translate the lines ``repeats`` times (after a warm-up); the median rate, with
        the FLOP/s of the steps the search asked for."""
        vocab = self.target_tokenizer.vocab_size
        counting = CountingStep(translator.step_function, vocab_size=vocab)
        translator.step_function = counting
        outputs: list[str] = []

        def run() -> int:
            outputs[:] = translator.translate(
                self.lines, beam_size=beam, batch_size=self.batch_size
            )
            return len(self.lines)

        try:
            rate, seconds = median_rate(run, repeats=self.repeats)
        finally:
            translator.step_function = counting.inner
        runs = self.repeats + 1  # the warm-up too
        # PyTorch gathers from a gate table on the CPU only (torch_step.GateTable)
        gate_table = self.gate_table and (backend != "torch" or self.device.type == "cpu")
        per_row = flops.decoder_token(
            self.model, 0, self.source_tokens / len(self.lines), gate_table=gate_table
        )
        work = counting.counts["rows"] / runs * per_row
        work += counting.counts["scored"] / runs * flops.output_token(self.model)
        work += self.source_tokens * flops.encoder_token(self.model)
        tokens = sum(len(self.target_tokenizer.encode(o)) + 1 for o in outputs)
        label = "greedy" if beam == 1 else f"beam {beam}"
        details = {
            "tokens_per_second": tokens / seconds,
            "sentences": len(self.lines),
            "seconds": seconds,
            "batch_size": self.batch_size or translator.default_batch_size,
            "steps": counting.counts["steps"] / runs,  # decoder calls per run
        }
        return Result(
            f"translation {label}, {backend}", rate, "sentences/s", work / seconds, details
        )


def both_backends(reference: Any, checkpoint_path: Path, device: torch.device) -> dict[str, Any]:
    """``reference`` (the PyTorch pipeline) as ``torch``, and its checkpoint exported once into
    the cache and opened on ONNX Runtime (:func:`_onnx_backend`), where the export works."""
    from seqgen.bundles.reader import load_bundle
    from seqgen.loading import exported_bundle

    backends = {"torch": reference}
    try:
        bundle = exported_bundle(checkpoint_path, kind=reference.task)
    except SeqgenError as error:  # e.g. a torch whose ONNX exporter seqgen does not support
        logger.warning("no ONNX Runtime rows: %s", error)
    else:
        backends.update(_onnx_backend(bundle, device, load_bundle))
    return backends


def _int8_backend(checkpoint_path: Path, kind: str) -> dict[str, Any]:
    """The checkpoint's int8 bundle (exported once into the cache) on the CPU, named
    ``onnx int8``; nothing where the export fails."""
    from seqgen.bundles.reader import load_bundle
    from seqgen.loading import exported_bundle

    try:
        bundle = exported_bundle(checkpoint_path, kind=kind, int8=True)
    except SeqgenError as error:
        logger.warning("no int8 rows: %s", error)
        return {}
    return {"onnx int8": load_bundle(bundle, device="cpu")}


def _onnx_backend(bundle: Path, device: torch.device, load_bundle: Any) -> dict[str, Any]:
    """The bundle opened on ``device``'s kind, named ``onnx``; on CUDA, ``auto`` falls back to
    the CPU where ONNX Runtime's CUDA provider is not usable (its CPU build), and the name
    then says so."""
    translator = load_bundle(bundle, device="auto" if device.type == "cuda" else "cpu")
    same = translator.device == device.type
    return {"onnx" if same else f"onnx on {translator.device}": translator}


def generator_sampling(
    checkpoint_path: Path, device: torch.device, *, rows: int, new_tokens: int, repeats: int
) -> Result:
    """Sampling ``rows`` continuations of ``new_tokens`` at once (PyTorch)."""
    from seqgen.checkpoints import load_checkpoint_pipeline

    generator = load_checkpoint_pipeline(checkpoint_path, kind="generation", device=str(device))

    def run() -> int:
        generator.generate(
            "ROMEO:", strategy="sample", num_samples=rows, max_new_tokens=new_tokens, seed=0
        )
        return rows * new_tokens

    rate, _ = median_rate(run, repeats=repeats)
    config, vocab = generator.model.config, generator.tokenizer.vocab_size
    on_cpu = generator.device.type == "cpu"  # PyTorch's gate table is a CPU path
    gate_table = on_cpu and flops.uses_gate_table(config.cell, vocab, config.hidden_size)
    per_token = flops.language_model_token(config, vocab, gate_table=gate_table)
    return Result(
        "generator sampling, torch",
        rate,
        "tokens/s",
        rate * per_token,
        {"rows": rows, "new_tokens": new_tokens},
    )


def _describe(config: Any) -> str:
    fields = ("cell", "num_layers", "hidden_size", "encoder_hidden_size", "decoder_hidden_size")
    return ", ".join(f"{f} {getattr(config, f)}" for f in fields if hasattr(config, f))
