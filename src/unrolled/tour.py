"""The guided walkthrough behind `python -m unrolled tour`.

It follows the notebook "Understanding Recurrent Neural Networks in TensorFlow": the notation and
dimensions, one `SimpleRNNCell` step, `SimpleRNN` over all timesteps, the weights, the equations
followed by hand (with the largest difference printed), `StackedRNNCells` and the generic `RNN`.
Every number printed is computed by the layers themselves on a built-in sample input.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np

from unrolled import layers, utils

BATCH, TIMESTAMP, FEATURE, UNITS = 2, 3, 4, 3


def sample_input() -> np.ndarray:
    """The tour's input: (batch=2, timestamp=3, feature=4), small readable numbers."""
    return (np.arange(BATCH * TIMESTAMP * FEATURE, dtype="float32")
            .reshape(BATCH, TIMESTAMP, FEATURE) / 10.0 - 1.0)


def _fmt(array: np.ndarray) -> str:
    return np.array2string(np.asarray(array), precision=4, suppress_small=True,
                           floatmode="fixed", separator=", ")


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


FIGURES = ["rnn_rolled.svg", "rnn_rolled.png", "rnn_unrolled.svg", "rnn_unrolled.png",
           "stacked_rnn_cells.svg", "stacked_rnn_cells.png", "simple_rnn_cell.gif",
           "simple_rnn.gif", "rnn.gif", "index.html"]


def run(out_dir: str | None = None, seed: int = 0, echo: Callable[[str], None] = print,
        figures: bool = True) -> dict:
    """Run the tour, print it, and write `tour.txt` and `tour_arrays.npz` into `out_dir`.

    With `figures` (and an `out_dir`) it also draws, from the live objects of the tour, the
    diagrams `rnn_rolled`, `rnn_unrolled` and `stacked_rnn_cells` (.svg and .png), the animations
    `simple_rnn_cell.gif`, `simple_rnn.gif` and `rnn.gif`, and `index.html`, the interactive page
    stepping through the SimpleRNN's trace (see `FIGURES`).

    Returns the largest absolute difference between each layer and the equations done by hand,
    keyed by section, so callers (and tests) can check them.
    """
    lines: list[str] = []

    def say(text: str = "") -> None:
        lines.append(text)
        echo(text)

    def section(title: str) -> None:
        say()
        say(title)
        say("=" * len(title))

    utils.set_random_seed(seed)
    X = sample_input()
    diffs: dict[str, float] = {}

    section("1. Notation and dimensions")
    say("A recurrent layer reads a sequence one timestep at a time and keeps a state h:")
    say()
    say("    textbook (column vectors):  h_t = tanh(W h_{t-1} + U x_t + b)")
    say("    Keras    (row vectors):     h_t = tanh(x_t U + h_{t-1} W + b)")
    say()
    say("Keras (and unrolled) keep examples in rows, so weights multiply on the right and")
    say("the matrices are the transposes of the textbook's. The dimensions:")
    say(f"    batch     = {BATCH}   sequences processed together")
    say(f"    timestamp = {TIMESTAMP}   steps in each sequence")
    say(f"    feature   = {FEATURE}   numbers per step of input")
    say(f"    units     = {UNITS}   size of the state h (and of the output)")
    say(f"Input X, shape (batch, timestamp, feature) = {X.shape}:")
    say(_indent(_fmt(X)))

    section("2. SimpleRNNCell: one step")
    cell = layers.SimpleRNNCell(UNITS)
    X_1 = X[:, 0, :]
    h_0 = (np.zeros((BATCH, UNITS), dtype="float32"),)
    output, states = cell(inputs=X_1, states=h_0)
    say("cell = layers.SimpleRNNCell(units=3)")
    say("output, states = cell(inputs=X_1, states=h_0)")
    say(f"    X_1 = X[:, 0, :]   shape (batch, feature) = {X_1.shape}")
    say(f"    h_0 = (zeros,)     a 1-tuple holding shape (batch, units) = {h_0[0].shape}")
    say(f"    output             shape {output.shape}  (= h_1)")
    say(f"    states             a list of {len(states)}: [h_1], h_1 shape {states[0].shape}")
    say(_indent(_fmt(output)))
    U, W, b = cell.get_weights()
    by_hand = np.tanh(X_1 @ U + h_0[0] @ W + b)
    diffs["cell"] = float(np.abs(by_hand - output).max())
    say(f"By hand, tanh(X_1 U + h_0 W + b): max |difference| = {diffs['cell']:.3g}")
    say(f"The output is the new state: output is states[0] -> {bool(output is states[0])}")

    section("3. SimpleRNN: the cell over all timesteps")
    # Named, so the explanation printed in section 8 reads the same on every run.
    rnn = layers.SimpleRNN(UNITS, return_sequences=True, return_state=True, name="simple_rnn")
    sequence, final_state = rnn(X)
    say("rnn = layers.SimpleRNN(units=3, return_sequences=True, return_state=True)")
    say("whole_sequence, final_state = rnn(X)")
    say(f"    whole_sequence  shape (batch, timestamp, units) = {sequence.shape}")
    say(f"    final_state     shape (batch, units) = {final_state.shape}")
    say("Without return_sequences the layer returns only the last output, shape (batch, units);")
    say("with return_state it also returns the final state (for SimpleRNN the same numbers).")

    section("4. The weights")
    U, W, b = rnn.get_weights()
    say("U, W, b = rnn.get_weights()")
    say(f"    U  kernel            (feature, units) = {U.shape}   multiplies x_t")
    say(f"    W  recurrent_kernel  (units, units)   = {W.shape}   multiplies h_(t-1)")
    say(f"    b  bias              (units,)         = {b.shape}")
    say(f"Parameters: {U.size} + {W.size} + {b.size} = {rnn.count_params()}")
    say("The layer also names them: rnn.U, rnn.W, rnn.b are the same arrays, not copies.")
    say("U =")
    say(_indent(_fmt(U)))

    section("5. The equations, by hand")
    h = np.zeros((BATCH, UNITS), dtype="float32")
    worst = 0.0
    for t in range(TIMESTAMP):
        h = np.tanh(X[:, t, :] @ U + h @ W + b)
        step = float(np.abs(h - sequence[:, t, :]).max())
        worst = max(worst, step)
        say(f"    t={t}: h_{t + 1} = tanh(X[:, {t}] U + h_{t} W + b)   max |diff| = {step:.3g}")
    diffs["simple_rnn"] = worst
    say(f"Largest difference between the equations and SimpleRNN: {worst:.3g}")

    section("6. StackedRNNCells: cells feeding each other")
    stack = layers.StackedRNNCells([layers.SimpleRNNCell(UNITS), layers.SimpleRNNCell(2)])
    stacked = layers.RNN(stack, return_sequences=True, return_state=True)
    stacked_out, state_1, state_2 = stacked(X)
    say("stack = layers.StackedRNNCells([SimpleRNNCell(3), SimpleRNNCell(2)])")
    say("whole_sequence, state_1, state_2 = layers.RNN(stack, return_sequences=True,")
    say("                                              return_state=True)(X)")
    say(f"    state_size = {stack.state_size}: one state per cell")
    say(f"    whole_sequence {stacked_out.shape}: the last cell's outputs")
    say(f"    state_1 = [h1] with h1 {state_1[0].shape};  state_2 = [h2] with h2 {state_2[0].shape}")
    U1, W1, b1, U2, W2, b2 = stacked.get_weights()
    h1 = np.zeros((BATCH, UNITS), dtype="float32")
    h2 = np.zeros((BATCH, 2), dtype="float32")
    worst = 0.0
    for t in range(TIMESTAMP):
        h1 = np.tanh(X[:, t, :] @ U1 + h1 @ W1 + b1)
        h2 = np.tanh(h1 @ U2 + h2 @ W2 + b2)
        worst = max(worst, float(np.abs(h2 - stacked_out[:, t, :]).max()))
    say("By hand: h1_t = tanh(x_t U1 + h1_(t-1) W1 + b1);  h2_t = tanh(h1_t U2 + h2_(t-1) W2 + b2)")
    diffs["stacked"] = worst
    say(f"Largest difference between the equations and the stack: {worst:.3g}")

    section("7. RNN: the generic wrapper")
    wrapped = layers.RNN(layers.SimpleRNNCell(UNITS), return_sequences=True)
    wrapped(X)
    wrapped.set_weights(rnn.get_weights())
    same = wrapped(X)
    diffs["rnn"] = float(np.abs(same - sequence).max())
    say("layers.RNN(layers.SimpleRNNCell(3)) is SimpleRNN(3): with the same weights,")
    say(f"max |RNN(cell) - SimpleRNN| = {diffs['rnn']:.3g}")
    say("RNN also takes a list of cells (wrapped in StackedRNNCells), masks, go_backwards,")
    say("initial_state and stateful=True; see help(unrolled.layers.RNN).")

    section("8. See it: explain, trace, figures")
    from unrolled.explain import explain, trace

    say("unrolled.explain(rnn, X) maps the equation onto this layer:")
    say(_indent(str(explain(rnn, X))))
    traced = trace(rnn, X)
    worst = float(np.abs(traced.h - sequence).max())
    say("unrolled.trace(rnn, X) records every value the layer computes, step by step;")
    say(f"its h_t against the layer's output: max |diff| = {worst:.3g}")

    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        if figures:
            _write_figures(out_dir, X, cell, X_1, h_0, rnn, stacked, traced)
            echo("")
            echo("Figures: " + ", ".join(FIGURES))
        np.savez(os.path.join(out_dir, "tour_arrays.npz"), X=X, U=U, W=W, b=b,
                 whole_sequence=sequence, final_state=final_state)
        with open(os.path.join(out_dir, "tour.txt"), "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        echo("")
        echo(f"Wrote tour.txt and tour_arrays.npz to {os.path.abspath(out_dir)}")
    return diffs


def _write_figures(out_dir: str, X: np.ndarray, cell: layers.SimpleRNNCell, X_1: np.ndarray,
                   h_0: tuple, rnn: layers.SimpleRNN, stacked: layers.RNN, traced) -> None:
    """The tour's pictures, each drawn from the object the tour just used."""
    from unrolled.explain import animation, diagrams, trace

    def path(name: str) -> str:
        return os.path.join(out_dir, name)

    diagrams.rolled(rnn, X).save(path("rnn_rolled"))
    diagrams.unrolled(rnn, X).save(path("rnn_unrolled"))
    diagrams.unrolled(stacked, X).save(path("stacked_rnn_cells"))
    animation.animate(trace(cell, X_1, h_0)).save(path("simple_rnn_cell.gif"))
    animation.animate(traced).save(path("simple_rnn.gif"))
    animation.animate(trace(stacked, X)).save(path("rnn.gif"))
    traced.save_html(path("index.html"))
