"""Losses, their gradients and metrics against keras.losses / keras.metrics (JAX backend)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_close
from unrolled import losses, metrics


def _data(name, rng, shape, from_logits=False):
    classes = shape[-1]
    if name in ("MeanSquaredError", "MeanAbsoluteError", "Huber"):
        return rng.normal(size=shape), rng.normal(size=shape)
    if name == "BinaryCrossentropy":
        y = (rng.random(shape) > 0.5).astype("float64")
        p = rng.normal(size=shape) if from_logits else rng.uniform(0.02, 0.98, size=shape)
        return y, p
    if name == "CategoricalCrossentropy":
        y = np.eye(classes)[rng.integers(0, classes, size=shape[:-1])]
        p = rng.normal(size=shape) if from_logits else rng.uniform(0.05, 1, size=shape)
        return y, p
    ids = rng.integers(0, classes, size=shape[:-1]).astype("float64")
    p = rng.normal(size=shape) if from_logits else rng.uniform(0.05, 1, size=shape)
    return ids, p


LOSS_CASES = [
    ("MeanSquaredError", {}), ("MeanAbsoluteError", {}), ("Huber", {}), ("Huber", {"delta": 0.3}),
    ("BinaryCrossentropy", {}), ("BinaryCrossentropy", {"from_logits": True}),
    ("BinaryCrossentropy", {"label_smoothing": 0.1}),
    ("CategoricalCrossentropy", {}), ("CategoricalCrossentropy", {"from_logits": True}),
    ("CategoricalCrossentropy", {"from_logits": True, "label_smoothing": 0.2}),
    ("SparseCategoricalCrossentropy", {}), ("SparseCategoricalCrossentropy", {"from_logits": True}),
]


@pytest.mark.parametrize("shape", [(6, 3), (4, 5, 3)], ids=["2d", "sequence"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "sample_weight"])
@pytest.mark.parametrize("name,config", LOSS_CASES, ids=[f"{n}{sorted(c)}" for n, c in LOSS_CASES])
def test_loss_and_gradient_match_keras(keras, rng, name, config, shape, weighted):
    import jax

    y_true, y_pred = _data(name, rng, shape, config.get("from_logits", False))
    y_true, y_pred = y_true.astype("float32"), y_pred.astype("float32")
    sw = rng.uniform(0, 2, size=shape[:-1]).astype("float32") if weighted else None
    ours = getattr(losses, name)(**config)
    theirs = getattr(keras.losses, name)(**config)
    expected = np.asarray(theirs(y_true, y_pred, sample_weight=sw))
    assert_close(ours(y_true, y_pred, sample_weight=sw), expected, what=f"{name} value")
    value, grad = ours.value_and_grad(y_true, y_pred, sample_weight=sw)
    expected_grad = np.asarray(jax.grad(lambda p: theirs(y_true, p, sample_weight=sw))(y_pred))
    assert_close(value, expected, what=f"{name} value from value_and_grad")
    assert_close(grad, expected_grad, atol=1e-6, what=f"{name} gradient")


@pytest.mark.parametrize("name", ["mse", "mae", "huber", "binary_crossentropy",
                                  "categorical_crossentropy", "sparse_categorical_crossentropy"])
def test_string_names_match_keras(keras, rng, name):
    cls = type(losses.get(name)).__name__
    y_true, y_pred = _data(cls, rng, (5, 4))
    assert_close(losses.get(name)(y_true.astype("float32"), y_pred.astype("float32")),
                 np.asarray(keras.losses.get(name)(y_true, y_pred)).mean(), what=name)


def test_rank_reconciliation_and_reductions(keras, rng):
    y_true = rng.normal(size=(6,)).astype("float32")           # (batch,) against (batch, 1)
    y_pred = rng.normal(size=(6, 1)).astype("float32")
    for reduction in ("sum", "sum_over_batch_size", "mean_with_sample_weight", "none"):
        sw = rng.uniform(size=6).astype("float32")
        ours = losses.MeanSquaredError(reduction=reduction)(y_true, y_pred, sample_weight=sw)
        theirs = keras.losses.MeanSquaredError(reduction=reduction)(y_true, y_pred,
                                                                    sample_weight=sw)
        assert_close(ours, np.asarray(theirs), what=reduction)


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "mean_with_sample_weight"])
@pytest.mark.parametrize("weighting", ["none", "sample_weight", "mask", "both", "all_masked"])
def test_mse_one_difference_matches_the_general_formula(rng, reduction, weighting):
    # MeanSquaredError.value_and_grad takes one difference for the value and the gradient; the
    # base class's value_and_grad (fn, _reduce, grad) is the formula it must give.
    y_true = rng.normal(size=(4, 6, 5)).astype("float32")
    y_pred = rng.normal(size=(4, 6, 5)).astype("float32")
    sw = rng.uniform(0, 2, size=4).astype("float32") if weighting in ("sample_weight",
                                                                       "both") else None
    mask = None
    if weighting in ("mask", "both"):
        mask = rng.uniform(size=(4, 6)) > 0.3
    elif weighting == "all_masked":
        mask = np.zeros((4, 6), dtype=bool)
    loss = losses.MeanSquaredError(reduction=reduction)
    value, grad = loss.value_and_grad(y_true, y_pred, sample_weight=sw, mask=mask)
    ref_value, ref_grad = losses.Loss.value_and_grad(loss, y_true, y_pred, sw, mask)
    assert grad.shape == y_pred.shape and grad.dtype == np.float32
    assert_close(value, ref_value, what="value")
    assert_close(value, loss(y_true, y_pred, sample_weight=sw, mask=mask), what="__call__")
    assert_close(grad, ref_grad, atol=1e-7, what="gradient")
    assert np.any(grad != 0) or weighting == "all_masked"


def test_probabilities_gradient_finite_differences(rng):
    for loss in (losses.BinaryCrossentropy(), losses.CategoricalCrossentropy()):
        y, p = _data(type(loss).__name__, rng, (3, 4))
        _, grad = loss.value_and_grad(y, p)
        eps = 1e-6
        numeric = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            up, down = p.copy(), p.copy()
            up[i] += eps
            down[i] -= eps
            numeric[i] = (loss(y, up) - loss(y, down)) / (2 * eps)
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)


def test_loss_errors():
    with pytest.raises(ValueError, match="Did you mean"):
        losses.get("mean_squared_eror")
    with pytest.raises(ValueError, match="one class id per prediction row"):
        losses.SparseCategoricalCrossentropy()(np.zeros((4, 3)), np.ones((4, 3)) / 3)
    with pytest.raises(ValueError, match="class ids must be in"):
        losses.SparseCategoricalCrossentropy()(np.array([0, 5]), np.ones((2, 3)) / 3)


METRIC_CASES = ["Accuracy", "BinaryAccuracy", "CategoricalAccuracy", "SparseCategoricalAccuracy",
                "MeanSquaredError", "MeanAbsoluteError"]


def _metric_data(name, rng, shape):
    c = shape[-1]
    if name == "Accuracy":
        return rng.integers(0, 3, size=shape).astype("float32"), rng.integers(0, 3, size=shape)
    if name == "BinaryAccuracy":
        return (rng.random(shape) > 0.5).astype("float32"), rng.random(shape)
    if name == "CategoricalAccuracy":
        return np.eye(c)[rng.integers(0, c, size=shape[:-1])], rng.random(shape)
    if name == "SparseCategoricalAccuracy":
        return rng.integers(0, c, size=shape[:-1]), rng.random(shape)
    return rng.normal(size=shape), rng.normal(size=shape)


@pytest.mark.parametrize("shape", [(6, 3), (4, 5, 3), (6, 1)], ids=["2d", "sequence", "one"])
@pytest.mark.parametrize("name", METRIC_CASES)
def test_metrics_accumulate_like_keras(keras, rng, name, shape):
    ours = getattr(metrics, name)()
    theirs = getattr(keras.metrics, name)()
    for batch in range(3):
        y_true, y_pred = _metric_data(name, rng, shape)
        sw = rng.uniform(0, 2, size=shape[0]) if batch > 0 else None
        ours.update_state(y_true, y_pred, sample_weight=sw)
        theirs.update_state(y_true, y_pred, sample_weight=sw)
        assert_close(ours.result(), np.asarray(theirs.result()), what=f"{name} after batch {batch}")
    ours.reset_state()
    assert ours.result() == 0


def test_compile_accuracy_choice():
    assert isinstance(metrics.for_compile("accuracy", np.zeros((4, 1)), np.zeros((4, 1))),
                      metrics.BinaryAccuracy)
    assert isinstance(metrics.for_compile("acc", np.zeros(4), np.zeros((4, 3))),
                      metrics.SparseCategoricalAccuracy)
    assert isinstance(metrics.for_compile("accuracy", np.zeros((4, 3)), np.zeros((4, 3))),
                      metrics.CategoricalAccuracy)
    with pytest.raises(ValueError, match="Did you mean"):
        metrics.get("acuracy")
