"""explain / trace / the explain command on models, wrappers and users' model files written by Keras.

The guarantee kept everywhere: what a trace shows is what the layers computed. Every traced
recurrent layer's output equals that layer's output in the model (the graph's own record, an
independent layer-by-layer replay, and Keras's intermediate output).
"""

import numpy as np
import pytest
from PIL import Image

import unrolled
from unrolled import layers
from unrolled.__main__ import main
from unrolled.explain import diagrams

from conftest import assert_close


IDS = np.array([[3, 1, 4, 1, 0, 0], [5, 9, 2, 6, 5, 3], [0, 2, 7, 0, 1, 8]], dtype="int32")


def _keras_sequential(keras):
    keras.utils.set_random_seed(1)
    L = keras.layers
    return keras.Sequential([
        keras.Input((None,), dtype="int32"),
        L.Embedding(10, 4, mask_zero=True, name="emb"),
        L.LSTM(5, return_sequences=True, name="lstm"),
        L.GRU(3, name="gru"),
        L.Dense(2, activation="tanh", name="head"),
    ], name="seq_model")


def _keras_functional(keras):
    keras.utils.set_random_seed(2)
    L = keras.layers
    inp = keras.Input((6, 3), name="x")
    masked = L.Masking(0.0, name="masking")(inp)
    bi = L.Bidirectional(L.LSTM(4, return_sequences=True, name="lstm"), name="bi")(masked)
    seq = L.SimpleRNN(3, return_sequences=True, name="rnn")(bi)
    last = L.GRU(2, go_backwards=True, name="gru")(seq)
    out = L.Dense(1, name="head")(last)
    return keras.Model(inp, [seq, out], name="fn_model")


def _keras_intermediates(keras, model, x):
    names = [l.name for l in model.layers if not l.name.startswith("input")
             and type(l).__name__ != "InputLayer"]
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    return dict(zip(names, [np.asarray(v) for v in probe([x])]))


def _functional_input():
    x = np.random.default_rng(7).normal(size=(3, 6, 3)).astype("float32")
    x[0, 4:] = 0.0          # sample 0: its last two steps are padding, masked by Masking
    x[2, 0] = 0.0           # sample 2: a masked first step
    return x


def _check_trace_is_its_output(tr):
    """A Trace's steps are what the layer returned (the trace == output guarantee)."""
    out = tr.output
    if out.ndim == 3:
        assert np.array_equal(tr.h, out)
    else:
        assert np.array_equal(tr.steps[-1].output, out)


# ---------------------------------------------------------------- trace on a Keras-written Sequential


def test_trace_sequential_from_a_keras_file_equals_every_intermediate_output(keras, tmp_path):
    kmodel = _keras_sequential(keras)
    kmodel.save(tmp_path / "m.keras")
    model = unrolled.load_model(str(tmp_path / "m.keras"))
    mt = unrolled.trace(model, IDS)

    assert mt.names == ["lstm", "gru"]
    assert_close(mt.result, kmodel.predict(IDS, verbose=0), what="the traced run's result")
    expected = _keras_intermediates(keras, kmodel, IDS)
    for name in ("emb", "lstm", "gru", "head"):
        assert_close(mt.outputs[name], expected[name], what=f"{name} in the traced run")
    # the mask from Embedding(mask_zero) reached both recurrent layers
    assert np.array_equal(mt.masks["emb"], IDS != 0)
    for name in ("lstm", "gru"):
        tr = mt[name]
        assert np.array_equal(tr.mask, IDS != 0), name
        _check_trace_is_its_output(tr)
        assert np.array_equal(tr.output, mt.outputs[name])
        assert_close(tr.output, expected[name], what=f"trace of {name}")
    # fed the real intermediate inputs: the LSTM saw the embeddings, the GRU the LSTM's sequence
    assert np.array_equal(mt["lstm"].x, mt.outputs["emb"])
    assert np.array_equal(mt["gru"].x, mt.outputs["lstm"])

    # an independent replay, layer by layer with the masks passed by hand (kernels, no recorder)
    emb, lstm, gru, head = model.layers
    e = emb(IDS)
    mask = emb.compute_mask(IDS)
    h1 = lstm(e, mask=mask)
    h2 = gru(h1, mask=mask)
    assert_close(mt["lstm"].output, h1, atol=1e-6, what="lstm replay")
    assert_close(mt["gru"].output, h2, atol=1e-6, what="gru replay")
    assert_close(mt.result, head(h2), atol=1e-6, what="head replay")
    # a masked step carried the state over: sample 0's last two outputs repeat step 3's
    assert np.array_equal(mt["lstm"].output[0, 4], mt["lstm"].output[0, 3])
    # the recorders and the observer are gone: the next call takes the fast path again
    assert "_recorder" not in lstm.__dict__ and "_reference_loop" not in lstm.__dict__
    assert model._network.observer is None


def test_explain_sequential_lists_every_layer_with_shapes_and_parameters(keras, tmp_path):
    kmodel = _keras_sequential(keras)
    kmodel.save(tmp_path / "m.keras")
    model = unrolled.load_model(str(tmp_path / "m.keras"))
    e = unrolled.explain(model, IDS)
    assert [row[0] for row in e.rows] == ["emb", "lstm", "gru", "head"]
    shapes = {row[0]: (row[3], row[4]) for row in e.rows}
    assert shapes["emb"] == ("(3, 6)", "(3, 6, 4)")
    assert shapes["lstm"] == ("(3, 6, 4)", "(3, 6, 5)")
    assert shapes["gru"] == ("(3, 6, 5)", "(3, 3)")
    assert shapes["head"] == ("(3, 3)", "(3, 2)")
    params = {row[0]: row[5] for row in e.rows}
    assert params == {l.name: l.count_params() for l in kmodel.layers}
    assert e.param_count == model.count_params() == kmodel.count_params()
    text = str(e)
    assert "mask = (ids != 0)" in text and "y = tanh(x W + b)" in text
    assert "c_t = f * c_{t-1} + i * g" in text            # the LSTM's equations
    assert e["lstm"].symbol("U").shape == (4, 20)
    # without x: the declared shapes, batch and timesteps by name
    symbolic = unrolled.explain(model)
    assert symbolic.rows[1][4] == "(batch, timesteps, 5)"
    assert "<table" in e._repr_html_()


# ---------------------------------------------------------------- functional, Bidirectional, Masking


def test_trace_functional_model_with_bidirectional(keras, tmp_path):
    kmodel = _keras_functional(keras)
    kmodel.save(tmp_path / "f.keras")
    model = unrolled.load_model(str(tmp_path / "f.keras"))
    x = _functional_input()
    mt = unrolled.trace(model, x)
    assert mt.names == ["forward_lstm", "backward_lstm", "rnn", "gru"]
    expected = _keras_intermediates(keras, kmodel, x)
    for name in ("masking", "bi", "rnn", "gru", "head"):
        assert_close(mt.outputs[name], expected[name], what=name)
    mask = np.any(x != 0, axis=-1)
    fwd, bwd = mt["forward_lstm"], mt["backward_lstm"]
    for tr in mt:
        assert np.array_equal(tr.mask, mask), tr.layer.name
        _check_trace_is_its_output(tr)
    # the backward direction read the sequence from the end
    assert [s.t for s in bwd.steps] == [5, 4, 3, 2, 1, 0]
    # merged exactly as the wrapper did: [forward | backward flipped into time order]
    merged = np.concatenate([fwd.output, bwd.output[:, ::-1]], axis=-1)
    assert np.array_equal(merged, mt.outputs["bi"])
    assert_close(merged, expected["bi"], what="merged trace vs Keras's Bidirectional")
    assert np.array_equal(mt["rnn"].x, mt.outputs["bi"])
    assert_close(mt["gru"].output, expected["gru"], what="gru (go_backwards)")
    assert_close(mt.result[1], kmodel.predict(x, verbose=0)[1], what="model output")

    e = unrolled.explain(model, x)
    assert e.param_count == model.count_params() == kmodel.count_params()
    bi = e["bi"]
    assert bi.merge_mode == "concat" and bi.returns[0][:2] == ("output", (3, 6, 8))
    assert bi.param_count == model.get_layer("bi").count_params()
    text = str(bi)
    assert "forward 'forward_lstm'" in text and "backward 'backward_lstm'" in text
    assert "go_backwards=True" in text and "y = [y_fwd | y_bwd]" in text


@pytest.mark.parametrize("merge_mode", ["sum", "mul", None])
def test_trace_bidirectional_directly_all_merges_and_states(merge_mode):
    rng = np.random.default_rng(3)
    bi = layers.Bidirectional(layers.GRU(3, return_sequences=True, return_state=True, name="g"),
                              merge_mode=merge_mode, name="bi")
    x = rng.normal(size=(2, 5, 4)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    mt = unrolled.trace(bi, x, mask=mask)
    fwd, bwd = mt["forward_g"], mt["backward_g"]
    y_f, y_b = fwd.output, bwd.output[:, ::-1]
    merged = {"sum": y_f + y_b, "mul": y_f * y_b, None: None}[merge_mode]
    normal = bi(x, mask=mask)
    if merge_mode is None:
        assert np.array_equal(mt.result[0], y_f) and np.array_equal(mt.result[1], y_b)
        states = mt.result[2:]
    else:
        assert np.array_equal(mt.result[0], merged)
        states = mt.result[1:]
    assert np.array_equal(states[0], fwd.final_states[0])
    assert np.array_equal(states[1], bwd.final_states[0])
    for got, want in zip(mt.result, normal):
        np.testing.assert_allclose(got, want, atol=1e-6)
    e = unrolled.explain(bi, x)
    assert e.param_count == bi.count_params()
    assert [r[0] for r in e.returns] == (["y_fwd", "y_bwd"] if merge_mode is None else
                                         ["output"]) + ["forward_final_h", "backward_final_h"]


def test_trace_time_distributed_recurrent_layer():
    rng = np.random.default_rng(4)
    td = layers.TimeDistributed(layers.SimpleRNN(3, name="inner"), name="td")
    x = rng.normal(size=(2, 3, 4, 5)).astype("float32")   # (batch, outer steps, inner steps, feat)
    mt = unrolled.trace(td, x)
    assert mt.names == ["inner", "inner#1", "inner#2"]
    for t, tr in enumerate(mt):
        assert np.array_equal(tr.x, x[:, t])
        assert np.array_equal(tr.output, mt.result[:, t])
    np.testing.assert_allclose(mt.result, td(x), atol=1e-6)
    e = unrolled.explain(td, x)
    assert e.param_count == td.count_params()
    assert "y[:, t] = SimpleRNN 'inner'(x[:, t])" in str(e)


def test_trace_restores_everything_after_an_error():
    model = unrolled.Sequential([unrolled.Input((None, 3)), layers.LSTM(2, name="l")])
    with pytest.raises(ValueError):
        unrolled.trace(model, np.zeros((2, 4, 5), "float32"))      # wrong feature size
    lstm = model.layers[0]
    assert "_recorder" not in lstm.__dict__ and "_reference_loop" not in lstm.__dict__
    assert "_recorder" not in lstm.cell.__dict__ and model._network.observer is None


# ---------------------------------------------------------------- figures and pages


def test_bidirectional_diagram_draws_both_directions_and_the_merge():
    bi = layers.Bidirectional(layers.LSTM(3, return_sequences=True, name="l"), name="bi")
    x = np.ones((2, 4, 5), "float32")
    d = diagrams.bidirectional(bi, x)
    assert d.ids["forward"] == [f"fwd-{t}" for t in range(4)]
    assert d.ids["backward"] == [f"bwd-{t}" for t in range(4)]
    assert d.ids["merges"] == [f"merge-{t}" for t in range(4)]
    svg = d.svg()
    for gid in d.ids["forward"] + d.ids["backward"] + d.ids["merges"]:
        assert f'id="{gid}"' in svg
    # the backward row's state arrows point right to left: each starts right of where it ends
    fig = d.figure
    arrows = {p.get_gid(): p for p in fig.axes[0].patches if p.get_gid()}
    for i in range(3):
        (fx0, _), (fx1, _) = arrows[f"fstate-{i}"]._posA_posB
        (bx0, _), (bx1, _) = arrows[f"bstate-{i}"]._posA_posB
        assert fx0 < fx1 and bx0 > bx1
    assert "[forward | backward], 3 + 3 = 6" in svg
    last = layers.Bidirectional(layers.GRU(3, name="g"), merge_mode="sum", name="bi2")
    last(np.ones((2, 9, 5), "float32"))
    assert diagrams.bidirectional(last).ids["merges"] == ["merge"]


def test_model_page_has_a_layer_menu_with_each_layers_page():
    model = unrolled.Sequential([unrolled.Input((4, 3)), layers.SimpleRNN(3, return_sequences=True,
                                                                           name="a"),
                                 layers.Bidirectional(layers.GRU(2, name="b"), name="bi")])
    mt = unrolled.trace(model, np.ones((2, 4, 3), "float32"))
    page = model_html = mt._repr_html_()
    assert page.startswith("<iframe srcdoc=")
    from unrolled.explain.page import model_page_html

    model_html = model_page_html(mt)
    assert 'id="layer-select"' in model_html
    assert model_html.count('class="layer-page"') == 3
    for name in ("a", "forward_b", "backward_b"):
        assert f'data-name="{name}"' in model_html
    assert "ModelTrace(Sequential" in repr(mt) and "[forward_b]" in str(mt)


# ---------------------------------------------------------------- the command on Keras's files


def test_explain_command_on_keras_files(keras, tmp_path, capsys):
    kmodel = _keras_sequential(keras)
    kmodel.save(tmp_path / "m.keras")
    np.save(tmp_path / "ids.npy", IDS)
    out = tmp_path / "out"
    assert main(["explain", str(tmp_path / "m.keras"), "--input", str(tmp_path / "ids.npy"),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "lstm (LSTM)   (3, 6, 4) -> (3, 6, 5)" in printed
    names = {p.name for p in out.iterdir()}
    for prefix in ("0_lstm_", "1_gru_"):
        for name in ("explain.txt", "rolled.svg", "unrolled.png", "cell_inside.svg", "cell.gif",
                     "sequence.gif", "index.html"):
            assert prefix + name in names, prefix + name
    assert {"model.txt", "index.html"} <= names
    with Image.open(out / "0_lstm_sequence.gif") as image:
        assert image.n_frames == IDS.shape[1] + 1
    page = (out / "1_gru_index.html").read_text()
    # the GRU page was traced on the LSTM's real output, with Embedding's mask
    assert '"mask": [false, true, false]' in page or '"mask": [true, true, false]' in page
    assert 'data-name="gru"' in (out / "index.html").read_text()

    fmodel = _keras_functional(keras)
    fmodel.save(tmp_path / "f.keras")
    np.save(tmp_path / "x.npy", _functional_input())
    out2 = tmp_path / "out2"
    assert main(["explain", str(tmp_path / "f.keras"), "--input", str(tmp_path / "x.npy"),
                 "--out", str(out2)]) == 0
    names = {p.name for p in out2.iterdir()}
    for prefix in ("0_forward_lstm_", "1_backward_lstm_", "2_rnn_", "3_gru_"):
        assert prefix + "sequence.gif" in names and prefix + "index.html" in names, prefix
    assert "bi_bidirectional.svg" in names and "bi_bidirectional.png" in names
    # without --input: a sample of the model's own input kind (ids for an Embedding model)
    assert main(["explain", str(tmp_path / "m.keras"), "--out", str(tmp_path / "out3")]) == 0
    assert (tmp_path / "out3" / "0_lstm_index.html").exists()
