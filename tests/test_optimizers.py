"""Optimizers and learning-rate schedules against Keras's own, on the same variables and gradients."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_close
from unrolled import optimizers
from unrolled.optimizers import schedules

CASES = [
    ("SGD", {}),
    ("SGD", {"learning_rate": 0.1, "momentum": 0.9}),
    ("SGD", {"learning_rate": 0.05, "momentum": 0.8, "nesterov": True}),
    ("Adam", {}),
    ("Adam", {"learning_rate": 0.01, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-5}),
    ("Adam", {"learning_rate": 0.01, "amsgrad": True}),
    ("AdamW", {}),
    ("AdamW", {"learning_rate": 0.01, "weight_decay": 0.1}),
    ("RMSprop", {}),
    ("RMSprop", {"learning_rate": 0.01, "momentum": 0.5, "centered": True}),
    ("RMSprop", {"learning_rate": 0.01, "rho": 0.8, "momentum": 0.3}),
    ("Adagrad", {}),
    ("Adagrad", {"learning_rate": 0.1, "initial_accumulator_value": 0.5, "epsilon": 1e-4}),
    ("SGD", {"learning_rate": 0.1, "clipnorm": 0.5}),
    ("Adam", {"learning_rate": 0.01, "clipvalue": 0.3}),
    ("RMSprop", {"learning_rate": 0.01, "global_clipnorm": 0.7}),
    ("SGD", {"learning_rate": 0.1, "momentum": 0.5, "weight_decay": 0.05}),
]


def _run_both(keras, name, config, rng, steps=5, shapes=((3, 4), (4,), (2, 2))):
    values = [rng.normal(size=s).astype("float32") for s in shapes]
    grads = [[rng.normal(size=s).astype("float32") * 2 for s in shapes] for _ in range(steps)]
    ours = [v.copy() for v in values]
    theirs = [keras.Variable(v.copy()) for v in values]
    opt = getattr(optimizers, name)(**config)
    kopt = getattr(keras.optimizers, name)(**config)
    for step in range(steps):
        opt.apply_gradients(zip(grads[step], ours))
        kopt.apply_gradients(zip([keras.ops.convert_to_tensor(g) for g in grads[step]], theirs))
        for k, (a, b) in enumerate(zip(ours, theirs)):
            assert_close(a, np.asarray(b.value), atol=1e-6, rtol=1e-6,
                         what=f"{name}{config} weight {k} after step {step + 1}")
    assert opt.iterations == int(kopt.iterations.value) == steps


@pytest.mark.parametrize("name,config", CASES, ids=[f"{n}-{sorted(c)}" for n, c in CASES])
def test_updates_match_keras(keras, rng, name, config):
    _run_both(keras, name, config, rng)


LARGE_CASES = [("Adam", {}), ("AdamW", {"learning_rate": 0.01, "weight_decay": 0.1}),
               ("Adam", {"learning_rate": 0.01, "clipvalue": 0.3}),
               ("Adam", {"learning_rate": 0.01, "amsgrad": True})]


@pytest.mark.parametrize("name,config", LARGE_CASES,
                         ids=[f"{n}-{sorted(c)}" for n, c in LARGE_CASES])
def test_large_weights_updated_in_one_compiled_pass_match_keras(keras, rng, monkeypatch, name,
                                                                 config):
    """Adam's update of a weight of 65 536 numbers or more runs as one compiled pass (the
    small weight beside it, and amsgrad, in NumPy): Keras's numbers within float32 roundings,
    and NumPy's passes' to the bit."""
    from unrolled.kernels import _numba, _numba_loops

    compiled, calls = _numba_loops.adam_update, []
    monkeypatch.setattr(_numba_loops, "adam_update",
                        lambda *args: (calls.append(args[0].size), compiled(*args)))
    shapes = ((512, 130), (7, 3))
    _run_both(keras, name, config, rng, steps=3, shapes=shapes)
    assert calls == ([] if config.get("amsgrad") else [512 * 130] * 3)
    values = [rng.normal(size=s).astype("float32") for s in shapes]
    grads = [[rng.normal(size=s).astype("float32") for s in shapes] for _ in range(3)]
    updated = []
    for enabled in (True, False):
        monkeypatch.setattr(_numba, "enabled", enabled)
        ours, opt = [v.copy() for v in values], getattr(optimizers, name)(**config)
        for step in grads:
            opt.apply_gradients(zip(step, ours))
        updated.append(ours)
    for a, b in zip(*updated):
        np.testing.assert_array_equal(a, b)


SCHEDULES = [
    ("ExponentialDecay", dict(initial_learning_rate=0.1, decay_steps=3, decay_rate=0.5)),
    ("ExponentialDecay", dict(initial_learning_rate=0.1, decay_steps=2, decay_rate=0.7,
                              staircase=True)),
    ("PiecewiseConstantDecay", dict(boundaries=[1, 3], values=[0.1, 0.05, 0.01])),
    ("InverseTimeDecay", dict(initial_learning_rate=0.1, decay_steps=2, decay_rate=0.5)),
    ("PolynomialDecay", dict(initial_learning_rate=0.1, decay_steps=4, end_learning_rate=0.01,
                             power=2.0)),
    ("PolynomialDecay", dict(initial_learning_rate=0.1, decay_steps=2, cycle=True)),
    ("CosineDecay", dict(initial_learning_rate=0.1, decay_steps=4, alpha=0.1)),
    ("CosineDecay", dict(initial_learning_rate=0.01, decay_steps=4, warmup_target=0.1,
                         warmup_steps=2)),
]


@pytest.mark.parametrize("name,config", SCHEDULES, ids=[s[0] for s in SCHEDULES])
def test_schedules_match_keras(keras, name, config):
    ours = getattr(schedules, name)(**config)
    theirs = getattr(keras.optimizers.schedules, name)(**config)
    for step in range(9):
        assert_close(ours(step), np.asarray(theirs(step)), atol=1e-7, rtol=1e-6,
                     what=f"{name} at step {step}")


@pytest.mark.parametrize("opt_name", ["SGD", "Adam"])
def test_schedule_drives_updates_like_keras(keras, rng, opt_name):
    config = dict(learning_rate=schedules.ExponentialDecay(0.1, 2, 0.5), momentum=0.5) \
        if opt_name == "SGD" else dict(learning_rate=schedules.CosineDecay(0.05, 3))
    kconfig = dict(config)
    sched = config["learning_rate"]
    kconfig["learning_rate"] = getattr(keras.optimizers.schedules, type(sched).__name__)(
        **{k: v for k, v in sched.get_config().items()})
    values = [rng.normal(size=(3, 2)).astype("float32")]
    ours = [values[0].copy()]
    theirs = [keras.Variable(values[0].copy())]
    opt = getattr(optimizers, opt_name)(**config)
    kopt = getattr(keras.optimizers, opt_name)(**kconfig)
    for step in range(6):
        g = rng.normal(size=(3, 2)).astype("float32")
        assert_close(opt.learning_rate, np.asarray(kopt.learning_rate), atol=1e-8,
                     what=f"learning rate before step {step + 1}")
        opt.apply_gradients([(g, ours[0])])
        kopt.apply_gradients([(keras.ops.convert_to_tensor(g), theirs[0])])
        assert_close(ours[0], np.asarray(theirs[0].value), atol=1e-6, what=f"step {step + 1}")


def test_get_by_name_and_errors():
    assert isinstance(optimizers.get("adam"), optimizers.Adam)
    assert isinstance(optimizers.get("RMSprop"), optimizers.RMSprop)
    assert optimizers.get("sgd").learning_rate == np.float32(0.01)
    with pytest.raises(ValueError, match="Did you mean"):
        optimizers.get("adma")
    with pytest.raises(ValueError, match="at most one"):
        optimizers.SGD(clipnorm=1.0, clipvalue=1.0)
    opt = optimizers.SGD()
    with pytest.raises(ValueError, match="gradient of shape"):
        opt.apply_gradients([(np.zeros(3, "float32"), np.zeros(4, "float32"))])


def test_config_round_trip():
    opt = optimizers.Adam(learning_rate=schedules.ExponentialDecay(0.1, 5, 0.9), beta_1=0.8)
    again = optimizers.get(optimizers.serialize(opt))
    assert isinstance(again, optimizers.Adam) and again.beta_1 == 0.8
    assert again.learning_rate == opt.learning_rate
