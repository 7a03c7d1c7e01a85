"""`import unrolled` loads nothing it does not need, and the lazily loaded names behave as before.

The packages' public names resolve on first use (PEP 562). These tests run Python in a fresh
subprocess, where nothing has been imported yet, and look at `sys.modules`; they time nothing.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import numpy as np
import pytest

import unrolled

# Modules `import unrolled` must not import: third-party extras, the layer and model code,
# saving, training, the kernels, and numpy itself (none of unrolled's own code runs at import).
NOT_AT_IMPORT = [
    "numpy", "numpy.random", "matplotlib", "PIL", "h5py", "numba", "scipy", "threadpoolctl",
    "jax", "keras", "torch", "difflib", "dataclasses", "zipfile", "json",
    "unrolled.activations", "unrolled.initializers", "unrolled.utils", "unrolled._checks",
    "unrolled._random", "unrolled.layers", "unrolled.layers.base", "unrolled.layers.rnn",
    "unrolled.layers.lstm", "unrolled.layers.core", "unrolled.layers.wrappers", "unrolled.models",
    "unrolled.models.model", "unrolled.explain._text", "unrolled.explain._trace",
    "unrolled.explain.diagrams", "unrolled.saving", "unrolled.training", "unrolled.kernels",
    "unrolled.callbacks", "unrolled.losses", "unrolled.metrics", "unrolled.optimizers",
    "unrolled.regularizers",
]


def _fresh(code: str) -> str:
    """Run `code` in a new interpreter (same sys.path and environment); its stdout."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _loaded_after(code: str, names: list[str]) -> list[str]:
    out = _fresh(f"import sys\n{code}\nprint(repr([m for m in {names!r} if m in sys.modules]))")
    return ast.literal_eval(out.strip().splitlines()[-1])


def test_checked_modules_exist():
    # A misspelled name in NOT_AT_IMPORT would pass the laziness test without checking anything.
    import importlib.util

    missing = [m for m in NOT_AT_IMPORT if m.startswith(("unrolled", "numpy", "json", "zipfile",
                                                         "difflib", "dataclasses"))
               and importlib.util.find_spec(m) is None]
    assert missing == []


def test_import_unrolled_imports_none_of_the_deferred_modules():
    assert _loaded_after("import unrolled", NOT_AT_IMPORT) == []


def test_one_layer_class_loads_only_what_it_needs():
    heavy = ["numpy.random", "difflib", "unrolled.layers.core", "unrolled.layers.wrappers",
             "unrolled.layers.gru", "unrolled.models", "unrolled.saving", "unrolled.training",
             "unrolled.explain._text", "unrolled.kernels", "matplotlib", "h5py", "numba"]
    loaded = _loaded_after("import unrolled\nunrolled.layers.LSTM", heavy + ["unrolled.layers.lstm"])
    assert loaded == ["unrolled.layers.lstm"]


@pytest.mark.parametrize("package", ["unrolled", "unrolled.layers", "unrolled.models",
                                     "unrolled.explain"])
def test_every_public_name_resolves_and_is_listed(package):
    module = sys.modules[package]
    for name in module.__all__:
        value = getattr(module, name)
        assert value is not None, name
        assert name in dir(module), name
    with pytest.raises(AttributeError, match="no_such_name"):
        getattr(module, "no_such_name")


def test_lazy_names_are_the_defining_modules_objects():
    from unrolled.layers import gru, input_layer, lstm, rnn, serialization, wrappers
    from unrolled.models import model, node, sequential

    assert unrolled.layers.LSTM is lstm.LSTM and unrolled.layers.GRUCell is gru.GRUCell
    assert unrolled.layers.RNN is rnn.RNN and unrolled.layers.Bidirectional is wrappers.Bidirectional
    assert unrolled.layers.deserialize is serialization.deserialize
    assert unrolled.Input is unrolled.models.Input is unrolled.layers.Input is input_layer.Input
    assert unrolled.Model is unrolled.models.Model is model.Model
    assert unrolled.Sequential is sequential.Sequential
    assert unrolled.models.SymbolicTensor is node.SymbolicTensor
    assert unrolled.load_model is unrolled.saving.load_model
    assert unrolled.gradients is unrolled.training.gradients  # the function, as before
    assert callable(unrolled.explain) and unrolled.explain.__module__ == "unrolled.explain._text"
    assert unrolled.trace.__module__ == "unrolled.explain._trace"
    assert unrolled.activations.__name__ == "unrolled.activations"


def test_star_import_and_submodule_attributes_in_a_fresh_interpreter():
    out = _fresh(
        "import unrolled\n"
        # Submodules that `import unrolled` used to import eagerly are still attributes.
        "print(unrolled.layers.rnn.__name__, unrolled.models.node.__name__, "
        "unrolled.saving.__name__, unrolled._checks.__name__)\n"
        # Importing a submodule of the explain package must not rebind unrolled.explain.
        "import unrolled.explain._models\n"
        "print(callable(unrolled.explain), unrolled.explain.__module__)\n"
        "from unrolled import *\n"
        "print(layers.LSTM.__name__, Sequential.__name__, callable(explain), gradients.__name__)\n")
    assert out.split() == ["unrolled.layers.rnn", "unrolled.models.node", "unrolled.saving",
                           "unrolled._checks", "True", "unrolled.explain._text", "LSTM",
                           "Sequential", "True", "gradients"]


def test_a_saved_model_loads_in_a_fresh_interpreter(tmp_path):
    # The class registry imports a layer's module when a file names it: a cold `import unrolled`
    # followed by load_model must find every class the file uses.
    layers = unrolled.layers
    inputs = unrolled.Input((5, 3))
    x = layers.Masking(0.0)(inputs)
    x = layers.Bidirectional(layers.LSTM(4, return_sequences=True))(x)
    x = layers.RNN(layers.StackedRNNCells([layers.GRUCell(3), layers.SimpleRNNCell(2)]),
                   return_sequences=True)(x)
    x = layers.TimeDistributed(layers.Dense(2))(x)
    outputs = layers.Dropout(0.1)(x)
    model = unrolled.Model(inputs, outputs)
    data = np.random.default_rng(0).standard_normal((2, 5, 3)).astype("float32")
    path = tmp_path / "all.keras"
    model.save(str(path))
    np.save(tmp_path / "x.npy", data)
    np.save(tmp_path / "y.npy", model.predict(data))

    out = _fresh(
        "import numpy as np, unrolled\n"
        f"m = unrolled.load_model({str(path)!r})\n"
        f"x = np.load({str(tmp_path / 'x.npy')!r}); y = np.load({str(tmp_path / 'y.npy')!r})\n"
        "print(float(np.abs(m.predict(x) - y).max()))\n"
        "print(' '.join(type(layer).__name__ for layer in m.layers))\n")
    difference, names = out.strip().splitlines()
    assert float(difference) == 0.0
    assert names.split() == ["InputLayer", "Masking", "Bidirectional", "RNN", "TimeDistributed",
                             "Dropout"]
