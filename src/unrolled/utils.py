"""Small utilities that sit beside the layers."""

from __future__ import annotations

import random

import numpy as np

from unrolled import _random

__all__ = ["set_random_seed"]


def set_random_seed(seed: int) -> None:
    """Make everything random in unrolled reproducible: weights, dropout masks.

    Also seeds Python's `random` and NumPy's legacy global generator, as
    `keras.utils.set_random_seed` does, so scripts ported from Keras behave alike.

    Args:
        seed: a non-negative integer.

    Example:
        >>> import unrolled
        >>> unrolled.utils.set_random_seed(0)
        >>> a = unrolled.layers.SimpleRNN(3)(np.ones((1, 2, 4)))
        >>> unrolled.utils.set_random_seed(0)
        >>> b = unrolled.layers.SimpleRNN(3)(np.ones((1, 2, 4)))
        >>> bool((a == b).all())
        True
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TypeError(
            f"set_random_seed: `seed` must be a non-negative integer, got {seed!r} "
            f"({type(seed).__name__}). Pass for example set_random_seed(42)."
        )
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    _random.reset(seed)
