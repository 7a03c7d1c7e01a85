"""The layer machinery every unrolled layer and cell shares.

A layer keeps its configuration from `__init__`, creates its weights in `build(input_shape)` (on the
first call, or when asked), and does its math in `call`. Weights are plain NumPy arrays stored as
attributes (`cell.kernel`), created by `add_weight`; `layer.weights` lists `Weight` handles on those
same arrays, in creation order, so `get_weights()` / `set_weights()` follow Keras's order and there
is only ever one copy of each weight.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from unrolled import _checks, initializers

__all__ = ["Layer", "Weight", "Symbolic"]

_name_counts: dict[str, int] = {}
# A recurrent layer's kept kernel plans (unrolled.layers.rnn.RNN): for its plain calls, and for
# calls with initial states or a mask (unrolled.kernels.run)
_PLANS = ("_plan", "_call_plan")


def unique_name(base: str) -> str:
    """`simple_rnn`, then `simple_rnn_1`, `simple_rnn_2`, ... as Keras names layers."""
    count = _name_counts.get(base, 0)
    _name_counts[base] = count + 1
    return base if count == 0 else f"{base}_{count}"


class Symbolic:
    """Marker base of symbolic tensors (`unrolled.Input(...)` and what layers return from one).

    A layer called on arguments that hold one records a graph node instead of computing; the
    concrete class, `unrolled.models.node.SymbolicTensor`, lives with the graph machinery.
    """

    __slots__ = ()


def _holds_symbolic(values: Iterable[Any]) -> bool:
    for value in values:
        if type(value) is np.ndarray:       # the eager case, first: a generator's states
            continue
        if isinstance(value, Symbolic):
            return True
        if isinstance(value, (list, tuple)):
            if _holds_symbolic(value):
                return True
        elif isinstance(value, dict) and _holds_symbolic(value.values()):
            return True
    return False


def _graph_aware(call: Callable) -> Callable:
    """Wrap a `__call__` so that symbolic arguments record a graph node instead of computing.

    Eager calls (NumPy arrays) pay one pass over the arguments and nothing else; the graph
    machinery is imported only the first time a symbolic tensor shows up.
    """

    @functools.wraps(call)
    def __call__(self: "Layer", *args: Any, **kwargs: Any) -> Any:
        if not kwargs and len(args) == 1 and type(args[0]) is np.ndarray:
            return call(self, args[0])      # the common eager call, checked in one step
        if _holds_symbolic(args) or (kwargs and _holds_symbolic(kwargs.values())):
            from unrolled.models.node import symbolic_call

            return symbolic_call(self, call, args, kwargs)
        return call(self, *args, **kwargs)

    __call__._graph_aware = True  # type: ignore[attr-defined]
    return __call__


class Weight:
    """A handle on one weight array of a layer (Keras's Variable, without a framework behind it).

    `value` is the layer's own array, not a copy: `assign` writes into it in place.
    """

    __slots__ = ("owner", "name", "value", "trainable")

    def __init__(self, owner: "Layer", name: str, value: np.ndarray, trainable: bool = True):
        self.owner = owner
        self.name = name
        self.value = value
        self.trainable = trainable

    @property
    def path(self) -> str:
        return f"{self.owner.path}/{self.name}"

    @property
    def shape(self) -> tuple:
        return self.value.shape

    @property
    def dtype(self) -> np.dtype:
        return self.value.dtype

    def numpy(self) -> np.ndarray:
        """A copy of the values."""
        return self.value.copy()

    def assign(self, value: Any) -> None:
        """Overwrite the values in place; the shape must match."""
        array = np.asarray(value)
        if array.shape != self.value.shape:
            raise ValueError(
                f"Cannot assign to weight '{self.path}': it has shape "
                f"{_checks.shape_str(self.value.shape)}, the new value has shape "
                f"{_checks.shape_str(array.shape)}."
            )
        np.copyto(self.value, array, casting="unsafe")

    def __array__(self, dtype=None, copy=None):
        if dtype is None:
            return self.value if copy is not True else self.value.copy()
        return self.value.astype(dtype)

    def __repr__(self) -> str:
        return f"<Weight path={self.path} shape={_checks.shape_str(self.shape)} dtype={self.dtype}>"


class Layer:
    """Base class of every layer and cell.

    Subclasses take their configuration in `__init__` (passing `name`, `dtype` and `trainable` on
    to this class), create weights in `build(input_shape)` with `add_weight`, and compute in
    `call`. A user-written recurrent cell subclasses this and adds `state_size` (and optionally
    `output_size` and `get_initial_state`), exactly as in Keras.

    Args:
        name: the layer's name; by default the snake-cased class name, made unique
            (`simple_rnn`, `simple_rnn_1`, ...).
        dtype: the floating-point type of weights and computation, "float32" (default) or
            "float64" (or "float16").
        trainable: whether the weights are trainable.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Every layer, built-in or user-written, takes part in the functional API: its own
        # `__call__` (if it defines one) is wrapped to route symbolic arguments to the graph.
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__call__")
        if own is not None and not getattr(own, "_graph_aware", False):
            cls.__call__ = _graph_aware(own)

    def __init__(self, *, name: str | None = None, dtype: Any = None, trainable: bool = True,
                 **kwargs: Any):
        if kwargs:
            self._reject_kwargs(kwargs)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"{type(self).__name__}: `name` must be a string, got {name!r}.")
        self.name = name if name is not None else unique_name(_checks.snake_case(type(self).__name__))
        self.dtype = _checks.float_dtype(dtype, type(self).__name__).name
        self.trainable = bool(trainable)
        self.built = False
        self._weights: list[Weight] = []
        self._parent: Layer | None = None
        self._build_shape: tuple | None = None

    def _reject_kwargs(self, kwargs: dict) -> None:
        owner = type(self).__name__
        key = sorted(kwargs)[0]
        hint = ""
        if key == "time_major":
            hint = (" Keras 3 removed `time_major`: inputs are always batch-major, "
                    "(batch, timesteps, features). Drop the argument (transpose time-major data "
                    "with x.transpose(1, 0, 2)).")
        else:
            import inspect

            params = [p for cls in type(self).__mro__ if "__init__" in vars(cls)
                      for p in inspect.signature(cls.__init__).parameters
                      if p not in ("self", "kwargs", "args")]
            hint = _checks.closest(key, params)
        raise TypeError(
            f"{owner} got unexpected keyword argument(s) {sorted(kwargs)}.{hint}"
        )

    # ---------------------------------------------------------------- weights

    @property
    def path(self) -> str:
        return self.name if self._parent is None else f"{self._parent.path}/{self.name}"

    def add_weight(self, shape: Sequence[int] | None = None, initializer: Any = None,
                   dtype: Any = None, trainable: bool = True, regularizer: Any = None,
                   constraint: Any = None, name: str | None = None) -> np.ndarray:
        """Create a weight, remember it in `weights`, and return its array.

        Args:
            shape: the weight's shape; () for a scalar.
            initializer: name, object or callable(shape, dtype); "glorot_uniform" for matrices and
                "zeros" for vectors when None, as in Keras.
            dtype: defaults to the layer's dtype.
            trainable: whether the weight is trained.
            regularizer, constraint: accepted for Keras compatibility; used once training exists.
            name: the weight's short name, e.g. "kernel".
        """
        shape = tuple(int(s) for s in (shape or ()))
        if any(s < 0 for s in shape):
            raise ValueError(f"{type(self).__name__}.add_weight: negative dimension in shape {shape}.")
        dtype = np.dtype(dtype) if dtype is not None else np.dtype(self.dtype)
        if initializer is None:
            initializer = "glorot_uniform" if len(shape) >= 2 else "zeros"
        init = initializers.get(initializer)
        value = np.ascontiguousarray(np.asarray(init(shape, dtype=dtype), dtype=dtype))
        if value.shape != shape:
            raise ValueError(
                f"{type(self).__name__}: initializer for weight {name!r} returned shape "
                f"{value.shape}, expected {shape}."
            )
        self._weights.append(Weight(self, name or f"weight_{len(self._weights)}", value, trainable))
        return value

    def _sublayers(self) -> list["Layer"]:
        """Layers whose weights belong to this one, in the order Keras lists them."""
        return []

    def _adopt(self, layer: Any) -> None:
        if isinstance(layer, Layer):
            layer._parent = self

    @property
    def weights(self) -> list[Weight]:
        """All weights, in Keras's order: this layer's own, then each sublayer's."""
        found = list(self._weights)
        for layer in self._sublayers():
            if isinstance(layer, Layer):
                found.extend(layer.weights)
        return found

    @property
    def trainable_weights(self) -> list[Weight]:
        if not self.trainable:
            return []
        own = [w for w in self._weights if w.trainable]
        for layer in self._sublayers():
            if isinstance(layer, Layer):
                own.extend(layer.trainable_weights)
        return own

    @property
    def non_trainable_weights(self) -> list[Weight]:
        trainable = {id(w) for w in self.trainable_weights}
        return [w for w in self.weights if id(w) not in trainable]

    def get_weights(self) -> list[np.ndarray]:
        """Copies of the weights as NumPy arrays, in Keras's order."""
        return [w.numpy() for w in self.weights]

    def set_weights(self, weights: Iterable[Any]) -> None:
        """Overwrite the weights with arrays given in `get_weights()` order and shapes."""
        owner = type(self).__name__
        if isinstance(weights, np.ndarray) or not isinstance(weights, (list, tuple)):
            raise TypeError(
                f"{owner}.set_weights expects a list of arrays (as get_weights() returns), got "
                f"{type(weights).__name__}."
            )
        current = self.weights
        if not self.built and not current:
            raise ValueError(
                f"{owner}.set_weights was called before the layer has weights. Call the layer on "
                f"an input once, or call build(input_shape), then set the weights."
            )
        if len(weights) != len(current):
            expected = ", ".join(f"{w.name} {_checks.shape_str(w.shape)}" for w in current)
            raise ValueError(
                f"{owner}.set_weights expected {len(current)} arrays ({expected}), got "
                f"{len(weights)}."
            )
        arrays = []
        for weight, value in zip(current, weights):
            array = _checks.as_float_array(value, f"weights for '{weight.path}'", owner,
                                           weight.dtype)
            if array.shape != weight.shape:
                raise ValueError(
                    f"{owner}.set_weights: weight '{weight.path}' has shape "
                    f"{_checks.shape_str(weight.shape)}, but the array given for it has shape "
                    f"{_checks.shape_str(array.shape)}. Arrays are expected in get_weights() order."
                )
            arrays.append(array)
        for weight, array in zip(current, arrays):
            np.copyto(weight.value, array)

    def __getstate__(self) -> dict:
        # A copy (copy.deepcopy, pickle) leaves a recurrent layer's kept kernel plans behind: a
        # plan is bound to this layer's weight arrays, and the copy has arrays of its own.
        state = self.__dict__.copy()
        for kept in _PLANS:
            if state.get(kept) is not None:
                state[kept] = None
        return state

    def __setattr__(self, key: str, value: Any) -> None:
        # Re-binding an attribute that holds a weight (`cell.kernel = new`) writes the new values
        # into the existing array, so the `weights` list never goes stale.
        current = self.__dict__.get(key)
        if isinstance(current, np.ndarray) and any(w.value is current for w in
                                                   self.__dict__.get("_weights", ())):
            weight = next(w for w in self._weights if w.value is current)
            weight.assign(value)
            return
        object.__setattr__(self, key, value)
        # A recurrent layer's kept kernel plans (unrolled.kernels.Plan) depend on its settings
        # and its cells': any change drops them, here and up the chain of owners.
        layer: Any = self
        while layer is not None:
            found = layer.__dict__
            for kept in _PLANS:
                if found.get(kept) is not None:
                    found[kept] = None
            layer = found.get("_parent")

    def count_params(self) -> int:
        return int(sum(w.value.size for w in self.weights))

    # ---------------------------------------------------------------- build / call

    def build(self, input_shape: Any = None) -> None:
        """Create the weights for inputs of `input_shape`. The base layer has none.

        Subclasses create their weights, then call `super().build(input_shape)`.
        """
        self.built = True
        if input_shape is not None:
            self._build_shape = tuple(input_shape)

    def _maybe_build(self, input_shape: tuple) -> None:
        if not self.built:
            self.build(input_shape)
            self.built = True
            if self._build_shape is None:
                self._build_shape = tuple(input_shape)

    def check_input_features(self, features: int, arg: str) -> None:
        """Refuse inputs whose feature size differs from the one the weights were built for."""
        built = self._build_shape
        if built and built[-1] is not None and features != built[-1]:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' was built for {built[-1]} input features, but "
                f"`{arg}` has {features}. A layer keeps the feature size of its first input; create a "
                f"new layer for inputs of another size."
            )

    # Masking: a layer that passes a (batch, timesteps) mask on unchanged sets
    # `supports_masking = True`; one that makes or changes a mask overrides `compute_mask`.
    supports_masking: bool = False

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        """The mask that travels on with this layer's output (None: no mask)."""
        return mask if self.supports_masking else None

    def call(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not implement call().")

    @_graph_aware
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if args:
            first = args[0]
            shape = getattr(first, "shape", None) or np.shape(first)
            self._maybe_build(tuple(shape))
        return self.call(*args, **kwargs)

    # ---------------------------------------------------------------- config

    def get_config(self) -> dict:
        return {"name": self.name, "trainable": self.trainable, "dtype": self.dtype}

    @classmethod
    def from_config(cls, config: dict) -> "Layer":
        return cls(**config)

    def _repr_fields(self) -> list[str]:
        return []

    def _repr_weight_owner(self) -> "Layer":
        """The layer whose weights the repr lists (a wrapper may show its cell's)."""
        return self

    def __repr__(self) -> str:
        fields = self._repr_fields()
        owner = self._repr_weight_owner()
        if owner.built:
            fields += [f"{w.name} {_checks.shape_str(w.shape)}" for w in owner._weights]
        else:
            fields.append("not built")
        if self.dtype != "float32":
            fields.append(f"dtype={self.dtype}")
        return f"{type(self).__name__}({', '.join(fields)})"
