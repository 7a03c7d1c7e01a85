"""unrolled.kernels.warmup (`python -m unrolled warmup`): a warm-up leaves a later process nothing
to compile at the shapes (or the model) it warmed, reports what it compiled, leaves a model it
warms as it was, and rejects bad arguments.

The warm-ups here run with a Numba cache directory of their own (`NUMBA_CACHE_DIR`), empty at
the start, so that what they compile is what a new machine compiles.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from unrolled import __main__ as cli
from unrolled import layers, models
from unrolled.kernels import warm_up, warm_up_model, warmup
from unrolled.kernels._threads import cores

SRC = Path(__file__).resolve().parents[1] / "src"

# A later process: the cells and shapes given, both return_sequences, both directions, more calls
# than the warm-up made, and training steps; it prints the functions Numba compiled (cache
# misses).
LATER = r"""
import json, sys
import numpy as np
from unrolled import layers, models
from unrolled.kernels import warmup

make = {"simple_rnn": layers.SimpleRNN, "lstm": layers.LSTM, "gru": layers.GRU}
for cell in sys.argv[1].split(","):
    for shape in warmup.parse_shapes(sys.argv[2]):
        x = np.random.default_rng(0).standard_normal(shape[:3], dtype=np.float32)
        for sequences, backwards in ((True, False), (False, False), (True, True)):
            layer = make[cell](shape[3], return_sequences=sequences, go_backwards=backwards)
            for _ in range(12):
                layer(x)
        for backwards in (False, True) if sys.argv[3] == "train" else ():
            model = models.Sequential([layers.Input(shape[1:3]),
                                       make[cell](shape[3], go_backwards=backwards)])
            model.compile("sgd", "mse")
            for _ in range(12):
                model.train_on_batch(x, np.zeros((shape[0], shape[3]), np.float32))
counts = warmup._counts()
print(json.dumps({"compiled": sorted(n for n, (m, _) in counts.items() if m),
                  "loaded": sorted(n for n, (_, h) in counts.items() if h)}))
"""


def _run(args: list[str], cache: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache),
               PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    env.pop("UNROLLED_NUMBA", None)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          timeout=900)


def _later(cells: str, shapes: str, mode: str, cache: Path) -> dict:
    done = _run(["-c", LATER, cells, shapes, mode], cache)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_later_process_compiles_nothing_at_the_shapes_warmed(tmp_path):
    cells, shapes = "simple_rnn,lstm", "4x5x1x2,3x4x2x3"
    # Without a warm-up, the later process compiles: the check below can fail.
    assert _later(cells, shapes, "forward", tmp_path / "cold")["compiled"]

    cache = tmp_path / "warm"
    done = _run(["-m", "unrolled", "warmup", "--cells", cells, "--shapes", shapes, "--train"],
                cache)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")
            and not line.startswith("| cell")]
    assert [row.split(" | ")[:3] for row in rows] == [
        [f"| {cell}", shape, mode] for mode in ("forward", "train") for cell in cells.split(",")
        for shape in ("(4, 5, 1, 2)", "(3, 4, 2, 3)")]
    assert int(rows[0].split(" | ")[5]) > 0           # the first point compiled its loops
    assert "functions compiled" in done.stdout and str(cache) in done.stdout
    assert any(cache.rglob("*.nbi")), "Numba's cache index files are in the directory given"

    later = _later(cells, shapes, "train", cache)
    assert later["compiled"] == []
    assert later["loaded"], "the later process loaded the warmed loops from the cache"


def test_the_forms_the_thread_choice_tries_later_are_warmed_too(tmp_path):
    # At SimpleRNN (32, 100, 16, 64) on two cores the thread choice tries the batch in row
    # blocks from the third call, a form of the loop of its own: one call a point leaves it to
    # compile in the later process, the default seven do not.
    # (each in a cache of its own: the later process writes what it compiles into its cache)
    warm = ["-m", "unrolled", "warmup", "--cells", "simple_rnn", "--shapes", "32x100x16x64"]
    done = _run(warm + ["--calls", "1"], tmp_path / "one")
    assert done.returncode == 0, done.stderr[-2000:]
    if cores() >= 2:   # one core has no other setting to try
        assert _later("simple_rnn", "32x100x16x64", "forward", tmp_path / "one")["compiled"]
    done = _run(warm, tmp_path / "seven")
    assert done.returncode == 0, done.stderr[-2000:]
    assert _later("simple_rnn", "32x100x16x64", "forward", tmp_path / "seven")["compiled"] == []


def test_warm_up_reports_each_point_and_what_it_compiled(monkeypatch):
    monkeypatch.delenv("UNROLLED_NUMBA", raising=False)
    seen = []
    points = warm_up(["simple_rnn"], [(2, 3, 1, 2)], train=True, calls=3, report=seen.append)
    assert seen == points
    assert [(p.cell, p.shape, p.mode, p.calls) for p in points] == [
        ("simple_rnn", (2, 3, 1, 2), "forward", 3), ("simple_rnn", (2, 3, 1, 2), "train", 3)]
    counts = warmup._counts()
    for p in points:
        assert 0 < p.first_seconds <= p.seconds
        assert all(counts[name][0] > 0 for name in p.compiled)
        assert all(counts[name][1] > 0 for name in p.loaded)
    # Whether the first warm-up compiled depends on what earlier tests in this process ran (the
    # subprocess tests above check a fresh cache's rows); either way the forward loop is in this
    # process now, so a second warm-up of the point neither compiles nor loads anything.
    again = warm_up("simple_rnn", np.array([2, 3, 1, 2]), calls=1)   # one cell, one shape
    assert again[0].shape == (2, 3, 1, 2) and type(again[0].shape[0]) is int
    assert again[0].compiled == [] and again[0].loaded == []


def test_warm_up_runs_the_layers_it_names():
    calls = []
    original = layers.LSTM.__call__

    def counting(self, *args, **kwargs):
        calls.append(self.units)
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(layers.LSTM, "__call__", counting)
        m.delenv("UNROLLED_NUMBA", raising=False)
        warm_up(["lstm"], [(2, 3, 1, 5)], calls=4)
    assert calls == [5] * 8                     # 4 calls, each direction


def test_nothing_to_compile_when_the_compiled_loops_are_off(monkeypatch, capsys):
    monkeypatch.setenv("UNROLLED_NUMBA", "0")
    assert "UNROLLED_NUMBA=0" in warmup.unavailable()
    assert warm_up(["lstm"], [(2, 3, 1, 2)]) == []
    assert cli.main(["warmup", "--cells", "lstm", "--shapes", "2x3x1x2"]) == 0
    assert "nothing to compile" in capsys.readouterr().out


@pytest.mark.parametrize("kwargs, names", [
    ({"cells": ["rnn"]}, ["cells", "'rnn'", "simple_rnn, lstm, gru"]),
    ({"shapes": [(4, 5, 1)]}, ["shape", "(4, 5, 1)", "four positive integers"]),
    ({"shapes": [(4, 5, 0, 2)]}, ["shape", "(4, 5, 0, 2)"]),
    ({"shapes": [(4, 5, 1.0, 2)]}, ["shape", "(4, 5, 1.0, 2)"]),
    ({"shapes": [(4, 5, True, 2)]}, ["shape", "(4, 5, True, 2)"]),
    ({"shapes": [5]}, ["shape", "got 5"]),
    ({"cells": "rnn"}, ["cells", "'rnn'"]),
    ({"dtype": "float16"}, ["dtype", "float32, float64", "'float16'"]),
    ({"calls": 0}, ["calls", "positive integer", "0"]),
])
def test_warm_up_names_a_bad_argument(kwargs, names):
    args = {"cells": ["lstm"], "shapes": [(2, 3, 1, 2)], **kwargs}
    with pytest.raises(ValueError) as error:
        warm_up(args.pop("cells"), args.pop("shapes"), **args)
    for name in names:
        assert name in str(error.value)


@pytest.mark.parametrize("argv, says", [
    (["--cells", "lstm,rnn"], ["--cells", "unknown cell 'rnn'", "simple_rnn, lstm, gru"]),
    (["--cells", ","], ["--cells", "no cell named"]),
    (["--shapes", "4x5x1"], ["--shapes", "'4x5x1' is not batch x timesteps x features x units",
                             "32x100x16x64"]),
    (["--shapes", "4x5x-1x2"], ["--shapes", "four positive integers"]),
    (["--calls", "0"], ["--calls", "'0' is not a positive integer"]),
    (["--dtype", "float16"], ["--dtype", "invalid choice: 'float16'"]),
])
def test_the_command_names_a_bad_flag(argv, says, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["warmup", *argv])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    for text in says:
        assert text in err


def test_shapes_parse_as_the_benchmark_writes_them():
    assert warmup.parse_shapes("4x5x1x2,(32x100x16x64)") == [(4, 5, 1, 2), (32, 100, 16, 64)]
    assert warmup.parse_cells(" lstm, gru ") == ["lstm", "gru"]


# ---------------------------------------------------------------- a whole model

MODEL = """
from unrolled import layers, models


def build():
    model = models.Sequential([layers.Input((None,), dtype="int32"),
                               layers.Embedding(20, 4, mask_zero=True),
                               layers.Bidirectional(layers.LSTM(3, return_sequences=True)),
                               layers.GRU(5), layers.Dense(2)])
    model.compile("adam", "sparse_categorical_crossentropy")
    return model
"""

# A later process: the model's own calls on real token ids (padding included) with its own
# loss, more calls than the warm-up made.
MODEL_LATER = r"""
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import warmed_model
from unrolled.kernels import warmup

model = warmed_model.build()
x = np.random.default_rng(0).integers(0, 20, (3, 6)).astype("int32")
for _ in range(10):
    model.predict_on_batch(x)
    model.train_on_batch(x, np.array([0, 1, 1]))
print(json.dumps({"compiled": sorted(n for n, (m, _) in warmup._counts().items() if m)}))
"""


def test_a_warmed_model_compiles_nothing_in_a_later_process(tmp_path):
    (tmp_path / "warmed_model.py").write_text(MODEL)

    def later(cache):
        done = _run(["-c", MODEL_LATER, str(tmp_path)], cache)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])["compiled"]

    assert later(tmp_path / "cold")              # without the warm-up it compiles
    done = _run(["-m", "unrolled", "warmup", "--model", f"{tmp_path / 'warmed_model.py'}:build",
                 "--batch", "3", "--timesteps", "6", "--train"], tmp_path / "warm")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith("| model")]
    assert [row[:3] for row in rows] == [["| model sequential", "(3, 6)", "forward"],
                                         ["| model sequential", "(3, 6)", "train"]]
    assert later(tmp_path / "warm") == []


def _small_model(stateful=False):
    model = models.Sequential([
        layers.Input((5, 2), batch_size=4 if stateful else None),
        layers.LSTM(3, stateful=stateful, return_sequences=True), layers.Dense(1)])
    model.compile("adam", "mse")
    return model


def test_warm_up_model_leaves_the_model_as_it_was(monkeypatch):
    monkeypatch.delenv("UNROLLED_NUMBA", raising=False)
    model = _small_model(stateful=True)
    x = np.ones((4, 5, 2), np.float32)
    model.train_on_batch(x, np.zeros((4, 5, 1), np.float32))
    weights = [w.copy() for w in model.get_weights()]
    states = [s.copy() for s in model.layers[0].states]
    steps = int(model.optimizer.iterations)
    seen = []
    rows = warm_up_model(model, 4, train=True, calls=3, report=seen.append)
    assert seen == rows
    assert [(r.cell, r.shape, r.mode, r.calls) for r in rows] == [
        (f"model {model.name}", (4, 5, 2), "forward", 3),
        (f"model {model.name}", (4, 5, 2), "train", 3)]
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    for before, after in zip(states, model.layers[0].states):
        np.testing.assert_array_equal(before, after)
    assert int(model.optimizer.iterations) == steps


def test_warm_up_model_runs_the_model():
    model = _small_model()
    calls = []
    original = type(model).predict_on_batch

    def counting(self, x):
        calls.append(np.shape(x))
        return original(self, x)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(type(model), "predict_on_batch", counting)
        m.delenv("UNROLLED_NUMBA", raising=False)
        warm_up_model(model, 6, calls=3)
    assert calls == [(6, 5, 2)] * 3


@pytest.mark.parametrize("make, kwargs, error, says", [
    (lambda: layers.LSTM(3), {"batch_size": 2}, TypeError, ["Model", "LSTM", "warm_up("]),
    (lambda: models.Sequential([layers.LSTM(3)]), {"batch_size": 2}, ValueError,
     ["no input shape", "Input"]),
    (lambda: models.Sequential([layers.Input((None, 2)), layers.LSTM(3)]), {"batch_size": 2},
     ValueError, ["(None, None, 2)", "timesteps"]),
    (lambda: _small_model(stateful=True), {"batch_size": 2}, ValueError,
     ["batches of 4", "batch_size=4"]),
    (_small_model, {"batch_size": 0}, ValueError, ["batch_size", "positive integer", "0"]),
    (_small_model, {"batch_size": 2, "timesteps": -1}, ValueError, ["timesteps", "-1"]),
    (_small_model, {"batch_size": 2, "timesteps": 9}, ValueError,
     ["timesteps=9", "(None, 5, 2)", "Leave timesteps out"]),
    (_small_model, {"batch_size": 2, "calls": 0}, ValueError, ["calls", "0"]),
])
def test_warm_up_model_names_a_bad_argument(make, kwargs, error, says):
    with pytest.raises(error) as raised:
        warm_up_model(make(), **kwargs)
    for text in says:
        assert text in str(raised.value)


@pytest.mark.parametrize("argv, says", [
    (["--model", "m.keras"], ["--model needs --batch N"]),
    (["--model", "m.keras", "--batch", "2", "--cells", "lstm"], ["--model takes the place of"]),
    (["--model", "m.keras", "--batch", "2", "--dtype", "float64"], ["--model takes the place"]),
    (["--batch", "2"], ["--batch and --timesteps go with --model"]),
    (["--timesteps", "2"], ["--batch and --timesteps go with --model"]),
    (["--model", "missing.keras", "--batch", "2"], ["warmup: no such model file 'missing.keras'"]),
])
def test_the_model_flags_are_checked(argv, says, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        cli.main(["warmup", *argv])
    err = capsys.readouterr().err + str(stop.value.code)   # argparse exits 2, a loader says why
    assert stop.value.code == 2 or stop.value.code.startswith("warmup:")
    for text in says:
        assert text in err
