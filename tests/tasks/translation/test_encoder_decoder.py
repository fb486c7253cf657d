"""The translator: encoder, attention, decoder, and its PyTorch step adapter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from seqgen.data.parallel import pad_batch
from seqgen.decoding.beam import beam_search
from seqgen.decoding.search import greedy_search
from seqgen.decoding.torch_step import graphs_by_default
from seqgen.errors import ConfigError
from seqgen.tasks.translation.attention import make_attention
from seqgen.tasks.translation.config import EncoderDecoderConfig
from seqgen.tasks.translation.encoder import Encoder, reverse_index
from seqgen.tasks.translation.model import EncoderDecoder
from seqgen.tasks.translation.torch_step import TranslatorStep

SOURCE_VOCAB = 13
TARGET_VOCAB = 11
SOURCES = [[4, 5, 6, 7, 8, 3], [9, 10, 3], [11, 4, 12, 5, 3]]  # with EOS, uneven lengths
TARGETS_IN = [[2, 4, 5, 6, 7], [2, 8, 9], [2, 10, 4, 6]]  # BOS + target


def make_translator(**overrides: object) -> EncoderDecoder:
    torch.manual_seed(0)
    values = dict(
        embedding_size=8,
        encoder_hidden_size=6,
        decoder_hidden_size=12,
        encoder_layers=2,
        decoder_layers=2,
        dropout=0.1,
    )
    values.update(overrides)
    return EncoderDecoder(EncoderDecoderConfig(**values), SOURCE_VOCAB, TARGET_VOCAB).eval()


def source_batch() -> tuple[torch.Tensor, torch.Tensor]:
    return pad_batch(SOURCES)


def target_batch() -> torch.Tensor:
    return pad_batch(TARGETS_IN)[0]


def step_through(
    model: EncoderDecoder, source_ids, source_lengths, target_in, embedding_gates=None
) -> torch.Tensor:
    """Logits ``(rows, target_len, vocab)`` from start + one step per target position."""
    state = model.start(source_ids, source_lengths)
    all_logits = []
    for position in range(target_in.shape[1]):
        logits, state = model.step(target_in[:, position], state, None, embedding_gates)
        all_logits.append(logits)
    return torch.stack(all_logits, dim=1)


# Encoder


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_encoder_memory_does_not_depend_on_padding(cell: str) -> None:
    encoder = make_translator(cell=cell).encoder
    short = torch.tensor([[9, 10, 3]])
    batch, lengths = pad_batch([[4, 5, 6, 7, 8, 3], [9, 10, 3]])
    with torch.no_grad():
        alone, alone_final = encoder(short, torch.tensor([3]))
        together, together_final = encoder(batch, lengths)
    torch.testing.assert_close(together[1, :3], alone[0], rtol=0, atol=1e-6)
    assert torch.all(together[1, 3:] == 0)
    for name in alone_final:
        torch.testing.assert_close(together_final[name][1], alone_final[name][0], atol=1e-6, rtol=0)


def test_reverse_index_reverses_within_each_length() -> None:
    index = reverse_index(torch.tensor([3, 1, 4]), 4)
    assert index.tolist() == [[2, 1, 0, 3], [0, 1, 2, 3], [3, 2, 1, 0]]


def copy_into_encoder(reference: nn.RNNBase, encoder: Encoder) -> None:
    """Copy a bidirectional PyTorch RNN's weights into the encoder's per-direction RNNs."""
    for layer in range(reference.num_layers):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            forward_weight = getattr(reference, f"{name}_l{layer}")
            backward_weight = getattr(reference, f"{name}_l{layer}_reverse")
            getattr(encoder.forward_layers[layer], f"{name}_l0").data.copy_(forward_weight)
            getattr(encoder.backward_layers[layer], f"{name}_l0").data.copy_(backward_weight)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_reversed_within_length_equals_packed_bidirectional_rnn(cell: str) -> None:
    """The proof that the export-friendly backward pass is exact."""
    encoder = make_translator(cell=cell).encoder
    rnn_class = nn.LSTM if cell == "lstm" else nn.GRU
    reference = rnn_class(8, 6, num_layers=2, bidirectional=True, batch_first=True).eval()
    copy_into_encoder(reference, encoder)
    source_ids, source_lengths = source_batch()
    with torch.no_grad():
        memory, final = encoder(source_ids, source_lengths)
        embedded = encoder.embedding(source_ids)
        packed = nn.utils.rnn.pack_padded_sequence(
            embedded, source_lengths, batch_first=True, enforce_sorted=False
        )
        packed_outputs, reference_final = reference(packed)
        expected, _ = nn.utils.rnn.pad_packed_sequence(packed_outputs, batch_first=True)
    torch.testing.assert_close(memory, expected, rtol=1e-5, atol=1e-6)
    names = ("hidden", "cell") if cell == "lstm" else ("hidden",)
    states = reference_final if cell == "lstm" else (reference_final,)
    for name, state in zip(names, states, strict=True):
        # (layers * 2, rows, hidden): the top layer's forward and backward are the last two.
        top = torch.cat([state[-2], state[-1]], dim=-1)
        torch.testing.assert_close(final[name], top, rtol=1e-5, atol=1e-6)


# Attention


@pytest.mark.parametrize("kind", ["dot", "general", "bahdanau"])
def test_attention_masks_padding_and_batches_over_time(kind: str) -> None:
    torch.manual_seed(0)
    attention = make_attention(kind, query_size=12, memory_size=12)
    memory = torch.randn(3, 5, 12)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    queries = torch.randn(3, 4, 12)
    with torch.no_grad():
        keys = attention.precompute(memory)
        context, weights = attention(queries, keys, memory, mask)
        steps = [attention(queries[:, t], keys, memory, mask) for t in range(4)]
    assert context.shape == (3, 4, 12) and weights.shape == (3, 4, 5)
    assert torch.all(weights.masked_select(~mask.unsqueeze(1)) == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4))
    torch.testing.assert_close(torch.stack([c for c, _ in steps], 1), context)
    torch.testing.assert_close(torch.stack([w for _, w in steps], 1), weights)


# Decoder and translator


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("input_feeding", [True, False])
@pytest.mark.parametrize("attention", ["dot", "general", "bahdanau"])
def test_teacher_forcing_equals_start_and_step(
    attention: str, input_feeding: bool, cell: str
) -> None:
    hidden = 12  # the memory is 2 x 6 wide, so dot attention fits
    model = make_translator(
        attention=attention, input_feeding=input_feeding, cell=cell, decoder_hidden_size=hidden
    )
    source_ids, source_lengths = source_batch()
    target_in = target_batch()
    with torch.no_grad():
        forced = model(source_ids, source_lengths, target_in)
        stepped = step_through(model, source_ids, source_lengths, target_in)
        # Decoding's gate table: each token's share of the first layer's gates, gathered.
        gates = model.decoder.embedding_gates()
        with_table = step_through(model, source_ids, source_lengths, target_in, gates)
    assert forced.shape == (3, target_in.shape[1], TARGET_VOCAB)
    assert gates.shape == (TARGET_VOCAB, model.decoder.rnn.weight_ih_l0.shape[0])
    torch.testing.assert_close(forced, stepped, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(forced, with_table, rtol=1e-5, atol=1e-5)


def test_fused_path_equals_stepwise_path() -> None:
    model = make_translator(attention="general", input_feeding=False)
    assert model.decoder.is_fused
    source_ids, source_lengths = source_batch()
    with torch.no_grad():
        state = model.start(source_ids, source_lengths)
        embedded = model.decoder.embedding(target_batch())
        fused = model.decoder._forward_fused(embedded, state)
        stepwise = model.decoder._forward_stepwise(embedded, state)
    torch.testing.assert_close(fused, stepwise, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attention", ["general", "bahdanau"])
def test_step_log_probs_do_not_depend_on_batch_company(attention: str) -> None:
    step_function = TranslatorStep(make_translator(attention=attention))
    sources = [[4, 5, 6, 7, 8, 9], [10, 11], [12, 4, 5]]
    targets = [[4, 5, 6], [7, 8, 9], [10, 4, 6]]
    batch_state, tokens = step_function.start(sources)
    batch_steps = []
    for position in range(3):
        log_probs, batch_state = step_function.step(tokens, batch_state)
        batch_steps.append(log_probs)
        tokens = np.array([target[position] for target in targets], dtype=np.int64)
    for row, (source, target) in enumerate(zip(sources, targets, strict=True)):
        state, token = step_function.start([source])
        for position in range(3):
            log_probs, state = step_function.step(token, state)
            np.testing.assert_allclose(log_probs[0], batch_steps[position][row], atol=1e-6)
            token = np.array([target[position]], dtype=np.int64)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("input_feeding", [True, False])
def test_state_names_shapes_and_no_mutation(cell: str, input_feeding: bool) -> None:
    model = make_translator(cell=cell, input_feeding=input_feeding)
    source_ids, source_lengths = source_batch()
    with torch.no_grad():
        state = model.start(source_ids, source_lengths)
        before = {name: tensor.clone() for name, tensor in state.items()}
        _, new_state = model.step(torch.tensor([2, 2, 2]), state)
    expected = ["hidden"] + (["cell"] if cell == "lstm" else [])
    expected += (["feed"] if input_feeding else []) + ["memory", "keys", "source_mask"]
    assert list(state) == expected == list(model.state_names) == list(new_state)
    for name, tensor in state.items():
        assert torch.equal(tensor, before[name]), name
    assert state["hidden"].shape == (3, 2, 12)
    assert state["memory"].shape == (3, 6, 12) and state["keys"].shape == (3, 6, 12)
    assert state["source_mask"].dtype == torch.bool
    assert state["source_mask"].sum(1).tolist() == [6, 3, 5]
    if input_feeding:
        assert state["feed"].shape == (3, 12) and torch.all(state["feed"] == 0)


def test_translator_step_round_trip_with_select() -> None:
    model = make_translator()
    step_function = TranslatorStep(model)
    sources = [[4, 5, 6], [7, 8], []]  # an empty source is just EOS
    state, first_tokens = step_function.start(sources)
    assert first_tokens.tolist() == [2, 2, 2] and first_tokens.dtype == np.int64
    assert state["source_mask"].sum(1).tolist() == [4, 3, 1]
    log_probs, state = step_function.step(first_tokens, state)
    assert log_probs.shape == (3, TARGET_VOCAB) and log_probs.dtype == np.float32
    np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, rtol=1e-5)
    tensors = {name: t for name, t in state.items() if not name.startswith("_")}
    assert set(tensors) == set(model.state_names)
    before = {name: tensor.clone() for name, tensor in tensors.items()}
    # Two rows per sentence (a beam's layout): the source side once per sentence.
    chosen = step_function.select(state, np.array([2, 2, 0, 0, 1, 1]))
    for name, tensor in tensors.items():
        assert torch.equal(tensor, before[name])
        per_sentence = name in ("memory", "keys", "source_mask")
        assert chosen[name].shape[0] == (3 if per_sentence else 6)
        assert torch.equal(chosen[name][0], tensor[2]) and torch.equal(chosen[name][-1], tensor[1])
    next_log_probs, _ = step_function.step(np.array([4, 4, 5, 5, 6, 6]), chosen)
    expected, _ = step_function.step(np.array([5, 6, 4]), state)
    np.testing.assert_allclose(next_log_probs[::2], next_log_probs[1::2], atol=1e-6)
    np.testing.assert_allclose(next_log_probs[[2, 4, 0]], expected, atol=1e-6)
    # Reordering rows among the same sentences reuses the source side instead of copying it.
    swapped = step_function.select(chosen, np.array([1, 0, 2, 3, 5, 4]))
    assert swapped["memory"] is chosen["memory"] and swapped["keys"] is chosen["keys"]
    assert torch.equal(swapped["hidden"][4], chosen["hidden"][5])
    dropped = step_function.select(chosen, np.array([4, 5]))
    assert dropped["memory"].shape[0] == 1 and torch.equal(dropped["memory"][0], state["memory"][1])
    assert dropped["_embedding_gates"] is state["_embedding_gates"]  # per model, not per row
    # Rows in uneven groups: each row a sentence of its own, which any selection allows.
    uneven = step_function.select(state, np.array([2, 0, 0, 1]))
    assert uneven["memory"].shape[0] == 4 and torch.equal(uneven["keys"][1], uneven["keys"][2])
    uneven_log_probs, _ = step_function.step(np.array([4, 5, 5, 6]), uneven)
    np.testing.assert_allclose(uneven_log_probs[[1, 3, 0]], expected, atol=1e-6)


# Weight sharing, configuration and training


def test_tied_and_shared_embeddings() -> None:
    tied = make_translator(tie_target_embeddings=True, embedding_size=12)
    assert tied.decoder.output.weight is tied.decoder.embedding.weight
    projected = make_translator(tie_target_embeddings=True)  # 8 != 12: a projection first
    assert projected.decoder.output.weight is projected.decoder.embedding.weight
    with torch.no_grad():
        logits = projected(*source_batch(), target_batch())
    assert logits.shape == (3, 5, TARGET_VOCAB)
    torch.manual_seed(0)
    shared = EncoderDecoder(EncoderDecoderConfig(share_embeddings=True, embedding_size=8), 11, 11)
    assert shared.encoder.embedding is shared.decoder.embedding
    with pytest.raises(ConfigError, match="joint vocabulary"):
        EncoderDecoder(EncoderDecoderConfig(share_embeddings=True), 13, 11)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="model.attention"):
        EncoderDecoderConfig(attention="luong").validate()
    with pytest.raises(ConfigError, match="model.cell"):
        EncoderDecoderConfig(cell="rnn").validate()
    with pytest.raises(ConfigError, match="decoder_hidden_size"):
        EncoderDecoderConfig(attention="dot", decoder_hidden_size=100).validate()
    with pytest.raises(ConfigError, match="model.bridge = 'copy' needs"):
        EncoderDecoderConfig(bridge="copy", decoder_hidden_size=100).validate()
    with pytest.raises(ConfigError, match="model.bridge"):
        EncoderDecoderConfig(bridge="linear").validate()
    with pytest.raises(ConfigError, match="model.init_range"):
        EncoderDecoderConfig(init_range=-0.1).validate()
    EncoderDecoderConfig().validate()
    EncoderDecoderConfig(bridge="copy", init_range=0.1).validate()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
def test_the_cell_functions_step_as_the_whole_rnn_does(cell: str, layers: int) -> None:
    model = make_translator(cell=cell, decoder_layers=layers)
    decoder = model.decoder
    with torch.no_grad():
        state = decoder._layer_major(model.start(*source_batch()))
        inputs = torch.randn(3, decoder.rnn.input_size)
        top, new_state = decoder._rnn_step(inputs, state)
        outputs, expected = decoder.rnn(inputs.unsqueeze(1), state)
    torch.testing.assert_close(top, outputs[:, 0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(new_state, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_copy_bridge_starts_the_decoder_from_the_encoder_final_states(cell: str) -> None:
    model = make_translator(cell=cell, bridge="copy")
    assert not list(model.bridge.parameters())
    source_ids, source_lengths = source_batch()
    with torch.no_grad():
        _, final = model.encoder(source_ids, source_lengths)
        state = model.start(source_ids, source_lengths)
    for name in model.decoder.rnn_state_names:
        assert state[name].shape == (3, 2, 12)  # every decoder layer starts from the top's
        for layer in range(2):
            torch.testing.assert_close(state[name][:, layer], final[name])


def test_uniform_initialisation_bounds_every_parameter_and_keeps_padding_zero() -> None:
    model = make_translator(init_range=0.05, tie_target_embeddings=False)
    for name, parameter in model.named_parameters():
        assert parameter.abs().max() <= 0.05, name
        assert parameter.std() > 0.01, name  # drawn, not left at zero
    for embedding in (model.encoder.embedding, model.decoder.embedding):
        assert not embedding.weight[0].any()
    default = make_translator()
    assert default.encoder.embedding.weight.abs().max() > 1.0  # PyTorch's N(0, 1)


@pytest.mark.parametrize("attention", ["general", "bahdanau"])
def test_training_steps_reduce_the_loss_with_finite_gradients(attention: str) -> None:
    """Overfits three pairs; catches NaN gradients from -inf masking or the cell recompute."""
    model = make_translator(attention=attention, dropout=0.0).train()
    source_ids, source_lengths = source_batch()
    target_in = target_batch()
    target_out, _ = pad_batch([[*target[1:], 3] for target in TARGETS_IN])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    losses = []
    for _ in range(20):
        logits = model(source_ids, source_lengths, target_in)
        loss = nn.functional.cross_entropy(logits.transpose(1, 2), target_out, ignore_index=0)
        optimizer.zero_grad()
        loss.backward()
        for name, parameter in model.named_parameters():
            assert parameter.grad is None or torch.isfinite(parameter.grad).all(), name
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_weights_round_trip_through_a_state_dict_with_sharing() -> None:
    """Copies (as safetensors needs for shared memory) load back into one shared matrix."""
    config = EncoderDecoderConfig(
        embedding_size=12,
        encoder_hidden_size=6,
        decoder_hidden_size=12,
        share_embeddings=True,
        tie_target_embeddings=True,
    )
    torch.manual_seed(0)
    model = EncoderDecoder(config, 13, 13).eval()
    weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    torch.manual_seed(1)
    loaded = EncoderDecoder(config, 13, 13).eval()
    loaded.load_state_dict(weights)
    assert loaded.encoder.embedding.weight is loaded.decoder.output.weight
    with torch.no_grad():
        expected = model(*source_batch(), target_batch())
        torch.testing.assert_close(loaded(*source_batch(), target_batch()), expected)


def test_the_step_adapter_rebuilds_its_gate_table_when_the_weights_change() -> None:
    model = make_translator(attention="general", input_feeding=False)
    step = TranslatorStep(model)
    source_ids, _ = source_batch()
    sources = [row[row > 0][:-1].tolist() for row in source_ids]  # without padding and EOS
    tokens = np.array([2, 4, 5])
    state, _ = step.start(sources)
    first, _ = step.step(tokens, state)
    table = state["_embedding_gates"]
    torch.testing.assert_close(table, model.decoder.embedding_gates())
    with torch.no_grad():
        model.decoder.embedding.weight.mul_(2.0)  # as an optimizer step would, in place
    state, _ = step.start(sources)
    second, _ = step.step(tokens, state)
    assert state["_embedding_gates"] is not table
    with torch.no_grad():
        expected = model.decoder.embedding_gates()
    torch.testing.assert_close(state["_embedding_gates"], expected)
    assert not np.allclose(first, second)
    step.MAX_GATE_TABLE = 0  # too large: no table, the plain product
    plain_state, _ = step.start(sources)
    assert "_embedding_gates" not in plain_state
    plain, _ = step.step(tokens, plain_state)
    np.testing.assert_allclose(plain, second, atol=1e-5)


def test_a_decoder_in_training_mode_ignores_the_gate_table() -> None:
    model = make_translator(attention="general", input_feeding=True, dropout=0.5).train()
    source_ids, source_lengths = source_batch()
    with torch.no_grad():
        state = model.start(source_ids, source_lengths)
        gates = torch.full_like(model.decoder.embedding_gates(), float("nan"))
        logits, _ = model.step(torch.tensor([2, 2, 2]), state, None, gates)
    assert torch.isfinite(logits).all()  # the table (all NaN) was not read


@pytest.mark.parametrize(
    ("cell", "input_feeding", "attention"),
    [("lstm", True, "general"), ("gru", False, "bahdanau"), ("lstm", False, "dot")],
)
def test_graph_bookkeeping_searches_as_the_plain_step(
    cell: str, input_feeding: bool, attention: str
) -> None:
    # On the CPU, cuda_graphs=True runs StepGraphs' buffers, row slicing and copies without
    # capturing: beam and greedy search must find what the plain step finds, as sentences
    # leave the batch and as a second batch of the same shape reuses the graph.
    model = make_translator(cell=cell, input_feeding=input_feeding, attention=attention).eval()
    plain, graphed = TranslatorStep(model), TranslatorStep(model, cuda_graphs=True)
    batches = [
        [[4, 5, 6, 7, 8, 9], [10, 11], [12, 4, 5], [6], [7, 8, 9, 10]],
        [[9, 8, 7, 6, 5, 4], [5, 5], [11, 12, 10], [4], [10, 9, 8, 7]],  # same shapes
    ]
    max_new = np.array([2, 6, 3, 5, 1])  # sentences leave the batch at different steps
    made = []
    for search, options in ((beam_search, {"beam_size": 3, "n_best": 2}), (greedy_search, {})):
        for sources in batches:
            found = []
            for step_function in (plain, graphed):
                state, first = step_function.start(sources)
                found.append(search(step_function, state, first, max_new_tokens=max_new, **options))
            assert _tokens(found[0]) == _tokens(found[1])
            np.testing.assert_allclose(_scores(found[0]), _scores(found[1]), rtol=1e-5)
            graphs = graphed._graphs
            assert graphs is not None
            made.append({k: g.shape_count for k, g in graphs.by_candidates.items()})
            made[-1]["graphs"] = graphs.graph_count
    # One shape per search (candidates: 7 for beam 3, 2 for greedy); as rows halve, smaller
    # graphs are made (beam: 15 rows, then 7, then 3 at most); the second batch makes none.
    assert made[0] == made[1] and made[2] == made[3]
    assert made[1][7] == 1 and made[3] == {7: 1, 2: 1, "graphs": made[3]["graphs"]}
    assert made[1]["graphs"] >= 2


def _tokens(found: list) -> list:
    return [[h.tokens for h in hs] if isinstance(hs, list) else hs.tokens for hs in found]


def _scores(found: list) -> list[float]:
    flat = [h for hs in found for h in (hs if isinstance(hs, list) else [hs])]
    return [h.score for h in flat]


def test_cuda_graphs_are_the_default_on_cuda_unless_the_environment_says_0(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SEQGEN_CUDA_GRAPHS", raising=False)
    assert graphs_by_default(torch.device("cuda", 0))
    assert not graphs_by_default(torch.device("cpu"))
    monkeypatch.setenv("SEQGEN_CUDA_GRAPHS", "0")
    assert not graphs_by_default(torch.device("cuda", 0))
    assert TranslatorStep(make_translator())._graphs is None  # the CPU: plain steps
