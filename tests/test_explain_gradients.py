"""The gradient-flow figure: one point per timestep for each recurrent layer, the plotted values
are the backward pass's own dL/dh_t norms, and the example measures the vanishing gradient."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest

from unrolled import Sequential, gradients, layers
from unrolled.explain import GradientFlow, gradient_flow

pytest.importorskip("matplotlib")  # figures are an optional extra; the rest of the file runs


def _model(timesteps=7):
    model = Sequential([layers.GRU(3, return_sequences=True, name="gru_a"),
                        layers.SimpleRNN(2, go_backwards=True, name="rnn_b"),
                        layers.Dense(1)])
    model.build((None, timesteps, 2))
    return model


def test_one_point_per_timestep_for_each_recurrent_layer(rng):
    x = rng.normal(size=(4, 7, 2)).astype("float32")
    y = rng.normal(size=(4, 1)).astype("float32")
    model = _model()
    flow = gradient_flow(model, x, y, "mse")
    assert isinstance(flow, GradientFlow)
    lines = {line.get_gid(): line for line in flow.figure.axes[0].get_lines()}
    assert set(lines) == {"flow-gru_a", "flow-rnn_b"} == set(flow.ids["lines"])
    report = gradients(model, x, y, "mse")
    for name in ("gru_a", "rnn_b"):
        xs, ys = lines[f"flow-{name}"].get_data()
        assert list(xs) == list(range(1, 8)), "one point per timestep, t = 1..T"
        expected = np.linalg.norm(report.hidden[name], axis=-1).mean(axis=0)
        np.testing.assert_allclose(ys, expected, rtol=1e-6)
        np.testing.assert_allclose(flow.norms[name], expected, rtol=1e-6)
    assert flow.figure.axes[0].get_yscale() == "log"
    assert "go_backwards" in lines["flow-rnn_b"].get_label()
    svg = flow.svg()
    assert 'id="flow-gru_a"' in svg and 'id="flow-rnn_b"' in svg
    assert flow.png()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bidirectional_directions_are_drawn_apart(rng):
    x = rng.normal(size=(2, 5, 2)).astype("float32")
    model = Sequential([layers.Bidirectional(layers.LSTM(3, return_sequences=True)),
                        layers.GRU(2), layers.Dense(1)])
    flow = gradient_flow(model, x, np.zeros((2, 1)), "mse")
    bi = model.layers[0]
    names = {bi.forward_layer.name, bi.backward_layer.name, model.layers[1].name}
    assert set(flow.norms) == names
    labels = {line.get_gid(): line.get_label() for line in flow.figure.axes[0].get_lines()}
    assert "go_backwards" in labels[f"flow-{bi.backward_layer.name}"]
    assert "go_backwards" not in labels[f"flow-{bi.forward_layer.name}"]
    # the backward direction's last processed step is t = 1: the loss's gradient enters there
    back = flow.norms[bi.backward_layer.name]
    assert all(len(v) == 5 for v in flow.norms.values()) and back[0] > 0


def test_report_list_and_layer_choice(rng):
    x = rng.normal(size=(2, 5, 2)).astype("float32")
    a = gradients(layers.SimpleRNN(3, name="first"), x, np.zeros((2, 3)), "mse")
    b = gradients(layers.LSTM(3, name="second"), x, np.zeros((2, 3)), "mse")
    flow = gradient_flow([a, b], layers=["second"])
    assert flow.ids["lines"] == ["flow-second"]
    assert len(flow.figure.axes[0].get_lines()[0].get_xdata()) == 5
    assert flow.ratio("second") == pytest.approx(b.hidden_norms("second")[0]
                                                 / b.hidden_norms("second")[-1])


def test_errors_name_what_to_pass(rng):
    x = rng.normal(size=(2, 5, 2)).astype("float32")
    rnn = layers.SimpleRNN(3, name="only")
    with pytest.raises(ValueError, match="give the input `x` and the targets `y`"):
        gradient_flow(rnn, x)
    report = gradients(rnn, x, np.zeros((2, 3)), "mse")
    with pytest.raises(ValueError, match="name no recurrent layer.*only"):
        gradient_flow(report, layers=["missing"])
    with pytest.raises(ValueError, match="already holds its gradients"):
        gradient_flow(report, x, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="same name"):
        gradient_flow([report, report])


def test_vanishing_gradients_example_measures_the_decay(tmp_path):
    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "vanishing_gradients.py"
    spec = importlib.util.spec_from_file_location("vanishing_gradients", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(timesteps=60, batch=16, out=str(tmp_path / "flow"), verbose=False)
    ratios = result["ratios"]
    # measured (seed 0, T = 60, batch 16): simple_rnn 2.7e-3, lstm 4.9e-7,
    # lstm_forget_bias_3 0.19 (seeds 1-3: the open forget gates keep 5x to 900x more)
    assert ratios["simple_rnn"] < 0.05 and ratios["lstm"] < 0.05
    assert ratios["lstm_forget_bias_3"] > 10 * max(ratios["simple_rnn"], ratios["lstm"])
    assert all(len(v) == 60 for v in result["norms"].values())
    assert [pathlib.Path(p).suffix for p in result["paths"]] == [".svg", ".png"]
