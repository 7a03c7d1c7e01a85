"""The package's source of randomness: one generator that `utils.set_random_seed` resets.

Initializers built without a seed draw an integer seed from here when they are constructed (as
Keras does), and dropout draws its masks from a generator seeded from here, so one call of
`set_random_seed` makes every weight and every dropout mask reproducible.
"""

from __future__ import annotations

import numpy as np

# Made on first use: creating it imports numpy.random, which defining the layer classes does
# not need.
_global_rng: np.random.Generator | None = None


def make_default_seed() -> int:
    """An integer seed in [1, 10**9], drawn from the package's generator."""
    global _global_rng
    if _global_rng is None:
        _global_rng = np.random.default_rng()
    return int(_global_rng.integers(1, 10**9, endpoint=True))


def seed_rng(seed: int) -> np.random.Generator:
    """The generator that an integer seed stands for (Keras's NumPy backend uses the same one)."""
    return np.random.default_rng(np.array([seed, 0], dtype=np.uint32))


def reset(seed: int) -> None:
    global _global_rng
    _global_rng = np.random.default_rng(seed)
