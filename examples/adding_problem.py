"""The adding problem (Hochreiter & Schmidhuber, 1997): an LSTM learns to add the two marked
numbers of a long sequence, which needs memory across many steps.

    python examples/adding_problem.py           # one to two minutes on a laptop CPU

Each step carries two features: a random number in [0, 1] and a marker that is 1 at exactly two
steps. The target is the sum of the two marked numbers. Always answering 1.0 (the mean) gives a
mean squared error of about 0.167; the script prints the LSTM's test error against that.
"""

from __future__ import annotations

import numpy as np

import unrolled
from unrolled import layers, optimizers


def make_data(n: int, timesteps: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    values = rng.random((n, timesteps))
    markers = np.zeros((n, timesteps))
    first = rng.integers(0, timesteps // 2, size=n)
    second = rng.integers(timesteps // 2, timesteps, size=n)
    markers[np.arange(n), first] = 1
    markers[np.arange(n), second] = 1
    x = np.stack([values, markers], axis=-1).astype("float32")  # (batch, timesteps, 2)
    y = (values * markers).sum(axis=1, keepdims=True).astype("float32")  # (batch, 1)
    return x, y


def main(timesteps: int = 40, epochs: int = 12, n_train: int = 3000, verbose: int = 2,
         seed: int = 0) -> dict:
    unrolled.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x, y = make_data(n_train, timesteps, rng)
    x_test, y_test = make_data(500, timesteps, rng)
    model = unrolled.Sequential([layers.LSTM(24), layers.Dense(1)])
    model.compile(optimizers.Adam(0.01), "mse")
    history = model.fit(x, y, epochs=epochs, batch_size=50, verbose=verbose)
    test_mse = float(model.evaluate(x_test, y_test, verbose=0))
    baseline = float(np.mean((y_test - 1.0) ** 2))
    print(f"adding problem, T={timesteps}: test MSE {test_mse:.4f}  "
          f"(always answering 1.0: {baseline:.4f})")
    return {"test_mse": test_mse, "baseline_mse": baseline, "history": history.history}


if __name__ == "__main__":
    main()
