"""Argument checks shared by the public API; each error says what was expected, what came, and the fix."""

from __future__ import annotations

import numbers
import re
from typing import Any, Iterable

import numpy as np

FLOAT_DTYPES = ("float16", "float32", "float64")


def snake_case(name: str) -> str:
    """Keras's naming: SimpleRNNCell -> simple_rnn_cell, GlorotUniform -> glorot_uniform."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def closest(name: str, options: Iterable[str]) -> str:
    """' Did you mean "x"?' when a close option exists, else ''."""
    import difflib  # only on the error path; not needed at import

    match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f' Did you mean "{match[0]}"?' if match else ""


def positive_int(value: Any, name: str, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if (not isinstance(value, bool) and isinstance(value, numbers.Real)
                and float(value).is_integer() and value > 0):
            return int(value)
        raise TypeError(
            f"{owner}: `{name}` must be a positive integer, got {value!r} "
            f"({type(value).__name__}). Pass for example {name}=4."
        )
    if value <= 0:
        raise ValueError(
            f"{owner}: `{name}` must be a positive integer, got {value}. "
            f"It is the size of the layer's output and state; pass for example {name}=4."
        )
    return int(value)


def rate(value: Any, name: str, owner: str) -> float:
    """A dropout rate; like Keras, values outside [0, 1] are clamped."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{owner}: `{name}` must be a number between 0 and 1 (the fraction of units to drop), "
            f"got {value!r} ({type(value).__name__})."
        )
    return min(1.0, max(0.0, float(value)))


def float_dtype(dtype: Any, owner: str) -> np.dtype:
    if dtype is None:
        return np.dtype("float32")
    if isinstance(dtype, dict):  # a Keras DTypePolicy config
        dtype = dtype.get("config", {}).get("name", dtype)
    if isinstance(dtype, str) and dtype.startswith("mixed_"):
        raise ValueError(
            f"{owner}: mixed-precision policy {dtype!r} is not supported; "
            f"use one of {', '.join(FLOAT_DTYPES)}."
        )
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in FLOAT_DTYPES:
        raise ValueError(
            f"{owner}: `dtype` must be a floating-point type, one of {', '.join(FLOAT_DTYPES)}; "
            f"got {dtype!r}. float32 is the default."
        )
    return dt


def as_float_array(value: Any, name: str, owner: str, dtype: np.dtype) -> np.ndarray:
    """Convert array-like input to `dtype`; integers and booleans are cast, anything else is refused."""
    if isinstance(value, np.ndarray):
        array = value
    else:
        if value is None:
            raise TypeError(f"{owner}: `{name}` is required, got None.")
        try:
            array = np.asarray(value)
        except (ValueError, TypeError) as error:
            raise TypeError(
                f"{owner}: `{name}` must be a numeric array (for example a NumPy array or nested "
                f"lists of numbers of equal length); converting it failed: {error}"
            ) from None
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"{owner}: `{name}` must hold numbers, got an array of dtype {array.dtype} "
            f"(shape {array.shape}). Convert it first, for example np.asarray(x, dtype='float32')."
        )
    if array.dtype != dtype:
        array = array.astype(dtype)
    return array


def shape_str(shape: tuple) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
