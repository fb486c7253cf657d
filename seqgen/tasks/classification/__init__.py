"""Classification: a many-to-one recurrent network names a text's class (``seqgen classify``).

The network is :class:`~seqgen.tasks.classification.model.SequenceClassifier`; the pipeline a
user holds is :class:`~seqgen.tasks.classification.pipeline.Classifier`, on PyTorch or ONNX
Runtime.
"""

from __future__ import annotations

from seqgen.task import Task
from seqgen.tasks.classification.config import (
    ClassificationDataConfig,
    ClassificationDecodingConfig,
    ClassificationTrainConfig,
    ClassifierConfig,
)
from seqgen.text import TokenizerConfig

TOKENIZER_FILE = "tokenizer.json"
GRAPH_FILES = {"classify": "classify.onnx"}

TASK = Task(
    name="classification",
    title="classifier",
    command="classify",
    sections={
        "data": ClassificationDataConfig,
        "tokenizer": TokenizerConfig,
        "model": ClassifierConfig,
        "train": ClassificationTrainConfig,
        "decoding": ClassificationDecodingConfig,
    },
    graph_files=GRAPH_FILES,
    tokenizer_files=(TOKENIZER_FILE,),
    bundled_models={"sentiment": "sst2-sentiment", "spam": "sms-spam"},
    hooks=Task.hooks_in(
        __name__,
        trainer="ClassificationTrainer",
        command="cli:classify",
        check_recipe="config:check_recipe",
    ),
)
