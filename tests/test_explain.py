"""explain and trace: the explanation matches the layer; the trace is what the layer computed."""

import itertools
import re

import numpy as np
import pytest

import unrolled
from unrolled import layers
from unrolled.explain import Trace

from conftest import assert_close


def make_layer(kind, units=3, **options):
    if kind == "simple_rnn":
        return layers.SimpleRNN(units, **options)
    if kind == "rnn_cell":
        return layers.RNN(layers.SimpleRNNCell(units), **options)
    if kind == "stacked":
        return layers.RNN([layers.SimpleRNNCell(units), layers.SimpleRNNCell(2)], **options)
    if kind == "nested_stack":
        inner = layers.StackedRNNCells([layers.SimpleRNNCell(units), layers.SimpleRNNCell(4)])
        return layers.RNN(layers.StackedRNNCells([inner, layers.SimpleRNNCell(2)]), **options)
    if kind == "lstm":
        return layers.LSTM(units, **options)
    if kind == "gru":
        return layers.GRU(units, **options)
    if kind == "gru_reset_before":
        return layers.GRU(units, reset_after=False, **options)
    if kind == "mixed_stack":
        return layers.RNN([layers.SimpleRNNCell(units), layers.LSTMCell(4), layers.GRUCell(2)],
                          **options)
    raise AssertionError(kind)


KINDS = ["simple_rnn", "rnn_cell", "stacked", "nested_stack", "lstm", "gru", "gru_reset_before",
         "mixed_stack"]


def check_recorded(cell, values):
    """The recorded values are the cell's own: each satisfies the cell's equation."""
    kind = type(cell).__name__
    if kind == "SimpleRNNCell":
        assert_close(values["z"], values["xU"] + values["hW"] + values["b"], atol=1e-6, what="z")
        assert_close(values["h"], np.tanh(values["z"]), atol=1e-6, what="h")
    elif kind == "LSTMCell":
        assert_close(values["z"], values["xU"] + values["hW"] + values["b"], atol=1e-6, what="z")
        assert_close(values["c"], values["f"] * values["c_prev"] + values["i"] * values["g"],
                     atol=1e-6, what="c")
        assert_close(values["h"], values["o"] * np.tanh(values["c"]), atol=1e-6, what="h")
    elif kind == "GRUCell":
        assert_close(values["h"], values["z"] * values["h_prev"] + (1 - values["z"]) * values["hh"],
                     atol=1e-6, what="h")
    else:  # pragma: no cover
        raise AssertionError(kind)


def leaves(tree):
    if isinstance(tree, (list, tuple)):
        return [leaf for item in tree for leaf in leaves(item)]
    return [np.asarray(tree)]


def zeros_like_states(layer, batch, rng):
    states = layer.get_initial_state(batch)
    def fill(s):
        if isinstance(s, (list, tuple)):
            return [fill(i) for i in s]
        return rng.normal(size=s.shape).astype("float32")
    states = fill(states)
    return states[0] if layer.single_state else states


# ---------------------------------------------------------------- explain


@pytest.mark.parametrize("kind", KINDS)
def test_explanation_shapes_and_count_match_the_layer(kind, rng):
    layer = make_layer(kind, units=5, return_sequences=True, return_state=True)
    x = rng.normal(size=(3, 7, 4)).astype("float32")
    result = layer(x)
    e = unrolled.explain(layer, x)
    assert e.param_count == layer.count_params()
    assert e.sizes["batch"] == 3 and e.sizes["timesteps"] == 7 and e.sizes["features"] == 4
    # every weight appears with its real shape, in depth order (LSTM/GRU: fused column blocks)
    weight_symbols = [s for s in e.symbols if re.fullmatch(r"[UWb]\d*", s.name)]
    assert [s.shape for s in weight_symbols] == [w.shape for w in layer.weights]
    # what the call returns, entry by entry
    returned = [np.shape(result[0])] + [[np.shape(s) for s in leaves(r)] if isinstance(r, list)
                                        else np.shape(r) for r in result[1:]]
    described = [r[1] for r in e.returns]
    assert [tuple(d) if isinstance(d, tuple) else [tuple(i) for i in d] for d in described] == \
        [tuple(r) if isinstance(r, tuple) else r for r in returned]
    text = str(e)
    assert "kernel" in text and "recurrent_kernel" in text and "weight_ih_l0" in text
    assert str(layer.count_params()) in text
    html = e._repr_html_()
    assert html.startswith("<div") and "<table" in html and "weight_hh_l0" in html


def test_explain_simple_rnn_names_the_notation_and_orientation():
    rnn = layers.SimpleRNN(4)
    e = unrolled.explain(rnn, np.zeros((2, 5, 3)))
    assert e.symbol("U").shape == (3, 4) and e.symbol("W").shape == (4, 4)
    assert e.symbol("b").shape == (4,)
    assert e.symbol("x_t").shape == (2, 3) and e.symbol("h_t").shape == (2, 4)
    assert e.param_count == 3 * 4 + 4 * 4 + 4
    assert "weight_ih_l0 = U.T  (4, 3)" in e.symbol("U").torch
    assert "kernel" in e.symbol("U").api and "recurrent_kernel" in e.symbol("W").api
    text = str(e)
    assert "h_t = tanh(W h_{t-1} + U x_t + b)" in text          # textbook
    assert "h_t = tanh(x_t U + h_{t-1} W + b)" in text          # row vectors
    assert e.returns == [("output", (2, 4), "the last step's output h_T")]


def test_explain_without_input_uses_build_shape_then_symbols():
    rnn = layers.SimpleRNN(4, return_state=True)
    symbolic = unrolled.explain(rnn)
    assert symbolic.sizes["batch"] == "batch" and symbolic.symbol("U").shape == ("features", 4)
    assert symbolic.param_count is None and "4·features" in str(symbolic).replace("features·4", "4·features")
    rnn(np.zeros((6, 2, 3), dtype="float32"))
    built = unrolled.explain(rnn)
    assert built.sizes_from == "the build shape" and built.sizes["batch"] == 6
    assert built.param_count == rnn.count_params()
    assert [r[0] for r in built.returns] == ["output", "final_h"]


def test_explain_a_cell_and_a_stack_of_cells():
    cell = layers.SimpleRNNCell(3)
    e = unrolled.explain(cell, np.zeros((2, 5)))
    assert e.symbol("U").shape == (5, 3) and e.param_count == 5 * 3 + 9 + 3
    assert e.returns[1][1] == [(2, 3)]
    stack = layers.StackedRNNCells([layers.SimpleRNNCell(3), layers.SimpleRNNCell(2)])
    e = unrolled.explain(stack, np.zeros((2, 5)))
    assert e.symbol("U2").shape == (3, 2) and e.state_structure == "[[h1 (2, 3)], [h2 (2, 2)]]"
    assert e.param_count == (5 * 3 + 9 + 3) + (3 * 2 + 4 + 2)


def test_explain_rejects_what_it_cannot_explain():
    with pytest.raises(TypeError, match="recurrent layer"):
        unrolled.explain(np.zeros(3))
    with pytest.raises(ValueError, match="batch, timesteps, features"):
        unrolled.explain(layers.SimpleRNN(2), np.zeros((2, 3)))


# ---------------------------------------------------------------- trace


OPTIONS = [dict(return_sequences=rs, return_state=st, go_backwards=gb)
           for rs, st, gb in itertools.product([False, True], repeat=3)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(k for k, v in o.items() if v)
                         or "plain")
@pytest.mark.parametrize("extras", ["none", "mask", "initial_state", "mask+initial_state"])
def test_trace_equals_the_layer_output(kind, options, extras, rng):
    layer = make_layer(kind, **options)
    x = rng.normal(size=(3, 5, 4)).astype("float32")
    layer(x)  # build
    kwargs = {}
    if "mask" in extras:
        mask = rng.random((3, 5)) > 0.35
        mask[:, 0] = True
        kwargs["mask"] = mask
    if "initial_state" in extras:
        kwargs["initial_state"] = zeros_like_states(layer, 3, rng)
    expected = layer(x, **kwargs)                     # a normal call, no recorder
    tr = unrolled.trace(layer, x, **kwargs)
    assert isinstance(tr, Trace) and len(tr.steps) == 5
    for got, want in zip(leaves(tr.result), leaves(expected)):
        assert_close(got, want, atol=1e-6, what="traced call vs normal call")
    out = expected[0] if options["return_state"] else expected
    if options["return_sequences"]:
        assert_close(tr.h, out, atol=1e-6, what="trace h, all steps")
    else:
        assert_close(tr.steps[-1].output, out, atol=1e-6, what="trace last h")
    if options["return_state"]:
        for got, want in zip(leaves(tr.final_states), leaves(expected[1:])):
            assert_close(got, want, atol=1e-6, what="final states")
    times = [s.t for s in tr.steps]
    assert times == (list(range(4, -1, -1)) if options["go_backwards"] else list(range(5)))
    # the recorded values are the cell's own: z = xU + hW + b and h = tanh(z), cell by cell
    for step in tr.steps:
        assert len(step.cells) == tr.depth
        for cell, values in zip(tr.cells, step.cells):
            check_recorded(cell, values)
        if "mask" in extras:
            assert step.mask is not None and step.mask.shape == (3,)
    # detached afterwards
    assert layer.__dict__.get("_recorder") is None
    assert all(c.__dict__.get("_recorder") is None for c in tr.cells)


def test_trace_on_a_bare_cell_is_one_step(rng):
    cell = layers.SimpleRNNCell(4)
    x = rng.normal(size=(2, 3)).astype("float32")
    h0 = rng.normal(size=(2, 4)).astype("float32")
    tr = unrolled.trace(cell, x, [h0])
    out, states = cell(x, [h0])
    assert len(tr.steps) == 1 and tr.is_cell
    assert_close(tr.steps[0].output, out, what="cell output")
    assert_close(tr.steps[0].cells[0]["h_prev"], h0, what="h_prev")
    assert_close(tr.final_states[0], states[0], what="cell state")


def test_trace_of_a_stateful_layer_starts_from_the_carried_state(rng):
    layer = layers.SimpleRNN(3, stateful=True, return_sequences=True)
    x = rng.normal(size=(2, 4, 3)).astype("float32")
    layer(x)
    carried = np.array(layer.states[0])
    tr = unrolled.trace(layer, x)
    assert_close(tr.steps[0].cells[0]["h_prev"], carried, what="h_0 of the second call")
    assert_close(tr.initial_states[0], carried, what="initial_states")


def test_trace_detaches_even_when_the_call_fails(rng):
    layer = layers.SimpleRNN(3)
    layer(np.zeros((2, 4, 3), dtype="float32"))
    with pytest.raises(ValueError):
        unrolled.trace(layer, np.zeros((2, 4, 5), dtype="float32"))
    assert layer._recorder is None and layer.cell._recorder is None


def test_trace_text_and_values():
    layer = layers.SimpleRNN(2, return_sequences=True)
    tr = unrolled.trace(layer, np.ones((2, 3, 4), dtype="float32"))
    assert tr.values("h").shape == (2, 3, 2) and tr.values("b").shape == (3, 2)
    text = str(tr)
    assert text.count("step k=") == 3 and "xU" in text
    with pytest.raises(KeyError, match="recorded"):
        tr.values("nothing")
    with pytest.raises(TypeError, match="recurrent layer"):
        unrolled.trace("not a layer", np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="mask"):
        unrolled.trace(layers.SimpleRNNCell(2), np.ones((2, 3)), mask=np.ones((2, 1)))


@pytest.mark.parametrize("make, blocks", [(lambda: layers.LSTM(3), ["i", "f", "c", "o"]),
                                          (lambda: layers.GRU(3), ["z", "r", "h"])])
def test_explain_gates_are_column_blocks_of_the_fused_kernel(make, blocks):
    layer = make()
    before = unrolled.explain(layer, np.zeros((2, 4, 5)))       # not built: shapes from x
    assert before.symbol("U").shape == (5, 3 * len(blocks))
    layer(np.zeros((2, 4, 5), dtype="float32"))
    e = unrolled.explain(layer, np.zeros((2, 4, 5)))
    gates = e.cells[0].gates
    assert [g[0] for g in gates] == blocks
    assert [g[2] for g in gates] == [f"[{3 * i}:{3 * (i + 1)}]" for i in range(len(blocks))]
    assert e.symbol("U").shape == layer.cell.kernel.shape == (5, 3 * len(blocks))
    assert e.param_count == layer.count_params()
    assert "column" in str(e) and "gate" in str(e)
