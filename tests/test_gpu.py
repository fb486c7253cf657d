"""CUDA paths: mixed-precision training steps and decoding on the GPU (skipped without CUDA)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqgen.checkpoints import bundled_model_path, load_checkpoint_pipeline
from seqgen.decoding.search import greedy_search
from seqgen.tasks.generation.config import LanguageModelConfig, LanguageModelTrainConfig
from seqgen.tasks.generation.model import LanguageModel
from seqgen.tasks.generation.torch_step import LanguageModelStep
from seqgen.tasks.translation.torch_step import TranslatorStep
from seqgen.training.device import autocast, resolve_device

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def test_mixed_precision_step_and_gpu_decoding_match_cpu_greedy() -> None:
    torch.manual_seed(0)
    config = LanguageModelConfig(embedding_size=16, hidden_size=32, num_layers=2, dropout=0.0)
    model = LanguageModel(config, 20)
    device = resolve_device("cuda")
    gpu_model = LanguageModel(config, 20).to(device)
    gpu_model.load_state_dict(model.state_dict())
    optimizer = torch.optim.AdamW(gpu_model.parameters(), lr=1e-3)
    token_ids = torch.randint(0, 20, (4, 16), device=device)
    with autocast(device, enabled=LanguageModelTrainConfig().mixed_precision):
        logits, _ = gpu_model(token_ids)
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), token_ids.flatten())
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)

    gpu_model.load_state_dict(model.state_dict())
    results = []
    for step_model in (model, gpu_model):
        step_function = LanguageModelStep(step_model)
        state, first = step_function.start([[2, 5, 6], [2, 7]])
        hypotheses = greedy_search(step_function, state, first, max_new_tokens=10)
        results.append([h.tokens for h in hypotheses])
    assert results[0] == results[1]
    assert np.isfinite([h for h in hypotheses[0].token_log_probs]).all()


def test_bundled_translator_decodes_on_cuda_as_on_cpu() -> None:
    sentences = [
        "Ein Mann fährt mit dem Fahrrad.",
        "Zwei Hunde spielen im Schnee.",
        "Eine Frau mit einem roten Hut liest ein Buch am Strand.",
    ]
    path = bundled_model_path("translation")
    cpu = load_checkpoint_pipeline(path, kind="translation", device="cpu")
    gpu = load_checkpoint_pipeline(path, kind="translation", device="cuda")
    assert gpu.device.type == "cuda"
    for beam_size in (1, 5):
        expected = cpu.translate(sentences, beam_size=beam_size)
        assert gpu.translate(sentences, beam_size=beam_size) == expected
        assert all(expected)


def test_cuda_graphs_decode_as_the_plain_step() -> None:
    sentences = [
        "Ein Mann fährt mit dem Fahrrad.",
        "Zwei Hunde spielen im Schnee.",
        "Eine Frau mit einem roten Hut liest ein Buch am Strand.",
        "Kinder.",
        "Ein älterer Mann sitzt auf einer Bank und füttert Tauben im Park.",
    ]
    translator = load_checkpoint_pipeline(
        bundled_model_path("translation"), kind="translation", device="cuda"
    )
    graphed = translator.step_function
    assert isinstance(graphed, TranslatorStep) and graphed._graphs is not None
    translator.step_function = TranslatorStep(graphed.model, cuda_graphs=False)
    expected = {b: translator.translate(sentences, beam_size=b, batch_size=3) for b in (1, 5)}
    translator.step_function = graphed
    for beam_size in (1, 5, 5):  # the second beam-5 call replays the graphs it captured
        found = translator.translate(sentences, beam_size=beam_size, batch_size=3)
        assert found == expected[beam_size]
    assert graphed._graphs.by_candidates  # the narrowed steps went through graphs
    made = graphed._graphs.graph_count
    translator.translate(sentences, beam_size=5, batch_size=3)
    assert graphed._graphs.graph_count == made
