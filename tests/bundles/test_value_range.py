"""Which values of a graph provably lie within [-1, 1] (seqgen.bundles.value_range), on
small hand-made graphs; and that every value it keeps does, run on random inputs."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="reading graphs needs the export extra")
import onnxruntime  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from seqgen.bundles.value_range import unit_range_inputs, unit_range_values  # noqa: E402

K = 8


def graph(nodes, inputs, outputs, constants=None) -> onnx.GraphProto:  # noqa: ANN001
    """A float32 graph of ``nodes`` over ``(rows, K)`` inputs, its ``outputs`` listed."""
    return helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in inputs],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        initializer=[numpy_helper.from_array(v, n) for n, v in (constants or {}).items()],
    )


def node(op: str, inputs: list[str], output: str | list[str], **attributes) -> onnx.NodeProto:  # noqa: ANN003
    outputs = [output] if isinstance(output, str) else output
    return helper.make_node(op, inputs, outputs, **attributes)


ELEMENTWISE = [
    node("Tanh", ["x"], "t"),
    node("Sigmoid", ["x"], "s"),
    node("Relu", ["x"], "r"),
    node("Mul", ["s", "t"], "gated"),  # an LSTM's o * tanh(c)
    node("Mul", ["t", "r"], "t_times_r"),
    node("Add", ["t", "s"], "t_plus_s"),
    node("Concat", ["t", "gated"], "both", axis=1),
    node("Concat", ["t", "r"], "t_and_r", axis=1),
    node("Transpose", ["both"], "moved", perm=[1, 0]),
    node("Less", ["x", "r"], "less"),
    node("Cast", ["less"], "mask", to=TensorProto.FLOAT),
    node("Cast", ["t"], "wrapped", to=TensorProto.UINT8),  # -1 -> 255
    node("Mul", ["t", "mask"], "masked"),
    node("Where", ["less", "t", "small"], "chosen"),
    node("Where", ["less", "t", "large"], "chosen_large"),
    node("MatMul", ["t", "small"], "t_times_small"),
    node("Softmax", ["r"], "weights"),
    node("Softmax", ["r"], "weights_first_axis", axis=0),
    node("MatMul", ["weights", "t"], "context"),  # a convex combination of rows of t
    node("MatMul", ["weights", "r"], "context_of_r"),
    node("MatMul", ["weights_first_axis", "t"], "context_first_axis"),
    node("Neg", ["x"], "minus_x"),
    node("Tanh", ["minus_x"], "u"),
    node("Sub", ["u", "t"], "difference"),
    node("Mul", ["difference", "s"], "step_towards_u"),
    node("Add", ["step_towards_u", "t"], "mixed"),  # t + s * (u - t): a GRU's h
    node("Add", ["step_towards_u", "u"], "not_mixed"),  # u + s * (u - t)
    node("ReduceMax", ["t"], "t_peak", keepdims=0),  # a classifier's max pooling
    node("ReduceMin", ["gated"], "gated_least", keepdims=0),
    node("ReduceMax", ["r"], "r_peak", keepdims=0),
]
CONSTANTS = {
    "small": np.full((K, K), 0.5, dtype=np.float32),
    "large": np.full((K, K), 1.5, dtype=np.float32),
}
WITHIN = {"t", "s", "gated", "both", "moved", "less", "mask", "masked", "chosen", "weights"}
WITHIN |= {"weights_first_axis", "context", "small", "u", "mixed", "t_peak", "gated_least"}
# Values the rules leave out that do leave the range on the inputs below.
OUTSIDE = {"r", "t_times_r", "t_plus_s", "t_and_r", "chosen_large", "t_times_small"}
OUTSIDE |= {"context_of_r", "context_first_axis", "difference", "not_mixed", "r_peak"}


def test_bounded_operators_and_what_moves_multiplies_or_averages_them() -> None:
    g = graph(ELEMENTWISE, ["x"], [n.output[0] for n in ELEMENTWISE], CONSTANTS)
    assert unit_range_values(g) == WITHIN
    assert unit_range_values(g, ["x"]) == WITHIN | {"x"}  # an input as given


def test_every_value_kept_is_within_range_when_run() -> None:
    """The claim itself, on inputs far outside [-1, 1]: a rule too loose fails here."""
    outputs = [n.output[0] for n in ELEMENTWISE if n.output[0] not in ("less", "wrapped")]
    g = graph(ELEMENTWISE, ["x"], outputs, CONSTANTS)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    x = np.random.default_rng(0).uniform(-20, 20, (K, K)).astype(np.float32)
    values = dict(zip(outputs, session.run(outputs, {"x": x}), strict=True))
    kept = unit_range_values(g) & set(values)
    assert kept and all(np.abs(values[name]).max() <= 1 + 1e-6 for name in kept)
    assert all(np.abs(values[name]).max() > 1 for name in OUTSIDE)


def recurrent_node(op: str, **attributes) -> onnx.NodeProto:  # noqa: ANN003
    inputs = ["x", "W", "R", "", "", "initial"] if op == "GRU" else ["x", "W", "R"]
    return node(op, inputs, ["y", "y_last", "c_last"][: 3 if op == "LSTM" else 2], **attributes)


@pytest.mark.parametrize(
    ("recurrent", "inputs", "within"),
    [
        (recurrent_node("LSTM", hidden_size=K), [], {"y", "y_last"}),  # not the cell
        (recurrent_node("LSTM", hidden_size=K, activations=["Sigmoid", "Relu", "Relu"]), [], set()),
        (recurrent_node("RNN", hidden_size=K), [], {"y", "y_last"}),
        (recurrent_node("GRU", hidden_size=K), [], set()),  # mixes in its initial state
        (recurrent_node("GRU", hidden_size=K), ["initial"], {"y", "y_last"}),
    ],
)
def test_a_recurrent_operators_hidden_state_with_its_default_activations(
    recurrent: onnx.NodeProto, inputs: list[str], within: set[str]
) -> None:
    g = graph([recurrent], ["x", "W", "R", "initial"], list(recurrent.output))
    assert unit_range_values(g, inputs) - set(inputs) == within


def test_a_step_input_is_within_range_where_its_givers_and_the_step_keep_it_there() -> None:
    """``hidden`` comes within range from the start graph and the step keeps it so; ``cell``
    leaves the range in the step; ``feed`` comes out of range; ``carried`` is the step's
    ``hidden2`` of the step before, which one step takes out of range: known only after a
    second look; ``tokens`` no graph gives."""
    start = graph(
        [
            node("Tanh", ["source"], "hidden"),
            node("Tanh", ["source"], "hidden2"),
            node("Tanh", ["source"], "carried"),
            node("Identity", ["source"], "cell"),
            node("Relu", ["source"], "feed"),
        ],
        ["source"],
        ["hidden", "hidden2", "carried", "cell", "feed"],
    )
    step = graph(
        [
            node("Sigmoid", ["tokens"], "gate"),
            node("Tanh", ["cell"], "squashed"),
            node("Mul", ["gate", "squashed"], "new_hidden"),
            node("Add", ["cell", "hidden"], "new_cell"),
            node("Mul", ["feed", "gate"], "new_feed"),
            node("Add", ["hidden2", "gate"], "new_hidden2"),
            node("Identity", ["hidden2"], "new_carried"),
        ],
        ["tokens", "hidden", "hidden2", "carried", "cell", "feed"],
        ["new_hidden", "new_cell", "new_feed", "new_hidden2", "new_carried"],
    )
    assert unit_range_inputs(step, [start]) == {"hidden"}
    assert unit_range_inputs(step, []) == set()  # nothing gives them: nothing known
    prime = graph([node("Identity", ["source"], "new_hidden")], ["source"], ["new_hidden"])
    assert unit_range_inputs(step, [start, prime]) == set()  # one giver out of range


def test_a_scans_outputs_where_its_body_keeps_them_within_range() -> None:
    """An LSTM written as a ``Scan`` (an int8 bundle's encoder): each position's hidden
    state, a sigmoid times a tanh, is within range; the cell state and a plain sum are not,
    nor a body output that copies a state (a state's range is not followed)."""
    body = graph(
        [
            node("Add", ["gate", "cell"], "pre"),
            node("Sigmoid", ["pre"], "open"),
            node("Tanh", ["pre"], "squashed"),
            node("Mul", ["open", "squashed"], "hidden"),
            node("Identity", ["hidden"], "each_hidden"),
            node("Identity", ["cell"], "each_cell"),
            node("Identity", ["gate"], "each_gate"),
        ],
        ["cell", "gate"],
        ["pre", "each_hidden", "each_cell", "each_gate"],
    )
    scan = node(
        "Scan",
        ["start", "gates"],
        ["final", "hiddens", "cells", "gates_again"],
        num_scan_inputs=1,
        body=body,
    )
    g = graph([scan], ["start", "gates"], list(scan.output))
    assert unit_range_values(g) == {"hiddens"}
    # A scan input within range reaches the body outputs that move it.
    assert unit_range_values(g, ["gates"]) == {"gates", "hiddens", "gates_again"}


def test_a_scans_state_is_followed_by_induction_from_a_start_within_range() -> None:
    """An LSTM's states in a ``Scan``: the hidden state, from zeros (``ConstantOfShape``) and
    a sigmoid times a tanh at every position, is within range inside the body and at the
    end; the cell state, a sum, is not, nor is the hidden state from a start of unknown
    range (the first position reads it as it came)."""
    body = graph(
        [
            node("Add", ["gate", "c"], "pre"),
            node("Sigmoid", ["pre"], "open"),
            node("Tanh", ["pre"], "squashed"),
            node("Mul", ["open", "squashed"], "new_h"),
            node("Add", ["h", "pre"], "new_c"),
            node("Identity", ["h"], "each_h"),
        ],
        ["h", "c", "gate"],
        ["new_h", "new_c", "each_h"],
    )

    def scan(start: str) -> onnx.GraphProto:
        nodes = [
            node("ConstantOfShape", ["shape"], "zeros"),
            node("ConstantOfShape", ["shape"], "twos", value=numpy_helper.from_array(
                np.array([2.0], dtype=np.float32))),
            node("Scan", [start, start, "gates"], ["last_h", "last_c", "each"],
                 num_scan_inputs=1, body=body),
        ]  # fmt: skip
        return graph(nodes, ["shape", "start", "gates"], ["last_h", "last_c", "each"])

    assert unit_range_values(scan("zeros")) == {"zeros", "last_h", "each"}
    assert unit_range_values(scan("start")) == {"zeros"}
    assert unit_range_values(scan("start"), ["start"]) == {"zeros", "start", "last_h", "each"}
    assert unit_range_values(scan("twos")) == {"zeros"}
