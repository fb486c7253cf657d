"""The language model and its PyTorch step adapter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqgen.decoding.priming import group_by_length
from seqgen.decoding.torch_step import GateTable
from seqgen.layers.cells import GATE_TABLE_LIMIT
from seqgen.tasks.generation.config import LanguageModelConfig
from seqgen.tasks.generation.model import LanguageModel
from seqgen.tasks.generation.torch_step import LanguageModelStep

VOCAB = 11


def make_model(cell: str, *, tie: bool = False, layers: int = 2) -> LanguageModel:
    torch.manual_seed(0)
    size = 12 if tie else 8
    config = LanguageModelConfig(
        cell=cell,
        embedding_size=size,
        hidden_size=12,
        num_layers=layers,
        dropout=0.1,
        tie_weights=tie,
    )
    return LanguageModel(config, VOCAB).eval()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_forward_over_a_sequence_equals_stepping_one_token_at_a_time(cell: str) -> None:
    model = make_model(cell)
    token_ids = torch.randint(0, VOCAB, (3, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole, whole_state = model(token_ids)
        state = None
        steps = []
        for t in range(token_ids.shape[1]):
            logits, state = model(token_ids[:, t : t + 1], state)
            steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), whole, rtol=1e-5, atol=1e-6)
    for name in model.state_names:
        torch.testing.assert_close(state[name], whole_state[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_state_is_batch_major_with_named_entries(cell: str) -> None:
    model = make_model(cell, layers=3)
    _, state = model(torch.zeros((5, 2), dtype=torch.long))
    assert set(state) == ({"hidden", "cell"} if cell == "lstm" else {"hidden"})
    assert all(tensor.shape == (5, 3, 12) for tensor in state.values())


def test_tied_weights_share_one_matrix() -> None:
    model = make_model("lstm", tie=True)
    assert model.output.weight.data_ptr() == model.embedding.weight.data_ptr()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_step_adapter_matches_forward(cell: str) -> None:
    """start + step gives the log-softmax that forward gives at the last prompt position."""
    model = make_model(cell)
    step_function = LanguageModelStep(model)
    prompts = [[2, 5, 6, 7], [2, 9], [2], [2, 3, 4, 5]]  # uneven lengths, one bare BOS
    state, first_tokens = step_function.start(prompts)
    log_probs, _ = step_function.step(first_tokens, state)
    assert log_probs.shape == (4, VOCAB) and log_probs.dtype == np.float32
    for row, prompt in enumerate(prompts):
        with torch.no_grad():
            logits, _ = model(torch.tensor([prompt]))
        expected = torch.log_softmax(logits[0, -1], dim=-1).numpy()
        np.testing.assert_allclose(log_probs[row], expected, rtol=1e-5, atol=1e-5)


def test_step_adapter_select_gathers_rows_without_mutating() -> None:
    step_function = LanguageModelStep(make_model("lstm"))
    state, _ = step_function.start([[2, 3], [2, 4], [2, 5]])
    before = {k: v.clone() for k, v in state.items()}
    chosen = step_function.select(state, np.array([2, 0, 0]))
    for name in state:
        torch.testing.assert_close(state[name], before[name])
        torch.testing.assert_close(chosen[name][0], state[name][2])
        torch.testing.assert_close(chosen[name][1], state[name][0])
        assert chosen[name].shape[0] == 3


def test_step_does_not_mutate_its_input_state() -> None:
    step_function = LanguageModelStep(make_model("gru"))
    state, first = step_function.start([[2, 3]])
    before = {k: v.clone() for k, v in state.items()}
    step_function.step(first, state)
    for name in state:
        torch.testing.assert_close(state[name], before[name])


def test_group_by_length() -> None:
    assert group_by_length([3, 1, 3, 0]) == [(0, [3]), (1, [1]), (3, [0, 2])]
    assert group_by_length([]) == []


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers", [1, 2])
def test_step_equals_forward_on_one_position_with_and_without_the_gate_table(
    cell: str, layers: int
) -> None:
    model = make_model(cell, layers=layers).eval()
    torch.manual_seed(1)
    state = {name: torch.randn_like(t) for name, t in model.initial_state(5).items()}
    tokens = torch.randint(0, model.vocab_size, (5,))
    with torch.no_grad():
        expected, expected_state = model(tokens[:, None], state)
        plain, plain_state = model.step(tokens, state)
        gathered, gathered_state = model.step(tokens, state, model.embedding_gates())
    for logits, new_state in ((plain, plain_state), (gathered, gathered_state)):
        torch.testing.assert_close(logits, expected[:, 0], rtol=1e-5, atol=1e-5)
        for name in model.state_names:
            assert new_state[name].shape == state[name].shape
            torch.testing.assert_close(new_state[name], expected_state[name], rtol=1e-5, atol=1e-5)


def test_generation_steps_use_the_gate_table_of_the_current_weights() -> None:
    model = make_model("lstm")
    step = LanguageModelStep(model)
    state, tokens = step.start([[1, 4, 5], [1, 6]])
    first, _ = step.step(tokens, state)
    with torch.no_grad():
        model.embedding.weight.mul_(3.0)  # in place, as an optimizer step
        expected, _ = model(torch.from_numpy(tokens)[:, None], dict(state))
    second, _ = step.step(tokens, state)  # the table is rebuilt for the new weights
    np.testing.assert_allclose(second, torch.log_softmax(expected[:, 0], -1).numpy(), atol=1e-5)
    assert not np.allclose(first, second)


def test_the_gate_table_is_built_on_the_cpu_only() -> None:
    # CUDA's fused cells take a vector bias, not a table's (rows, gates); "meta" stands in.
    model = make_model("lstm")
    assert GateTable(model.embedding, model.rnn).get(GATE_TABLE_LIMIT) is not None
    model.to("meta")
    assert GateTable(model.embedding, model.rnn).get(GATE_TABLE_LIMIT) is None
