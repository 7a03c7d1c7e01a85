"""`python -m unrolled tour` writes the figures; `python -m unrolled explain` explains a user's layer."""

import numpy as np
import pytest
from PIL import Image

from unrolled import tour
from unrolled.__main__ import load_object, main


def test_tour_writes_every_figure_from_live_objects(tmp_path):
    diffs = tour.run(str(tmp_path), echo=lambda s: None)
    assert max(diffs.values()) < 1e-6
    for name in tour.FIGURES:
        assert (tmp_path / name).stat().st_size > 500, name
    svg = (tmp_path / "rnn_unrolled.svg").read_text()
    assert svg.count('<g id="cell-0-') == tour.TIMESTAMP
    stacked = (tmp_path / "stacked_rnn_cells.svg").read_text()
    assert stacked.count('<g id="cell-') == 2 * tour.TIMESTAMP
    frames = {"simple_rnn_cell.gif": tour.BATCH + 1, "simple_rnn.gif": tour.TIMESTAMP + 1,
              "rnn.gif": tour.TIMESTAMP + 1}
    for name, count in frames.items():
        with Image.open(tmp_path / name) as image:
            assert image.n_frames == count, name
    page = (tmp_path / "index.html").read_text()
    assert 'id="step-slider"' in page and 'id="trace-data"' in page
    assert "unrolled.trace(rnn, X)" in (tmp_path / "tour.txt").read_text()


MODEL_SOURCE = '''
import numpy as np
from unrolled import layers


def make():
    layer = layers.RNN([layers.SimpleRNNCell(3), layers.SimpleRNNCell(2)], return_sequences=True)
    layer(np.zeros((1, 4, 5), dtype="float32"))
    return layer

built = make()
'''


def test_explain_command_on_a_layer_built_in_python(tmp_path, capsys):
    source = tmp_path / "my_model.py"
    source.write_text(MODEL_SOURCE)
    x = np.random.default_rng(0).normal(size=(2, 6, 5)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    assert main(["explain", f"{source}:make", "--input", str(tmp_path / "x.npy"),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "h2_t = tanh(h1_t U2 + h2_{t-1} W2 + b2)" in printed
    names = sorted(p.name for p in out.iterdir())
    for name in ("explain.txt", "rolled.svg", "rolled.png", "unrolled.svg", "unrolled.png",
                 "cell_inside.svg", "cell.gif", "sequence.gif", "index.html"):
        assert name in names
    assert (out / "unrolled.svg").read_text().count('<g id="cell-') == 2 * 6
    with Image.open(out / "sequence.gif") as image:
        assert image.n_frames == 6 + 1          # the start, then each of the 6 steps
    # without --input: a random input of the size the layer was built for
    assert main(["explain", f"{source}:built", "--out", str(tmp_path / "out2")]) == 0
    assert "T = 4" in (tmp_path / "out2" / "unrolled.svg").read_text()


def test_load_object_errors_are_clear(tmp_path):
    import pytest

    with pytest.raises(SystemExit, match="no such model file"):
        load_object(str(tmp_path / "missing.keras"))
    (tmp_path / "m.py").write_text("x = 1\n")
    with pytest.raises(SystemExit, match="defines no 'nothing'"):
        load_object(f"{tmp_path / 'm.py'}:nothing")
