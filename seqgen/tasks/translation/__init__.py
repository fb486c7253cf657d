"""Translation: an attentional encoder-decoder RNN (``seqgen translate``).

The network is :class:`~seqgen.tasks.translation.model.EncoderDecoder`; the pipeline a user
holds is :class:`~seqgen.tasks.translation.pipeline.Translator`, on PyTorch or ONNX Runtime.
"""

from __future__ import annotations

from seqgen.task import Task
from seqgen.tasks.translation.config import (
    EncoderDecoderConfig,
    TranslationDataConfig,
    TranslationDecodingConfig,
    TranslationTokenizerConfig,
    TranslationTrainConfig,
)

# Each side's tokenizer file; a joint vocabulary (the same tokenizer on both sides) is
# written once, as JOINT_TOKENIZER_FILE, which both manifest entries name. Readers follow
# the manifest's names, so bundles with two files (older seqgen) load as before.
TOKENIZER_FILES = {"source": "source_tokenizer.json", "target": "target_tokenizer.json"}
SENTENCEPIECE_FILES = {"source": "source.model", "target": "target.model"}
JOINT_TOKENIZER_FILE = "tokenizer.json"
JOINT_SENTENCEPIECE_FILE = "tokenizer.model"
# output_rows: a shortlisted model's only (bundle format 4); select last (open_graphs)
GRAPH_FILES = {
    "encoder": "encoder.onnx",
    "step": "step.onnx",
    "output_rows": "output_rows.onnx",
    "select": "select.onnx",
}

TASK = Task(
    name="translation",
    title="translator",
    command="translate",
    sections={
        "data": TranslationDataConfig,
        "tokenizer": TranslationTokenizerConfig,
        "model": EncoderDecoderConfig,
        "train": TranslationTrainConfig,
        "decoding": TranslationDecodingConfig,
    },
    graph_files=GRAPH_FILES,
    optional_graphs=("output_rows",),
    tokenizer_files=tuple(TOKENIZER_FILES.values()),
    bundled_models={"multi30k-de-en": "multi30k-de-en", "multi30k-en-de": "multi30k-en-de"},
    hooks=Task.hooks_in(
        __name__,
        trainer="TranslationTrainer",
        command="cli:translate",
        check_recipe="config:check_recipe",
        ensemble="ensemble:ensemble",
    ),
)
