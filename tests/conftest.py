"""Shared test fixtures. The oracle is real Keras 3 on the JAX backend.

A parity test that cannot reach its oracle fails: the `keras` fixture raises instead of skipping,
so a machine without the test extras gives a red run, never a green one with nothing checked.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np
import pytest


@pytest.fixture(scope="session")
def keras():
    try:
        import keras as keras_module
    except ImportError as error:  # pragma: no cover - exercised only on a broken install
        pytest.fail(
            f"The Keras oracle is missing ({error}). Install the test extras: "
            "pip install -e '.[test]'",
            pytrace=False,
        )
    if keras_module.backend.backend() != "jax":
        pytest.fail(
            f"The oracle must run on the JAX backend, got {keras_module.backend.backend()!r}; "
            "unset KERAS_BACKEND or set it to 'jax'.",
            pytrace=False,
        )
    return keras_module


@pytest.fixture
def rng(request):
    """A generator seeded from the test's name: reproducible, different per test."""
    seed = sum(ord(c) for c in request.node.nodeid) % 2**32
    return np.random.default_rng(seed)


def assert_close(actual, expected, *, atol=1e-5, rtol=1e-5, what="output"):
    """assert_allclose with a message that says which value differed and by how much."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, (
        f"{what}: shape {actual.shape} differs from the reference {expected.shape}"
    )
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    worst = float(diff.max()) if diff.size else 0.0
    np.testing.assert_allclose(
        actual, expected, atol=atol, rtol=rtol,
        err_msg=f"{what}: max |unrolled - keras| = {worst:.3g}",
    )


@pytest.fixture(autouse=True)
def _keep_layer_names():
    """Leave unrolled's auto-name counters (simple_rnn, simple_rnn_1, ...) as each test found
    them, so a test's default names don't depend on which tests ran before it."""
    from unrolled.layers import base

    saved = dict(base._name_counts)
    yield
    base._name_counts.clear()
    base._name_counts.update(saved)
