"""Keras 3's weight initializers, in NumPy, drawing the same numbers as Keras's NumPy backend.

An initializer is a callable `init(shape, dtype=None)` that returns a new array (float32 unless
`dtype` says otherwise). The random ones follow Keras exactly:

* The scale comes from `compute_fans(shape)` on the *whole* weight. A fused LSTM kernel of shape
  `(F, 4*units)` has `fan_out = 4*units`, not `units`.
* An integer `seed=s` draws from `numpy.random.default_rng([s, 0])` with the same calls, in the same
  order and in float64 before the cast, as Keras's NumPy backend, so the arrays are bit-identical
  to Keras running with `KERAS_BACKEND=numpy`. (Keras's JAX, TensorFlow and PyTorch backends use
  their own generators, whose numbers no NumPy code can reproduce.)
* `seed=None` picks an integer seed once, when the initializer is built. Calling the same instance
  twice therefore returns the same array, as in Keras; two instances differ, and
  `unrolled.utils.set_random_seed` makes the picks reproducible.

`get` turns what a layer receives as `kernel_initializer=` (a name such as "orthogonal", a class,
an instance, a callable or a Keras config dict) into an initializer; `serialize` writes the dict
Keras stores in a model config.

Example:
    >>> init = get("glorot_uniform")
    >>> type(init).__name__
    'GlorotUniform'
    >>> init((3, 8)).shape
    (3, 8)
    >>> bool((init((3, 8)) == init((3, 8))).all())   # same instance, same numbers
    True
"""

from __future__ import annotations

import inspect
import math
import numbers
from typing import Any, Callable, Sequence

import numpy as np

from unrolled import _random
from unrolled._checks import closest, float_dtype, snake_case

__all__ = [
    "Constant",
    "GlorotNormal",
    "GlorotUniform",
    "HeNormal",
    "HeUniform",
    "Identity",
    "Initializer",
    "LecunNormal",
    "LecunUniform",
    "Ones",
    "Orthogonal",
    "RandomNormal",
    "RandomUniform",
    "TruncatedNormal",
    "VarianceScaling",
    "Zeros",
    "compute_fans",
    "get",
    "serialize",
]

Shape = Sequence[int]

# The standard deviation of N(0, 1) truncated to [-2, 2]; dividing by it makes the truncated
# distribution's standard deviation the one asked for.
_TRUNCATED_STDDEV_FACTOR = 0.87962566103423978


# ---- argument checks -------------------------------------------------------------------------


def _check_shape(shape: Any, owner: str) -> tuple[int, ...]:
    if isinstance(shape, (str, bytes)) or not isinstance(shape, (tuple, list)):
        hint = f" Pass ({shape},) for a vector." if isinstance(shape, numbers.Integral) else ""
        raise TypeError(
            f"{owner}: `shape` must be a tuple or list of non-negative integers, got {shape!r} "
            f"({type(shape).__name__}).{hint}"
        )
    dims = []
    for dim in shape:
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
            raise TypeError(
                f"{owner}: every entry of `shape` must be an integer, got {dim!r} "
                f"({type(dim).__name__}) in shape={tuple(shape)!r}. Pass whole numbers, for "
                f"example (3, 4)."
            )
        if dim < 0:
            raise ValueError(
                f"{owner}: entries of `shape` must be non-negative, got {dim} in "
                f"shape={tuple(shape)!r}."
            )
        dims.append(int(dim))
    return tuple(dims)


def _check_numeric_dtype(dtype: Any, owner: str) -> np.dtype:
    """Constant-valued initializers, like Keras's, may also fill integer or boolean arrays."""
    if dtype is None:
        return np.dtype("float32")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.kind not in "biuf":
        return float_dtype(dtype, owner)  # raises the standard message (or accepts a policy dict)
    return dt


def _check_number(value: Any, name: str, owner: str, *, minimum: float | None = None,
                  strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{owner}: `{name}` must be a number, got {value!r} ({type(value).__name__})."
        )
    if minimum is not None and (value < minimum or (strict and value == minimum)):
        bound = f"greater than {minimum}" if strict else f"at least {minimum}"
        raise ValueError(f"{owner}: `{name}` must be {bound}, got {value}.")
    # Python and NumPy scalars are kept as given, so the arithmetic (and the config) matches Keras.
    return value.item() if isinstance(value, np.generic) else value


def _check_choice(value: Any, name: str, options: Sequence[str], owner: str) -> str:
    if not isinstance(value, str):
        raise TypeError(
            f"{owner}: `{name}` must be a string, one of {', '.join(map(repr, options))}; got "
            f"{value!r} ({type(value).__name__})."
        )
    if value not in options:
        raise ValueError(
            f"{owner}: invalid `{name}` {value!r}; expected one of "
            f"{', '.join(map(repr, options))}.{closest(value, options)}"
        )
    return value


def _check_seed(seed: Any, owner: str) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, dict):
        raise TypeError(
            f"{owner}: `seed` is a serialized keras.random.SeedGenerator ({seed!r}); stateful "
            "seed generators are not supported. Pass an integer seed or None."
        )
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(
            f"{owner}: `seed` must be an integer or None, got {seed!r} ({type(seed).__name__}). "
            f"Pass for example seed=42."
        )
    if not 0 <= seed < 2**32:
        raise ValueError(
            f"{owner}: `seed` must be between 0 and 2**32 - 1 (it becomes an unsigned 32-bit "
            f"word, as in Keras), got {seed}."
        )
    return int(seed)


def _check_axes(axes: Any, name: str, owner: str) -> list[int] | None:
    if axes is None:
        return None
    if isinstance(axes, numbers.Integral) and not isinstance(axes, bool):
        return [int(axes)]
    if not isinstance(axes, (list, tuple)) or not all(
        isinstance(a, numbers.Integral) and not isinstance(a, bool) for a in axes
    ):
        raise TypeError(
            f"{owner}: `{name}` must be None or a list of integer axes, got {axes!r}."
        )
    return [int(a) for a in axes]


# ---- base classes ----------------------------------------------------------------------------


class Initializer:
    """Base class: a callable `init(shape, dtype=None)` that returns a new NumPy array.

    Subclasses implement `__call__` and, to be saved in a config, `get_config()` returning the
    keyword arguments of their constructor.

    Example:
        >>> class Halves(Initializer):
        ...     def __call__(self, shape, dtype=None):
        ...         return np.full(shape, 0.5, dtype=dtype or "float32")
        >>> Halves()((2,))
        array([0.5, 0.5], dtype=float32)
    """

    def __call__(self, shape: Shape, dtype: Any = None) -> np.ndarray:
        raise NotImplementedError(
            f"{type(self).__name__} must implement __call__(shape, dtype=None)."
        )

    def get_config(self) -> dict:
        """The constructor arguments that rebuild this initializer (as Keras writes them)."""
        return {}

    @classmethod
    def from_config(cls, config: dict) -> "Initializer":
        """Build an initializer from `get_config()`'s output."""
        if not isinstance(config, dict):
            raise TypeError(
                f"{cls.__name__}.from_config: `config` must be a dict, got {config!r}."
            )
        accepted = inspect.signature(cls.__init__).parameters
        unknown = sorted(set(config) - set(accepted))
        if unknown:
            raise TypeError(
                f"{cls.__name__}.from_config: unexpected config keys {unknown}; "
                f"{cls.__name__} accepts {sorted(k for k in accepted if k != 'self')}."
            )
        return cls(**config)

    def clone(self) -> "Initializer":
        """A new initializer built from this one's config (an unseeded one draws a new seed)."""
        return type(self).from_config(self.get_config())

    def _repr_config(self) -> dict:
        return self.get_config()

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self._repr_config().items())
        return f"{type(self).__name__}({args})"


class _RandomInitializer(Initializer):
    """An initializer that draws from a seeded generator; `seed` is fixed when it is built."""

    def __init__(self, seed: int | None = None) -> None:
        self._init_seed = _check_seed(seed, type(self).__name__)
        # The seed actually used. Picked now, not per call, so one instance always gives the same
        # array (Keras does the same).
        self.seed: int = (
            self._init_seed if self._init_seed is not None else _random.make_default_seed()
        )

    def _rng(self) -> np.random.Generator:
        return _random.seed_rng(self.seed)

    def get_config(self) -> dict:
        return {"seed": self._init_seed}

    def _repr_config(self) -> dict:
        # Show the seed in use, so that eval(repr(init)) draws the same numbers.
        config = {**self.get_config(), "seed": self.seed}
        for key in ("input_axes", "output_axes"):
            if config.get(key, 0) is None:
                del config[key]
        return config

    def _prepare(self, shape: Any, dtype: Any) -> tuple[tuple[int, ...], np.dtype]:
        owner = type(self).__name__
        return _check_shape(shape, owner), float_dtype(dtype, owner)


# ---- the sampling routines, call for call as Keras's NumPy backend ---------------------------


def _normal(rng, shape, mean, stddev, dtype) -> np.ndarray:
    return rng.normal(size=shape, loc=mean, scale=stddev).astype(dtype)


def _uniform(rng, shape, minval, maxval, dtype) -> np.ndarray:
    return rng.uniform(size=shape, low=minval, high=maxval).astype(dtype)


def _truncated_normal(rng, shape, mean, stddev, dtype) -> np.ndarray:
    # Rejection sampling: draw a full batch, keep the values within two standard deviations,
    # repeat until enough are kept. The batch size and the order of draws follow Keras exactly.
    size = math.prod(shape)
    low, high = mean - 2 * stddev, mean + 2 * stddev
    kept: list[np.ndarray] = [np.empty(0)]
    count = 0
    while count < size:
        batch = rng.normal(loc=mean, scale=stddev, size=size)
        valid = batch[(batch >= low) & (batch <= high)]
        kept.append(valid)
        count += valid.size
    return np.concatenate(kept)[:size].astype(dtype).reshape(shape)


def compute_fans(shape: Shape, input_axes: Sequence[int] | None = None,
                 output_axes: Sequence[int] | None = None) -> tuple[int, int]:
    """The (fan_in, fan_out) of a weight shape, as Keras computes them.

    Rank 0 gives (1, 1); rank 1 gives (n, n); rank 2 gives (rows, cols); higher ranks are
    convolution kernels `(..., in, out)` and multiply both by the receptive field
    `prod(shape[:-2])`. With both `input_axes` and `output_axes`, the fans are the products of
    those axes instead.

    Example:
        >>> compute_fans((16, 4 * 32))        # an LSTM kernel: fan_out is the fused width
        (16, 128)
        >>> compute_fans((3, 3, 8, 16))
        (72, 144)
    """
    shape = tuple(shape)
    if input_axes is not None and output_axes is not None:
        fan_in = math.prod(shape[axis] for axis in input_axes)
        fan_out = math.prod(shape[axis] for axis in output_axes)
    elif len(shape) == 0:
        fan_in = fan_out = 1
    elif len(shape) == 1:
        fan_in = fan_out = shape[0]
    elif len(shape) == 2:
        fan_in, fan_out = shape
    else:
        receptive_field = math.prod(shape[:-2])
        fan_in = shape[-2] * receptive_field
        fan_out = shape[-1] * receptive_field
    return int(fan_in), int(fan_out)


# ---- constant initializers -------------------------------------------------------------------


class Zeros(Initializer):
    """All zeros.

    Example:
        >>> Zeros()((2, 3))
        array([[0., 0., 0.],
               [0., 0., 0.]], dtype=float32)
    """

    def __call__(self, shape: Shape, dtype: Any = None) -> np.ndarray:
        owner = type(self).__name__
        return np.zeros(_check_shape(shape, owner), dtype=_check_numeric_dtype(dtype, owner))


class Ones(Initializer):
    """All ones (LSTM's forget-gate bias uses it when `unit_forget_bias=True`).

    Example:
        >>> Ones()((3,), dtype="float64")
        array([1., 1., 1.])
    """

    def __call__(self, shape: Shape, dtype: Any = None) -> np.ndarray:
        owner = type(self).__name__
        return np.ones(_check_shape(shape, owner), dtype=_check_numeric_dtype(dtype, owner))


class Constant(Initializer):
    """Every entry equal to `value` (a scalar, or an array that broadcasts to the shape).

    Example:
        >>> Constant(0.25)((2, 2))
        array([[0.25, 0.25],
               [0.25, 0.25]], dtype=float32)
        >>> Constant(0.25)
        Constant(value=0.25)
    """

    def __init__(self, value: Any = 0.0) -> None:
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise TypeError(
                f"Constant: `value` must be a number or an array of numbers, got {value!r} "
                f"({type(value).__name__})."
            )
        self.value = value.item() if isinstance(value, np.generic) else value

    def __call__(self, shape: Shape, dtype: Any = None) -> np.ndarray:
        shape = _check_shape(shape, "Constant")
        dtype = _check_numeric_dtype(dtype, "Constant")
        try:
            out = np.asarray(self.value, dtype=dtype) * np.ones(shape, dtype=dtype)
        except ValueError:
            out = None
        if out is None or out.shape != shape:
            raise ValueError(
                f"Constant: `value` of shape {np.shape(self.value)} cannot fill shape {shape}; "
                f"pass a scalar or an array that broadcasts to {shape}."
            )
        return out

    def get_config(self) -> dict:
        value = self.value
        if isinstance(value, (np.ndarray, list, tuple)):
            array = np.asarray(value)
            value = {"class_name": "__numpy__",
                     "config": {"value": array.tolist(), "dtype": str(array.dtype)}}
        return {"value": value}

    @classmethod
    def from_config(cls, config: dict) -> "Constant":
        value = config.get("value", 0.0)
        if isinstance(value, dict) and value.get("class_name") in ("__numpy__", "__tensor__"):
            inner = value.get("config", {})
            value = np.asarray(inner.get("value"), dtype=inner.get("dtype"))
        return super().from_config({**config, "value": value})


class Identity(Initializer):
    """`gain` times the identity matrix (2-D shapes only; a non-square one gets ones on its
    main diagonal).

    Example:
        >>> Identity(gain=2.0)((2, 3))
        array([[2., 0., 0.],
               [0., 2., 0.]], dtype=float32)
    """

    def __init__(self, gain: float = 1.0) -> None:
        self.gain = _check_number(gain, "gain", "Identity")

    def __call__(self, shape: Shape, dtype: Any = None) -> np.ndarray:
        shape = _check_shape(shape, "Identity")
        dtype = _check_numeric_dtype(dtype, "Identity")
        if len(shape) != 2:
            raise ValueError(
                f"Identity: can only fill a 2-D matrix, got shape={shape} of rank {len(shape)}. "
                f"Use it for square weights such as a (units, units) recurrent kernel."
            )
        return (self.gain * np.eye(*shape, dtype=dtype)).astype(dtype, copy=False)

    def get_config(self) -> dict:
        # Keras's Identity forgets its gain in get_config; we keep it (Keras reads it back fine).
        return {"gain": self.gain}


# ---- random initializers ---------------------------------------------------------------------


class RandomNormal(_RandomInitializer):
    """Samples from N(mean, stddev^2).

    Example:
        >>> init = RandomNormal(stddev=1.0, seed=7)
        >>> init
        RandomNormal(seed=7, mean=0.0, stddev=1.0)
        >>> init((2, 3)).dtype
        dtype('float32')
    """

    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: int | None = None) -> None:
        self.mean = _check_number(mean, "mean", "RandomNormal")
        self.stddev = _check_number(stddev, "stddev", "RandomNormal", minimum=0)
        super().__init__(seed)

    def __call__(self, shape: Shape, dtype: Any = None) -> np.ndarray:
        shape, dtype = self._prepare(shape, dtype)
        return _normal(self._rng(), shape, self.mean, self.stddev, dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "mean": self.mean, "stddev": self.stddev}


class TruncatedNormal(_RandomInitializer):
    """Samples from N(mean, stddev^2), redrawing values more than 2 * stddev from the mean.

    Example:
        >>> w = TruncatedNormal(stddev=1.0, seed=0)((1000,))
        >>> bool(np.abs(w).max() <= 2.0)
        True
    """

    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: int | None = None) -> None:
        self.mean = _check_number(mean, "mean", "TruncatedNormal")
        self.stddev = _check_number(stddev, "stddev", "TruncatedNormal", minimum=0)
        super().__init__(seed)

    def __call__(self, shape: Shape, dtype: Any = None) -> np.ndarray:
        shape, dtype = self._prepare(shape, dtype)
        return _truncated_normal(self._rng(), shape, self.mean, self.stddev, dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "mean": self.mean, "stddev": self.stddev}


class RandomUniform(_RandomInitializer):
    """Samples from U[minval, maxval).

    Example:
        >>> w = RandomUniform(-1.0, 1.0, seed=0)((1000,))
        >>> bool(w.min() >= -1.0 and w.max() < 1.0)
        True
    """

    def __init__(self, minval: float = -0.05, maxval: float = 0.05,
                 seed: int | None = None) -> None:
        self.minval = _check_number(minval, "minval", "RandomUniform")
        self.maxval = _check_number(maxval, "maxval", "RandomUniform")
        super().__init__(seed)

    def __call__(self, shape: Shape, dtype: Any = None) -> np.ndarray:
        shape, dtype = self._prepare(shape, dtype)
        return _uniform(self._rng(), shape, self.minval, self.maxval, dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "minval": self.minval, "maxval": self.maxval}


_MODES = ("fan_in", "fan_out", "fan_avg")
_DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform")


class VarianceScaling(_RandomInitializer):
    """Samples whose variance is `scale / n`, where n is fan_in, fan_out or their mean (`mode`).

    `distribution="truncated_normal"` (or its alias "normal") uses a normal truncated at two
    standard deviations and widened so the result has the target variance;
    "untruncated_normal" a plain normal; "uniform" U[-limit, limit) with
    `limit = sqrt(3 * scale / n)`. The fans come from `compute_fans` on the full shape.

    Example:
        >>> init = VarianceScaling(scale=2.0, mode="fan_out", distribution="uniform", seed=1)
        >>> init
        VarianceScaling(seed=1, scale=2.0, mode='fan_out', distribution='uniform')
        >>> bool(np.abs(init((4, 8))).max() <= np.sqrt(3 * 2.0 / 8))
        True
    """

    def __init__(self, scale: float = 1.0, mode: str = "fan_in",
                 distribution: str = "truncated_normal", seed: int | None = None,
                 input_axes: Sequence[int] | None = None,
                 output_axes: Sequence[int] | None = None) -> None:
        owner = type(self).__name__
        self.scale = _check_number(scale, "scale", owner, minimum=0, strict=True)
        self.mode = _check_choice(mode, "mode", _MODES, owner)
        if isinstance(distribution, str):
            distribution = distribution.lower()
            if distribution == "normal":
                distribution = "truncated_normal"
        self.distribution = _check_choice(distribution, "distribution", _DISTRIBUTIONS, owner)
        self.input_axes = _check_axes(input_axes, "input_axes", owner)
        self.output_axes = _check_axes(output_axes, "output_axes", owner)
        super().__init__(seed)

    def __call__(self, shape: Shape, dtype: Any = None) -> np.ndarray:
        shape, dtype = self._prepare(shape, dtype)
        fan_in, fan_out = compute_fans(shape, self.input_axes, self.output_axes)
        # Same float operations, in the same order, as Keras, so the scale is bit-identical.
        scale = self.scale
        if self.mode == "fan_in":
            scale /= max(1.0, fan_in)
        elif self.mode == "fan_out":
            scale /= max(1.0, fan_out)
        else:
            scale /= max(1.0, (fan_in + fan_out) / 2.0)
        if self.distribution == "truncated_normal":
            stddev = math.sqrt(scale) / _TRUNCATED_STDDEV_FACTOR
            return _truncated_normal(self._rng(), shape, 0.0, stddev, dtype)
        if self.distribution == "untruncated_normal":
            return _normal(self._rng(), shape, 0.0, math.sqrt(scale), dtype)
        limit = math.sqrt(3.0 * scale)
        return _uniform(self._rng(), shape, -limit, limit, dtype)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "scale": self.scale,
            "mode": self.mode,
            "distribution": self.distribution,
            "input_axes": self.input_axes,
            "output_axes": self.output_axes,
        }


class _FixedVarianceScaling(VarianceScaling):
    """A VarianceScaling whose scale, mode and distribution are fixed by the subclass."""

    _scale: float
    _mode: str
    _distribution: str

    def __init__(self, seed: int | None = None, input_axes: Sequence[int] | None = None,
                 output_axes: Sequence[int] | None = None) -> None:
        super().__init__(scale=self._scale, mode=self._mode, distribution=self._distribution,
                         seed=seed, input_axes=input_axes, output_axes=output_axes)

    def get_config(self) -> dict:
        return {"seed": self._init_seed, "input_axes": self.input_axes,
                "output_axes": self.output_axes}


class GlorotUniform(_FixedVarianceScaling):
    """Glorot (Xavier) uniform: U[-limit, limit) with `limit = sqrt(6 / (fan_in + fan_out))`.

    The default `kernel_initializer` of Keras's recurrent layers and Dense.

    Example:
        >>> init = GlorotUniform(seed=123)
        >>> init
        GlorotUniform(seed=123)
        >>> w = init((16, 4 * 32))             # fused LSTM kernel: fan_out = 128
        >>> bool(np.abs(w).max() <= np.sqrt(6 / (16 + 128)))
        True
    """

    _scale, _mode, _distribution = 1.0, "fan_avg", "uniform"


class GlorotNormal(_FixedVarianceScaling):
    """Glorot (Xavier) normal: truncated normal with stddev `sqrt(2 / (fan_in + fan_out))`.

    Example:
        >>> GlorotNormal(seed=3)((5, 7)).shape
        (5, 7)
    """

    _scale, _mode, _distribution = 1.0, "fan_avg", "truncated_normal"


class HeNormal(_FixedVarianceScaling):
    """He normal: truncated normal with stddev `sqrt(2 / fan_in)`.

    Example:
        >>> HeNormal(seed=3)((5, 7)).shape
        (5, 7)
    """

    _scale, _mode, _distribution = 2.0, "fan_in", "truncated_normal"


class HeUniform(_FixedVarianceScaling):
    """He uniform: U[-limit, limit) with `limit = sqrt(6 / fan_in)`.

    Example:
        >>> bool(np.abs(HeUniform(seed=3)((6, 7))).max() <= 1.0)
        True
    """

    _scale, _mode, _distribution = 2.0, "fan_in", "uniform"


class LecunNormal(_FixedVarianceScaling):
    """LeCun normal: truncated normal with stddev `sqrt(1 / fan_in)`.

    Example:
        >>> LecunNormal(seed=3)((5, 7)).shape
        (5, 7)
    """

    _scale, _mode, _distribution = 1.0, "fan_in", "truncated_normal"


class LecunUniform(_FixedVarianceScaling):
    """LeCun uniform: U[-limit, limit) with `limit = sqrt(3 / fan_in)`.

    Example:
        >>> bool(np.abs(LecunUniform(seed=3)((3, 7))).max() <= 1.0)
        True
    """

    _scale, _mode, _distribution = 1.0, "fan_in", "uniform"


class Orthogonal(_RandomInitializer):
    """`gain` times a random matrix with orthonormal rows or columns (rank >= 2).

    The shape is viewed as a matrix of `prod(shape[:-1])` rows and `shape[-1]` columns. A normal
    matrix of shape (max(rows, cols), min(rows, cols)) is QR-decomposed, Q's columns get the signs
    of R's diagonal, and Q is transposed when rows < cols. So a square matrix is orthogonal, a
    wide one such as an LSTM recurrent kernel (units, 4 * units) has orthonormal *rows* (its
    units x units gate blocks are not orthogonal), and a tall one has orthonormal columns. The
    default `recurrent_initializer` of Keras's recurrent layers.

    As in Keras, the matrix is computed in float32 whatever `dtype` asks for: a float64 request
    returns the float32 result cast to float64 (orthonormal to about 1e-7, not 1e-16).

    Example:
        >>> q = Orthogonal(seed=0)((4, 4))
        >>> np.allclose(q @ q.T, np.eye(4), atol=1e-6)
        True
        >>> w = Orthogonal(seed=0)((3, 12))    # rows orthonormal
        >>> np.allclose(w @ w.T, np.eye(3), atol=1e-6)
        True
    """

    def __init__(self, gain: float = 1.0, seed: int | None = None) -> None:
        self.gain = _check_number(gain, "gain", "Orthogonal")
        super().__init__(seed)

    def __call__(self, shape: Shape, dtype: Any = None) -> np.ndarray:
        shape, dtype = self._prepare(shape, dtype)
        if len(shape) < 2:
            raise ValueError(
                f"Orthogonal: the shape must have at least 2 dimensions, got shape={shape} of "
                f"rank {len(shape)}. Use it for matrices such as recurrent kernels; for a vector "
                f"use e.g. 'zeros' or 'glorot_uniform'."
            )
        rows, cols = math.prod(shape[:-1]), shape[-1]
        # Always computed in float32, then cast: Keras converts the draw to its default float
        # type (float32) before the QR, so even a float64 request gets float32 values there, and
        # NumPy's QR has no float16 kernel.
        a = _normal(self._rng(), (max(rows, cols), min(rows, cols)), 0.0, 1.0, np.float32)
        q, r = np.linalg.qr(a)
        q *= np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return (self.gain * q.reshape(shape)).astype(dtype, copy=False)

    def get_config(self) -> dict:
        return {**super().get_config(), "gain": self.gain}


# ---- lookup ----------------------------------------------------------------------------------

_CLASSES: tuple[type[Initializer], ...] = (
    Zeros, Ones, Constant, Identity, RandomNormal, RandomUniform, TruncatedNormal,
    VarianceScaling, GlorotUniform, GlorotNormal, HeNormal, HeUniform, LecunNormal, LecunUniform,
    Orthogonal,
)


_BY_NAME: dict[str, type[Initializer]] = {
    **{cls.__name__: cls for cls in _CLASSES},
    **{snake_case(cls.__name__): cls for cls in _CLASSES},
    # Keras's aliases.
    "IdentityInitializer": Identity,
    "OrthogonalInitializer": Orthogonal,
    "normal": RandomNormal,
    "uniform": RandomUniform,
    "one": Ones,
    "zero": Zeros,
}
_UNSUPPORTED = ("STFT", "stft", "STFTInitializer")


def _class_for(name: str, argument: str) -> type[Initializer]:
    if name in _BY_NAME:
        return _BY_NAME[name]
    if name in _UNSUPPORTED:
        raise ValueError(
            f"`{argument}`: Keras's STFT initializer (for spectrogram layers) is not supported by "
            "unrolled."
        )
    raise ValueError(
        f"Unknown initializer {name!r} passed as `{argument}`.{closest(name, _BY_NAME)} "
        f"Available: {', '.join(sorted(_BY_NAME))}."
    )


def get(identifier: Any, *, argument: str = "initializer") -> Initializer | Callable | None:
    """The initializer that `identifier` stands for.

    Args:
        identifier: None (returned as None, as in Keras); a name, snake_case ("glorot_uniform"),
            CamelCase ("GlorotUniform") or a Keras alias ("normal", "uniform", "one", "zero",
            "OrthogonalInitializer", "IdentityInitializer"), built with default arguments; an
            Initializer instance (returned as is) or class (instantiated); a Keras config dict
            such as {"class_name": "Orthogonal", "config": {"gain": 1.0, "seed": None}}; or any
            callable(shape, dtype) (returned as is).
        argument: the name of the argument being resolved, used in error messages (for example
            "recurrent_initializer").

    Example:
        >>> type(get("orthogonal")).__name__
        'Orthogonal'
        >>> get("glorot_uniform") is get("glorot_uniform")    # a name builds a new instance
        False
        >>> get({"module": "keras.initializers", "class_name": "Constant",
        ...      "config": {"value": 1.5}, "registered_name": None})
        Constant(value=1.5)
    """
    if identifier is None:
        return None
    if isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, type):
        if issubclass(identifier, Initializer):
            return identifier()
        raise TypeError(
            f"`{argument}`: the class {identifier.__name__} is not an Initializer subclass."
        )
    if isinstance(identifier, str):
        return _class_for(identifier, argument)()
    if isinstance(identifier, dict):
        return _from_dict(identifier, argument)
    if callable(identifier):
        return identifier
    raise TypeError(
        f"`{argument}` must be an initializer name (for example 'glorot_uniform'), an "
        f"Initializer instance or class, a Keras config dict or a callable(shape, dtype); got "
        f"{identifier!r} ({type(identifier).__name__}). For fixed values use Constant(value)."
    )


def _from_dict(config: dict, argument: str) -> Initializer:
    # The "module" entry is deliberately ignored: only our own classes can be named.
    class_name = config.get("class_name")
    if not isinstance(class_name, str):
        raise ValueError(
            f"`{argument}` is a dict without a string 'class_name': {config!r}. Expected the "
            "form Keras writes, {'class_name': 'GlorotUniform', 'config': {...}}."
        )
    if class_name == "function":
        raise ValueError(
            f"`{argument}` names the custom function {config.get('config')!r}; functions "
            f"cannot be loaded from a config. Pass the callable itself as `{argument}`."
        )
    cls = _class_for(class_name, argument)
    inner = config.get("config") or {}
    return cls.from_config(dict(inner))


def serialize(initializer: Initializer | Callable | None) -> dict | None:
    """The dict Keras writes for `initializer` in a model config (None stays None).

    Example:
        >>> serialize(GlorotUniform(seed=1))
        {'module': 'keras.initializers', 'class_name': 'GlorotUniform',
         'config': {'seed': 1, 'input_axes': None, 'output_axes': None}, 'registered_name': None}
    """
    if initializer is None:
        return None
    if isinstance(initializer, Initializer):
        cls = type(initializer)
        if cls in _CLASSES:
            module, registered = "keras.initializers", None
        else:
            module, registered = cls.__module__, cls.__name__
        return {"module": module, "class_name": cls.__name__,
                "config": initializer.get_config(), "registered_name": registered}
    if callable(initializer):
        name = getattr(initializer, "__name__", type(initializer).__name__)
        return {"module": getattr(initializer, "__module__", None), "class_name": "function",
                "config": name, "registered_name": name}
    raise TypeError(
        f"serialize: expected an Initializer or a callable, got {initializer!r} "
        f"({type(initializer).__name__})."
    )
