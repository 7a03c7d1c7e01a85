"""Keras 3's activation functions, written out in NumPy.

Every name that `keras.activations.get` understands is here, with the same keyword arguments and
the same numbers (checked against Keras on its JAX backend). Each function takes an array and
returns an array of the same floating-point dtype: float32 in, float32 out; float64 in, float64
out. Integer and boolean input is computed in float32, Keras's default float type. float16 input
is computed in float32 and rounded back, so it is a little more accurate than Keras's float16.

Layers name their activations by string, as in `LSTM(4, activation="tanh")`; `get` turns such a
name (or None, a callable, or a Keras-serialized dict) into one of these functions, and
`serialize` turns a function back into the name Keras writes in a config.

Note: Keras 3's `hard_sigmoid` is `clip(x/6 + 1/2, 0, 1)`. Keras 2 and tf.keras used
`clip(0.2*x + 0.5, 0, 1)`, so an old model trained with `recurrent_activation="hard_sigmoid"`
computes slightly different gates when loaded into Keras 3 (and here).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import numpy as np

from unrolled._checks import closest

__all__ = [
    "celu",
    "elu",
    "exponential",
    "gelu",
    "get",
    "glu",
    "hard_shrink",
    "hard_sigmoid",
    "hard_sigmoid_keras2",
    "hard_silu",
    "hard_swish",
    "hard_tanh",
    "leaky_relu",
    "linear",
    "log_sigmoid",
    "log_softmax",
    "mish",
    "relu",
    "relu6",
    "selu",
    "serialize",
    "sigmoid",
    "silu",
    "soft_shrink",
    "softmax",
    "softplus",
    "softsign",
    "sparse_plus",
    "sparse_sigmoid",
    "sparsemax",
    "squareplus",
    "swish",
    "tanh",
    "tanh_shrink",
    "threshold",
]

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _as_float(x: Any, owner: str) -> np.ndarray:
    array = np.asarray(x)
    if array.dtype.kind == "f":
        return array
    if array.dtype.kind in "biu":
        return array.astype(np.float32)
    raise TypeError(
        f"{owner}: `x` must be a numeric array, got {type(x).__name__} with dtype {array.dtype}. "
        f"Convert it first, for example np.asarray(x, dtype='float32')."
    )


def _keeps_dtype(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """Run `fn` on a float array and give its result the input's float dtype."""

    @functools.wraps(fn)
    def wrapper(x, *args, **kwargs):
        x = _as_float(x, fn.__name__)
        dtype = x.dtype
        work = x.astype(np.float32) if dtype.itemsize < 4 else x
        # exp overflowing to inf (and underflowing to 0) is the intended result, as in Keras.
        with np.errstate(over="ignore", under="ignore"):
            out = fn(work, *args, **kwargs)
            return np.asarray(out).astype(dtype, copy=False)

    return wrapper


def _const(value: float, like: np.ndarray) -> np.ndarray:
    return np.asarray(value, dtype=like.dtype)


# ---- rectifiers ------------------------------------------------------------------------------


@_keeps_dtype
def relu(x, negative_slope: float = 0.0, max_value: float | None = None, threshold: float = 0.0):
    """relu(x) = min(x if x > threshold else 0, max_value) - negative_slope*max(threshold-x, 0)."""
    if negative_slope != 0.0 and max_value is None and threshold == 0:
        # Keras takes its leaky-relu kernel here (where(x >= 0, x, slope * x)); it differs from the
        # general formula below when negative_slope > 1.
        return np.where(x >= 0, x, _const(negative_slope, x) * x)
    zero = _const(0.0, x)
    if threshold != 0:
        y = np.where(x > _const(threshold, x), x, zero)
    else:
        y = np.maximum(x, zero)
    if max_value is not None:
        y = np.clip(y, zero, _const(max_value, x))
    if negative_slope != 0.0:
        negative_part = np.maximum(_const(threshold, x) - x, zero)
        y = y - _const(negative_slope, x) * negative_part
    return y


@_keeps_dtype
def leaky_relu(x, negative_slope: float = 0.2):
    """leaky_relu(x) = x if x >= 0 else negative_slope * x."""
    return np.where(x >= 0, x, _const(negative_slope, x) * x)


@_keeps_dtype
def relu6(x):
    """relu6(x) = min(max(x, 0), 6)."""
    return np.minimum(np.maximum(x, _const(0.0, x)), _const(6.0, x))


@_keeps_dtype
def elu(x, alpha: float = 1.0):
    """elu(x) = x if x > 0 else alpha * (exp(x) - 1)."""
    return np.where(x > 0, x, _const(alpha, x) * np.expm1(np.minimum(x, _const(0.0, x))))


@_keeps_dtype
def celu(x, alpha: float = 1.0):
    """celu(x) = max(x, 0) + alpha * (exp(min(x, 0) / alpha) - 1)."""
    zero = _const(0.0, x)
    a = _const(alpha, x)
    return np.maximum(x, zero) + a * np.expm1(np.minimum(x, zero) / a)


@_keeps_dtype
def selu(x):
    """selu(x) = 1.0507... * (x if x > 0 else 1.6732... * (exp(x) - 1))."""
    negative = _const(_SELU_ALPHA, x) * np.expm1(np.minimum(x, _const(0.0, x)))
    return _const(_SELU_SCALE, x) * np.where(x > 0, x, negative)


# ---- smooth functions ------------------------------------------------------------------------


@_keeps_dtype
def sigmoid(x):
    """sigmoid(x) = 1 / (1 + exp(-x)), evaluated without overflow for large |x|."""
    # exp(-|x|) never overflows; the two branches are the same function rearranged.
    z = np.exp(-np.abs(x))
    one = _const(1.0, x)
    return np.where(x >= 0, one / (one + z), z / (one + z))


@_keeps_dtype
def tanh(x):
    """tanh(x) = (exp(x) - exp(-x)) / (exp(x) + exp(-x))."""
    return np.tanh(x)


@_keeps_dtype
def softplus(x):
    """softplus(x) = log(exp(x) + 1)."""
    return np.logaddexp(x, _const(0.0, x))


@_keeps_dtype
def softsign(x):
    """softsign(x) = x / (|x| + 1)."""
    return x / (_const(1.0, x) + np.abs(x))


@_keeps_dtype
def squareplus(x, b: float = 4):
    """squareplus(x) = (x + sqrt(x^2 + b)) / 2."""
    return (x + np.sqrt(np.square(x) + _const(b, x))) / _const(2.0, x)


@_keeps_dtype
def silu(x):
    """silu(x) = x * sigmoid(x), also called swish."""
    return x * sigmoid(x)


swish = silu


_erfc = np.frompyfunc(math.erfc, 1, 1)


@_keeps_dtype
def gelu(x, approximate: bool = False):
    """gelu(x) = x/2 * erfc(-x/sqrt(2)), or x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))."""
    if approximate:
        c = _const(math.sqrt(2.0 / math.pi), x)
        inner = c * (x + _const(0.044715, x) * x**3)
        return _const(0.5, x) * x * (_const(1.0, x) + np.tanh(inner))
    # NumPy has no erf; math.erfc is exact to double precision. erfc(-t) rather than 1 + erf(t)
    # keeps the tiny values for very negative x instead of cancelling them to 0.
    t = -x.astype(np.float64) / math.sqrt(2.0)
    return 0.5 * x.astype(np.float64) * _erfc(t).astype(np.float64)


@_keeps_dtype
def mish(x):
    """mish(x) = x * tanh(softplus(x))."""
    return x * np.tanh(np.logaddexp(x, _const(0.0, x)))


@_keeps_dtype
def exponential(x):
    """exponential(x) = exp(x)."""
    return np.exp(x)


@_keeps_dtype
def log_sigmoid(x):
    """log_sigmoid(x) = log(sigmoid(x)) = -softplus(-x)."""
    return -np.logaddexp(-x, _const(0.0, x))


@_keeps_dtype
def tanh_shrink(x):
    """tanh_shrink(x) = x - tanh(x)."""
    return x - np.tanh(x)


# ---- piecewise-linear functions --------------------------------------------------------------


@_keeps_dtype
def hard_sigmoid(x):
    """hard_sigmoid(x) = clip(x / 6 + 1/2, 0, 1) (Keras 3; Keras 2 used 0.2 * x + 0.5)."""
    y = x / _const(6.0, x) + _const(0.5, x)
    return np.clip(y, _const(0.0, x), _const(1.0, x))


@_keeps_dtype
def hard_sigmoid_keras2(x):
    """Keras 2's hard_sigmoid(x) = clip(0.2 * x + 1/2, 0, 1), for models saved by Keras 2.

    Loading a file written by Keras 2 or tf.keras maps its "hard_sigmoid" here, so an old LSTM or
    GRU computes the gates it was trained with. Keras 3 has no such function.
    """
    y = x * _const(0.2, x) + _const(0.5, x)
    return np.clip(y, _const(0.0, x), _const(1.0, x))


@_keeps_dtype
def hard_silu(x):
    """hard_silu(x) = x * hard_sigmoid(x) = x * clip(x / 6 + 1/2, 0, 1), also called hard_swish."""
    return x * hard_sigmoid(x)


hard_swish = hard_silu


@_keeps_dtype
def hard_tanh(x):
    """hard_tanh(x) = clip(x, -1, 1)."""
    return np.clip(x, _const(-1.0, x), _const(1.0, x))


@_keeps_dtype
def sparse_sigmoid(x):
    """sparse_sigmoid(x) = clip((x + 1) / 2, 0, 1)."""
    half = _const(0.5, x)
    return half * np.clip(x + _const(1.0, x), _const(0.0, x), _const(2.0, x))


@_keeps_dtype
def sparse_plus(x):
    """sparse_plus(x) = 0 if x <= -1, (x + 1)^2 / 4 if -1 < x < 1, x if x >= 1."""
    middle = np.square(x + _const(1.0, x)) / _const(4.0, x)
    return np.where(x <= -1, _const(0.0, x), np.where(x >= 1, x, middle))


@_keeps_dtype
def soft_shrink(x, threshold: float = 0.5):
    """soft_shrink(x) = x - threshold if x > threshold, x + threshold if x < -threshold, else 0."""
    t = _const(threshold, x)
    return np.where(x > t, x - t, np.where(x < -t, x + t, _const(0.0, x)))


@_keeps_dtype
def hard_shrink(x, threshold: float = 0.5):
    """hard_shrink(x) = x if |x| > threshold else 0."""
    return np.where(np.abs(x) > _const(threshold, x), x, _const(0.0, x))


@_keeps_dtype
def threshold(x, threshold: float, default_value: float):
    """threshold(x) = x if x > threshold else default_value."""
    return np.where(x > _const(threshold, x), x, _const(default_value, x))


def linear(x):
    """linear(x) = x (the input itself, returned unchanged)."""
    return x


# ---- functions over an axis ------------------------------------------------------------------


@_keeps_dtype
def softmax(x, axis: int | tuple[int, ...] = -1):
    """softmax(x) = exp(x) / sum(exp(x), axis), computed as exp(x - max(x)) / sum(...)."""
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


@_keeps_dtype
def log_softmax(x, axis: int | tuple[int, ...] = -1):
    """log_softmax(x) = x - log(sum(exp(x), axis)), computed with the maximum subtracted first."""
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


@_keeps_dtype
def glu(x, axis: int = -1):
    """glu(x) = a * sigmoid(b), where a, b are the two halves of x along `axis`."""
    if x.shape[axis] % 2 != 0:
        raise ValueError(
            f"glu: the size of `axis` ({axis}) must be even, to split x into two halves; got "
            f"x.shape={x.shape}. Pick an axis of even size."
        )
    a, b = np.split(x, 2, axis=axis)
    return a * sigmoid(b)


@_keeps_dtype
def sparsemax(x, axis: int = -1):
    """sparsemax(x) = max(x - tau, 0), with tau chosen so the result sums to 1 along `axis`."""
    z = -np.sort(-x, axis=axis)  # descending
    cumsum = np.cumsum(z, axis=axis)
    k_shape = [1] * x.ndim
    k_shape[axis] = -1
    k = np.arange(1, x.shape[axis] + 1, dtype=x.dtype).reshape(k_shape)
    support = z - (cumsum - 1) / k > 0
    support_size = np.sum(support, axis=axis, keepdims=True).astype(x.dtype)
    tau = (np.sum(np.where(support, cumsum, 0), axis=axis, keepdims=True) - 1) / support_size
    return np.maximum(x - tau, _const(0.0, x))


# ---- lookup ----------------------------------------------------------------------------------

_BUILTINS: dict[str, Callable] = {
    fn.__name__: fn
    for fn in (
        relu, leaky_relu, relu6, softmax, celu, elu, selu, softplus, softsign, squareplus,
        soft_shrink, sparse_plus, silu, gelu, glu, tanh, tanh_shrink, threshold, sigmoid,
        sparse_sigmoid, exponential, hard_sigmoid, hard_silu, hard_tanh, hard_shrink, linear,
        mish, log_softmax, log_sigmoid, sparsemax,
    )
}
_ALIASES = {"swish": silu, "hard_swish": hard_silu}
_BY_NAME: dict[str, Callable] = {**_BUILTINS, **_ALIASES}
_NAME_OF = {id(fn): name for name, fn in _BUILTINS.items()}
# Not a Keras 3 name: what a "hard_sigmoid" in a file written by Keras 2 becomes when loaded.
_NAME_OF[id(hard_sigmoid_keras2)] = "hard_sigmoid_keras2"


def _by_name(name: str, argument: str) -> Callable:
    try:
        return _BY_NAME[name] if name != "hard_sigmoid_keras2" else hard_sigmoid_keras2
    except KeyError:
        raise ValueError(
            f"Unknown activation {name!r} passed as `{argument}`.{closest(name, _BY_NAME)} "
            f"Available activations: {', '.join(sorted(_BY_NAME))}. "
            f"Pass one of these names, None for linear, or a callable."
        ) from None


def get(identifier: Any, *, argument: str = "activation") -> Callable:
    """The activation function that `identifier` names.

    Args:
        identifier: None or "linear" (the identity), an activation name such as "tanh", a
            callable (returned unchanged), or a dict as Keras serializes a built-in function,
            for example {"class_name": "function", "config": "tanh", ...}.
        argument: the name of the argument being resolved, used in error messages (for example
            "recurrent_activation").

    Returns:
        A function from an array to an array.

    Example:
        >>> get("hard_sigmoid").__name__
        'hard_sigmoid'
        >>> get(None) is linear
        True
        >>> get("relu")(np.array([-2.0, 3.0], dtype="float32"))
        array([0., 3.], dtype=float32)
    """
    if identifier is None:
        return linear
    if isinstance(identifier, str):
        return _by_name(identifier, argument)
    if isinstance(identifier, dict):
        return _from_dict(identifier, argument)
    if callable(identifier):
        return identifier
    raise TypeError(
        f"`{argument}` must be an activation name (for example 'tanh'), None, a callable or a "
        f"Keras-serialized dict; got {identifier!r} ({type(identifier).__name__})."
    )


def _from_dict(config: dict, argument: str) -> Callable:
    # Keras writes a built-in as {"module": ..., "class_name": "function", "config": "tanh"}.
    # The module is never imported: only our own built-ins can be named this way.
    class_name = config.get("class_name")
    name = config.get("config") if class_name == "function" else class_name
    if name == "hard_sigmoid_keras2":
        return hard_sigmoid_keras2
    if isinstance(name, str) and name in _BY_NAME:
        return _BY_NAME[name]
    if isinstance(name, str) and class_name == "function":
        raise ValueError(
            f"`{argument}` names the function {name!r}, which is not a Keras built-in "
            f"activation.{closest(name, _BY_NAME)} Custom functions cannot be loaded from a "
            f"config; pass the function itself as `{argument}`. Built-ins: "
            f"{', '.join(sorted(_BY_NAME))}."
        )
    raise ValueError(
        f"`{argument}` is a dict that does not name a built-in activation: {config!r}. Expected "
        "the form Keras writes, {'class_name': 'function', 'config': 'tanh', ...}; activation "
        "layers or other objects are not supported here."
    )


def serialize(activation: Callable) -> str:
    """The name Keras writes for `activation` in a config.

    Built-ins give their Keras name (the aliases give the canonical name: swish -> "silu");
    any other callable gives its `__name__`.

    Example:
        >>> serialize(swish)
        'silu'
    """
    name = _NAME_OF.get(id(activation))
    if name is not None:
        return name
    if callable(activation):
        return getattr(activation, "__name__", type(activation).__name__)
    raise TypeError(
        f"serialize: expected an activation function, got {activation!r} "
        f"({type(activation).__name__})."
    )
