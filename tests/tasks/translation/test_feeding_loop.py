"""Input feeding's fused teacher-forcing loop against the decoder's stepwise autograd path."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seqgen.data.parallel import pad_batch
from seqgen.layers.cells import EmbeddedGates
from seqgen.tasks.translation import feeding_loop
from seqgen.tasks.translation.config import EncoderDecoderConfig
from seqgen.tasks.translation.model import EncoderDecoder

SOURCES = [[4, 5, 6, 7, 8, 3], [9, 10, 3], [11, 4, 12, 5, 3]]
TARGETS_IN = [[2, 4, 5, 6, 7], [2, 8, 9], [2, 10, 4, 6]]


def make_model(attention: str, dtype: torch.dtype) -> EncoderDecoder:
    torch.manual_seed(0)
    config = EncoderDecoderConfig(
        embedding_size=8,
        encoder_hidden_size=6,
        decoder_hidden_size=12,
        dropout=0.3,
        input_feeding=True,
        attention=attention,
    )
    # Eval mode: the encoder's dropout off, so both paths see the same source side; the
    # decoder's dropout mask is passed in.
    return EncoderDecoder(config, 13, 11).to(dtype).eval()


def teacher_forcing(model: EncoderDecoder, keep: torch.Tensor, *, fused: bool) -> torch.Tensor:
    """The attentional vectors ``(rows, time, hidden)`` after ``keep``'s dropout mask."""
    decoder = model.decoder
    source_ids, source_lengths = pad_batch(SOURCES)
    state = model.start(source_ids, source_lengths)
    size, weight = decoder.config.embedding_size, decoder.rnn.weight_ih_l0
    embedded = decoder.embedding(pad_batch(TARGETS_IN)[0])
    gates = nn.functional.linear(embedded, weight[:, :size], decoder.rnn.bias_ih_l0)
    rnn_state, feed = decoder._layer_major(state), state["feed"]
    if fused:  # the loop takes both biases with the embedding's gates
        weights = (weight[:, size:], decoder.rnn.weight_hh_l0, decoder.combine.weight)
        return feeding_loop.input_feeding_loop(
            gates + decoder.rnn.bias_hh_l0, rnn_state[0][0], rnn_state[1][0], feed,
            state["keys"], state["memory"], state["source_mask"], weights, keep,
        )  # fmt: skip
    outputs = []
    for position, position_gates in enumerate(gates.unbind(1)):
        token = EmbeddedGates(position_gates, weight[:, size:])
        feed, rnn_state = decoder._step(token, rnn_state, feed, state)
        feed = feed * keep[:, position]
        outputs.append(feed)
    return torch.stack(outputs, dim=1)


def outputs_and_gradients(
    model: EncoderDecoder, keep: torch.Tensor, *, fused: bool
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    outputs = teacher_forcing(model, keep, fused=fused)
    weights = torch.linspace(-1, 1, outputs.numel(), dtype=outputs.dtype).view_as(outputs)
    ((outputs * weights).sum() + (outputs**2).sum()).backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return outputs.detach(), gradients


@pytest.mark.parametrize("attention", ["general", "dot"])
def test_fused_loop_gives_the_stepwise_outputs_and_gradients(attention: str) -> None:
    model = make_model(attention, torch.float64)
    keep = (torch.rand(3, 5, 12, dtype=torch.float64) > 0.3).double() / 0.7
    fused, fused_gradients = outputs_and_gradients(model, keep, fused=True)
    stepwise, stepwise_gradients = outputs_and_gradients(model, keep, fused=False)
    torch.testing.assert_close(fused, stepwise, rtol=1e-12, atol=1e-12)
    # Every parameter before the output layer: the encoder's, the bridge's, the decoder's.
    assert fused_gradients.keys() == stepwise_gradients.keys()
    assert len(fused_gradients) == len([p for p in model.parameters() if p.requires_grad]) - 2
    for name, gradient in stepwise_gradients.items():
        torch.testing.assert_close(fused_gradients[name], gradient, rtol=1e-10, atol=1e-12)


def test_fused_loop_under_cpu_autocast_stays_close_to_float32() -> None:
    model = make_model("general", torch.float32)
    keep = torch.ones(3, 5, 12)
    reference, reference_gradients = outputs_and_gradients(model, keep, fused=False)
    # backward() inside the autocast context too: the loop's backward casts for itself.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused, gradients = outputs_and_gradients(model, keep, fused=True)
    assert fused.dtype == torch.float32
    torch.testing.assert_close(fused, reference, rtol=0.0, atol=2e-2)
    for name, gradient in reference_gradients.items():
        error = (gradients[name] - gradient).norm() / gradient.norm()
        assert error < 0.05, name


def test_training_decoder_takes_the_fused_loop_only_where_it_applies() -> None:
    model = make_model("general", torch.float32).train()
    gates = torch.zeros(1)
    assert model.decoder._fuses_feeding(gates)
    assert not make_model("bahdanau", torch.float32).decoder._fuses_feeding(gates)
    # The loop and the stepwise path agree in training mode too, up to dropout's masks.
    model.decoder.dropout.p = 0.0
    source_ids, source_lengths = pad_batch(SOURCES)
    target_in = pad_batch(TARGETS_IN)[0]
    state = model.start(source_ids, source_lengths)
    with torch.no_grad():
        trained = model.decoder.features(target_in, state)
        stepwise = model.eval().decoder.features(target_in, state)
    torch.testing.assert_close(trained, stepwise, rtol=1e-5, atol=1e-5)
