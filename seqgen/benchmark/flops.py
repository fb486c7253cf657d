"""Floating-point work of the models, counted from their sizes, and the device's peak.

Only matrix products are counted (2 FLOPs per multiply-add): they are nearly all of an RNN's
work, and the same count serves PyTorch and ONNX Runtime, which run the same products. A
training step costs about three forward passes (forward, and the two products of backward).
"""

from __future__ import annotations

import re
from pathlib import Path

from seqgen.cores import available_cores
from seqgen.tasks.generation.config import LanguageModelConfig
from seqgen.tasks.translation.config import EncoderDecoderConfig

GATES = {"lstm": 4, "gru": 3, "rnn": 1}
TRAINING_PASSES = 3
# Dense bf16 tensor-core peaks (FLOP/s), by a substring of torch.cuda.get_device_name().
GPU_PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12}


def _rnn_layer(cell: str, input_size: int, hidden_size: int) -> int:
    """FLOPs of one RNN layer for one token (input and recurrent products)."""
    return 2 * GATES[cell] * hidden_size * (input_size + hidden_size)


def uses_gate_table(cell: str, vocab_size: int, hidden_size: int) -> bool:
    """Whether decoding gathers the first layer's product over the embedding from a gate
    table (:mod:`seqgen.layers.cells`) instead of running it."""
    from seqgen.layers.cells import GATE_TABLE_LIMIT

    return vocab_size * GATES[cell] * hidden_size <= GATE_TABLE_LIMIT


def language_model_token(
    config: LanguageModelConfig, vocab_size: int, *, gate_table: bool = False
) -> int:
    """Forward FLOPs per token: the RNN layers and the output layer (``gate_table``: without
    the first layer's product over the embedding, which decoding gathers)."""
    first_input = 0 if gate_table else config.embedding_size
    flops = _rnn_layer(config.cell, first_input, config.hidden_size)
    deeper = _rnn_layer(config.cell, config.hidden_size, config.hidden_size)
    return flops + (config.num_layers - 1) * deeper + 2 * config.hidden_size * vocab_size


def encoder_token(config: EncoderDecoderConfig) -> int:
    """Forward FLOPs per source token: both directions of every layer, and the attention keys."""
    hidden = config.encoder_hidden_size
    flops = 2 * _rnn_layer(config.cell, config.embedding_size, hidden)
    flops += (config.encoder_layers - 1) * 2 * _rnn_layer(config.cell, 2 * hidden, hidden)
    if config.attention != "dot":  # keys: the memory projected once (general, bahdanau)
        flops += 2 * (2 * hidden) * config.decoder_hidden_size
    return flops


def decoder_token(
    config: EncoderDecoderConfig, vocab_size: int, source_length: float, *, gate_table: bool = False
) -> int:
    """Forward FLOPs per target token with attention over ``source_length`` positions
    (``gate_table``: without the first layer's product over the embedding)."""
    hidden, memory = config.decoder_hidden_size, 2 * config.encoder_hidden_size
    first_input = 0 if gate_table else config.embedding_size
    first_input += hidden if config.input_feeding else 0
    flops = _rnn_layer(config.cell, first_input, hidden)
    flops += (config.decoder_layers - 1) * _rnn_layer(config.cell, hidden, hidden)
    flops += int(2 * source_length * (hidden + memory))  # scores and the context
    flops += 2 * (memory + hidden) * hidden  # the attentional vector
    if config.tie_target_embeddings:
        flops += 2 * hidden * config.embedding_size
    return flops + output_token(config) * vocab_size


def output_token(config: EncoderDecoderConfig) -> int:
    """Forward FLOPs of the output layer per row and per scored token (a shortlist scores
    fewer than the vocabulary)."""
    tied = config.tie_target_embeddings
    return 2 * (config.embedding_size if tied else config.decoder_hidden_size)


def cpu_peak() -> tuple[float | None, str]:
    """This CPU's fp32 peak FLOP/s for the cores this process may use, and how it was found.

    From /proc/cpuinfo: cores x clock x FLOPs per cycle: two FMA units, each of 16 floats with
    AVX-512 (8 on AMD Zen 4, family 25, which runs AVX-512 on 256-bit units) or 8 with AVX2.
    None where the clock or the vector width is not known.
    """
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, "no /proc/cpuinfo"
    clock = re.search(r"cpu MHz\s*:\s*([\d.]+)", info)
    flags = re.search(r"flags\s*:(.*)", info)
    if not clock or not flags:
        return None, "clock or vector width unknown"
    family = re.search(r"cpu family\s*:\s*(\d+)", info)
    zen4 = "AuthenticAMD" in info and family is not None and family.group(1) == "25"
    avx512 = " avx512f" in flags.group(1)
    lanes = 8 if zen4 or (not avx512 and " avx2" in flags.group(1)) else 16 if avx512 else 0
    if not lanes:
        return None, "no AVX2 or AVX-512"
    cores = available_cores()
    per_cycle = 2 * 2 * lanes  # two FMA units, 2 FLOPs per lane each
    peak = cores * float(clock.group(1)) * 1e6 * per_cycle
    unit = "AVX-512" if avx512 else "AVX2"
    return (
        peak,
        f"{cores} cores x {float(clock.group(1)):.0f} MHz x {per_cycle} FLOP/cycle ({unit})",
    )


def gpu_peak(name: str) -> float | None:
    """The dense bf16 peak of a GPU named ``name``, where known."""
    return next((peak for key, peak in GPU_PEAKS.items() if key in name), None)


def classifier_token(config: object) -> int:
    """Forward FLOPs per token of a classifier: its recurrent layers, both directions (the
    output layer runs once per text and is left out)."""
    directions = 2 if config.bidirectional else 1  # type: ignore[attr-defined]
    total, input_size = 0, config.embedding_size  # type: ignore[attr-defined]
    for _ in range(config.num_layers):  # type: ignore[attr-defined]
        total += directions * _rnn_layer(config.cell, input_size, config.hidden_size)  # type: ignore[attr-defined]
        input_size = directions * config.hidden_size  # type: ignore[attr-defined]
    return total
