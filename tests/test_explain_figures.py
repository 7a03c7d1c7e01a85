"""Diagrams and animations: drawn from the object, with as many boxes and frames as it has steps."""

import io
import re

import numpy as np
import pytest
from PIL import Image

import unrolled
from unrolled import layers
from unrolled.explain import animation, diagrams


def cell_ids(svg):
    return re.findall(r'<g id="(cell-\d+-[\dT]+)"', svg)


def stack(**options):
    return layers.RNN([layers.SimpleRNNCell(3), layers.SimpleRNNCell(2)], **options)


@pytest.mark.parametrize("timesteps, max_steps, columns, collapsed", [
    (1, 6, 1, False), (3, 6, 3, False), (6, 6, 6, False), (7, 6, 5, True), (40, 6, 5, True),
    (40, 9, 8, True),
])
@pytest.mark.parametrize("make, depth", [(lambda: layers.SimpleRNN(3), 1), (stack, 2)])
def test_unrolled_has_one_box_per_cell_and_drawn_step(timesteps, max_steps, columns, collapsed,
                                                      make, depth):
    layer = make()
    x = np.zeros((2, timesteps, 4), dtype="float32")
    diagram = diagrams.unrolled(layer, x, max_steps=max_steps)
    svg = diagram.svg()
    ids = cell_ids(svg)
    assert len(ids) == depth * columns == len(diagram.ids["cells"])
    assert ('id="ellipsis"' in svg) == collapsed
    assert f"T = {timesteps}" in svg
    if collapsed:
        hidden = timesteps - columns
        assert f"{hidden} steps" in svg
        assert f"cell-0-{timesteps - 1}" in ids         # the last step is always drawn
    assert "(2, 4)" in svg                               # x_t's shape on the first input edge


@pytest.mark.parametrize("return_sequences, return_state", [(False, False), (True, False),
                                                            (False, True), (True, True)])
def test_unrolled_highlights_what_the_call_returns(return_sequences, return_state):
    layer = layers.SimpleRNN(3, return_sequences=return_sequences, return_state=return_state)
    diagram = diagrams.unrolled(layer, np.zeros((2, 4, 5)))
    svg = diagram.svg()

    def colour(gid):
        block = svg[svg.index(f'<g id="{gid}"'):]
        return re.search(r"stroke: (#[0-9a-f]{6})", block).group(1)

    green = diagrams.RETURNED
    outs = [colour(f"out-{k}") for k in range(4)]
    assert outs[-1] == green
    assert all((c == green) == return_sequences for c in outs[:-1])
    assert (colour("state-final-0") == green) == return_state


def test_rolled_and_inside_diagrams_save_svg_and_png(tmp_path):
    rnn = stack()
    paths = diagrams.rolled(rnn, np.zeros((2, 5, 4))).save(str(tmp_path / "rolled"))
    svg = open(paths[0]).read()
    assert svg.count('id="loop-') == 2 and svg.count('<g id="cell-') == 2
    with Image.open(paths[1]) as image:
        assert image.format == "PNG" and image.width > 300
    inside = diagrams.cell_inside(layers.SimpleRNNCell(3), np.zeros((2, 4)))
    svg = inside.svg()
    for gid in ("op-xU", "op-hW", "op-add", "op-act", "in-b"):
        assert f'id="{gid}"' in svg
    assert "(4, 3)" in svg and "(2, 3)" in svg          # U (features, units), h_t (batch, units)
    assert inside._repr_svg_().lstrip().startswith("<?xml")


def gif_frames(animation_obj):
    with Image.open(io.BytesIO(animation_obj.gif())) as image:
        return image.n_frames


@pytest.mark.parametrize("batch", [1, 3])
def test_cell_animation_one_frame_per_sample_then_the_batch(batch, rng):
    x = rng.normal(size=(batch, 4)).astype("float32")
    anim = animation.animate(unrolled.trace(layers.SimpleRNNCell(3), x))
    assert anim.n_frames == batch + 1 == gif_frames(anim)
    assert "sample 1 of" in anim.captions[0] and "all" in anim.captions[-1]


@pytest.mark.parametrize("make, timesteps, frames", [
    (lambda: layers.SimpleRNN(3, return_sequences=True), 3, 4),
    (lambda: stack(return_sequences=True), 2, 3),
    (lambda: layers.SimpleRNN(2, go_backwards=True), 9, 6),   # collapsed: 5 drawn steps + 1
])
def test_layer_animation_sweeps_the_drawn_steps(make, timesteps, frames, rng, tmp_path):
    x = rng.normal(size=(2, timesteps, 3)).astype("float32")
    anim = animation.animate(unrolled.trace(make(), x))
    assert anim.n_frames == frames == gif_frames(anim)
    assert anim.captions[0] == "initial state"
    path = anim.save(str(tmp_path / "a.gif"))
    with Image.open(path) as image:
        assert image.format == "GIF" and image.n_frames == frames
    assert anim._repr_html_().startswith('<img class="unrolled-animation"')


def test_animation_rejects_bad_arguments(rng):
    with pytest.raises(TypeError, match="Trace"):
        animation.animate(layers.SimpleRNN(2))
    tr = unrolled.trace(layers.SimpleRNN(2), rng.normal(size=(2, 2, 2)))
    with pytest.raises(ValueError, match="sample"):
        animation.animate(tr, sample=2)


def test_page_is_self_contained_and_carries_the_trace(rng, tmp_path):
    layer = stack(return_sequences=True)
    mask = np.array([[1, 1, 0, 1], [1, 1, 1, 1]], dtype=bool)
    tr = unrolled.trace(layer, rng.normal(size=(2, 4, 3)).astype("float32"), mask=mask)
    path = tr.save_html(str(tmp_path / "page.html"))
    text = open(path, encoding="utf-8").read()
    # nothing fetched: no external source, link, stylesheet or import (SVG namespaces are names)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text)
    assert "<link" not in text and "@import" not in text and "url(http" not in text
    assert "<metadata>" not in text
    for hook in ("step-slider", "btn-prev", "btn-next", "btn-play", "step-label", "v-0-h",
                 "v-1-z", "v-out", "maxdiff", "cell-1-3", "trace-data"):
        assert f'id="{hook}"' in text or f'"{hook}"' in text
    from unrolled.explain.page import page_data

    data = page_data(tr)
    assert data["maxdiff"] == 0.0 and data["maxdiff_normal"] < 1e-6
    assert data["steps"][2]["mask"] == [False, True]
    assert tr._repr_html_().startswith("<iframe srcdoc=")


@pytest.mark.parametrize("cell, gates", [(layers.LSTMCell, ["i", "f", "c", "o"]),
                                         (layers.GRUCell, ["z", "r", "h"])])
def test_gated_cells_inside_and_animated(cell, gates, rng):
    svg = diagrams.cell_inside(cell(3), np.zeros((2, 4))).svg()
    for gate in gates:
        assert f'id="block-{gate}"' in svg
    assert "(4, {})".format(3 * len(gates)) in svg            # U (features, blocks * units)
    layer = layers.RNN(cell(3), return_sequences=True)
    tr = unrolled.trace(layer, rng.normal(size=(2, 3, 4)).astype("float32"))
    assert animation.animate(tr).n_frames == 4
    assert animation.animate(unrolled.trace(cell(3), rng.normal(size=(2, 4)))).n_frames == 3
