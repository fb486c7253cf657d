"""Generation: a recurrent language model that continues a prompt (``seqgen generate``).

The network is :class:`~seqgen.tasks.generation.model.LanguageModel`; the pipeline a user
holds is :class:`~seqgen.tasks.generation.pipeline.Generator`, on PyTorch or ONNX Runtime.
"""

from __future__ import annotations

from seqgen.task import Task
from seqgen.tasks.generation.config import (
    GenerationDecodingConfig,
    LanguageModelConfig,
    LanguageModelTrainConfig,
    TextDataConfig,
)
from seqgen.text import TokenizerConfig

TOKENIZER_FILE = "tokenizer.json"
GRAPH_FILES = {"prime": "prime.onnx", "step": "step.onnx", "select": "select.onnx"}

TASK = Task(
    name="generation",
    title="generator",
    command="generate",
    sections={
        "data": TextDataConfig,
        "tokenizer": TokenizerConfig,
        "model": LanguageModelConfig,
        "train": LanguageModelTrainConfig,
        "decoding": GenerationDecodingConfig,
    },
    graph_files=GRAPH_FILES,
    tokenizer_files=(TOKENIZER_FILE,),
    bundled_models={"shakespeare-char": "shakespeare-char"},
    hooks=Task.hooks_in(__name__, trainer="LanguageModelTrainer", command="cli:generate"),
    aliases=("language_model",),  # the name of seqgen 0.1's checkpoints and bundles
)
