"""Forecast a noisy sine wave one step ahead with a SimpleRNN, trained by BPTT in NumPy.

    python examples/sine_forecast.py            # about half a minute on a laptop CPU

Each sample is a window of 24 past values; the target is the next value. The script prints the
test mean squared error next to the naive forecast "tomorrow equals today".
"""

from __future__ import annotations

import numpy as np

import unrolled
from unrolled import layers, optimizers


def make_data(n: int, window: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    start = rng.uniform(0, 2 * np.pi, size=(n, 1))
    period = rng.uniform(10, 30, size=(n, 1))
    t = np.arange(window + 1)[None, :]
    wave = np.sin(start + 2 * np.pi * t / period) + 0.05 * rng.normal(size=(n, window + 1))
    x = wave[:, :window, None].astype("float32")              # (batch, timesteps, 1)
    y = wave[:, window:].astype("float32")                    # (batch, 1)
    return x, y


def main(epochs: int = 12, n_train: int = 2000, verbose: int = 2, seed: int = 0) -> dict:
    unrolled.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x, y = make_data(n_train, 24, rng)
    x_test, y_test = make_data(500, 24, rng)
    model = unrolled.Sequential([layers.SimpleRNN(16), layers.Dense(1)])
    model.compile(optimizers.Adam(0.01), "mse")
    history = model.fit(x, y, epochs=epochs, batch_size=32, validation_split=0.1,
                        verbose=verbose)
    test_mse = float(model.evaluate(x_test, y_test, verbose=0))
    naive_mse = float(np.mean((x_test[:, -1] - y_test) ** 2))
    print(f"test MSE {test_mse:.4f}  (naive 'next = last' forecast: {naive_mse:.4f})")
    return {"test_mse": test_mse, "naive_mse": naive_mse, "history": history.history}


if __name__ == "__main__":
    main()
