"""Optimizers: Keras 3's update rules, written out in NumPy.

An optimizer turns gradients into weight updates. Every optimizer here follows Keras's order of
operations for one update (`apply_gradients`):

1. clip the gradients (`clipnorm` per weight, or `global_clipnorm` over all, or `clipvalue`);
2. decay the weights, when `weight_decay` is set: `w <- w - w * weight_decay * lr`;
3. apply the optimizer's own rule (`update_step`) with the current learning rate `lr`;
4. count the update: `iterations += 1`.

`lr` is `learning_rate` itself, or `schedule(iterations)` when a schedule from
`unrolled.optimizers.schedules` is given, evaluated before the count goes up (0 on the first
update). Everything is computed in the weights' dtype (float32), as Keras does, so the updated
weights match Keras's to float32 rounding.

Example:
    >>> import numpy as np
    >>> from unrolled import optimizers
    >>> w = np.array([1.0, -2.0], dtype="float32")
    >>> opt = optimizers.SGD(learning_rate=0.1)
    >>> opt.apply_gradients([(np.array([0.5, 0.5], dtype="float32"), w)])
    >>> w                                     # w - 0.1 * g, updated in place
    array([ 0.95, -2.05], dtype=float32)
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from unrolled import _checks
from unrolled.optimizers import schedules

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "get", "serialize",
           "schedules"]


# Weights of this many numbers or more may be updated by a compiled pass (Adam; the same
# bits), where NumPy's passes over a large weight (an embedding table) take most of an update.
# The literal of unrolled.kernels._numba.COMPILED_PASS_MIN, which decides: checked here first
# so that an update of small weights does not import the kernels.
_LARGE = 1 << 16


def _array(variable: Any, owner: str) -> np.ndarray:
    """The array an update writes into: a layer Weight's own array, or a NumPy array itself."""
    array = getattr(variable, "value", variable)
    if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
        raise TypeError(
            f"{owner}: variables must be layer weights (layer.trainable_weights) or float NumPy "
            f"arrays updated in place, got {type(variable).__name__}."
        )
    return array


def _nonnegative(value: Any, name: str, owner: str) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or value < 0:
        raise ValueError(f"{owner}: `{name}` must be a non-negative number or None, got {value!r}.")
    return float(value)


class Optimizer:
    """Base class. Subclasses create per-weight slots in `build_slots` and write `update_step`.

    Args:
        learning_rate: a float, a schedule (`schedules.ExponentialDecay(...)`), or a callable
            with no arguments returning the rate.
        weight_decay: if set, every update first shrinks each weight by `weight_decay * lr`.
        clipnorm: clip each weight's gradient to this L2 norm.
        clipvalue: clip each gradient element into `[-clipvalue, clipvalue]`.
        global_clipnorm: clip all gradients together to this global L2 norm.
            At most one of the three clipping options may be set, as in Keras.
        name: the optimizer's name.
    """

    _default_name = "optimizer"

    def __init__(self, learning_rate: Any, *, weight_decay: float | None = None,
                 clipnorm: float | None = None, clipvalue: float | None = None,
                 global_clipnorm: float | None = None, name: str | None = None):
        owner = type(self).__name__
        self.name = name or self._default_name
        self.weight_decay = _nonnegative(weight_decay, "weight_decay", owner)
        self.clipnorm = _nonnegative(clipnorm, "clipnorm", owner)
        self.clipvalue = _nonnegative(clipvalue, "clipvalue", owner)
        self.global_clipnorm = _nonnegative(global_clipnorm, "global_clipnorm", owner)
        if sum(a is not None for a in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError(
                f"{owner}: set at most one of `clipnorm`, `clipvalue` and `global_clipnorm`, got "
                f"clipnorm={clipnorm}, clipvalue={clipvalue}, global_clipnorm={global_clipnorm}."
            )
        self.learning_rate = learning_rate
        self.iterations = 0
        self._slots: dict[int, dict[str, np.ndarray]] = {}
        self._tracked: list[np.ndarray] = []  # keeps slot keys (array ids) valid

    # ---------------------------------------------------------------- learning rate

    @property
    def learning_rate(self) -> np.float32:
        """The rate the next update uses (a schedule is evaluated at `iterations`)."""
        lr = self._learning_rate
        if isinstance(lr, schedules.LearningRateSchedule):
            return np.float32(lr(self.iterations))
        if callable(lr):
            return np.float32(lr())
        return np.float32(lr)

    @learning_rate.setter
    def learning_rate(self, value: Any) -> None:
        value = schedules.get(value)
        if not (callable(value) or isinstance(value, (int, float, np.number))) or isinstance(value, bool):
            raise TypeError(
                f"{type(self).__name__}: `learning_rate` must be a number, a schedule or a "
                f"callable, got {value!r}."
            )
        self._learning_rate = value

    # ---------------------------------------------------------------- slots

    def build_slots(self, variable: np.ndarray) -> dict[str, np.ndarray]:
        """The per-weight state this optimizer keeps (momentum, velocity, ...). None by default."""
        return {}

    def _slots_for(self, variable: np.ndarray) -> dict[str, np.ndarray]:
        key = id(variable)
        if key not in self._slots:
            self._slots[key] = self.build_slots(variable)
            self._tracked.append(variable)
        return self._slots[key]

    def slots(self, variable: Any) -> dict[str, np.ndarray]:
        """The state kept for one weight, by name (e.g. {'momentum': ..., 'velocity': ...})."""
        return self._slots_for(_array(variable, type(self).__name__))

    # ---------------------------------------------------------------- applying

    def apply_gradients(self, grads_and_vars: Iterable[tuple[Any, Any]]) -> None:
        """Apply one update from `(gradient, weight)` pairs; weights change in place."""
        pairs = list(grads_and_vars)
        self.apply([g for g, _ in pairs], [v for _, v in pairs])

    def apply(self, grads: list, variables: list) -> None:
        """Apply one update: `grads[i]` to `variables[i]` (gradients that are None are skipped)."""
        owner = type(self).__name__
        if len(grads) != len(variables):
            raise ValueError(f"{owner}.apply: got {len(grads)} gradients for {len(variables)} "
                             f"variables; give one gradient per variable.")
        arrays, gradients = [], []
        for g, v in zip(grads, variables):
            if g is None:
                continue
            array = _array(v, owner)
            g = np.asarray(g, dtype=array.dtype)
            if g.shape != array.shape:
                raise ValueError(f"{owner}: a gradient of shape {_checks.shape_str(g.shape)} was given "
                                 f"for a variable of shape {_checks.shape_str(array.shape)}.")
            arrays.append(array)
            gradients.append(g)
        gradients = self._clip(gradients)
        lr = self.learning_rate
        if self.weight_decay is not None:
            for array in arrays:
                wd = array.dtype.type(self.weight_decay)
                array -= array * wd * lr.astype(array.dtype)
        for g, array in zip(gradients, arrays):
            self.update_step(g, array, lr.astype(array.dtype))
        self.iterations += 1

    def _clip(self, grads: list[np.ndarray]) -> list[np.ndarray]:
        if self.clipnorm:
            clipped = []
            for g in grads:
                norm = np.sqrt(np.sum(np.square(g)))                       # ||g||
                limit = g.dtype.type(self.clipnorm)
                clipped.append(g * limit / np.maximum(norm, limit))
            return clipped
        if self.global_clipnorm:
            norm = np.sqrt(np.sum([np.sum(np.square(g)) for g in grads]))   # ||all grads||
            limit = np.float32(self.global_clipnorm)
            scale = limit * np.minimum(np.float32(1) / norm, np.float32(1) / limit)
            return [g * scale.astype(g.dtype) for g in grads]
        if self.clipvalue:
            return [np.clip(g, -self.clipvalue, self.clipvalue).astype(g.dtype) for g in grads]
        return grads

    def update_step(self, gradient: np.ndarray, variable: np.ndarray, lr: np.floating) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement update_step().")

    # ---------------------------------------------------------------- config

    def get_config(self) -> dict:
        lr = self._learning_rate
        return {
            "name": self.name,
            "learning_rate": schedules.serialize(lr) if isinstance(
                lr, schedules.LearningRateSchedule) else float(self.learning_rate),
            "weight_decay": self.weight_decay, "clipnorm": self.clipnorm,
            "global_clipnorm": self.global_clipnorm, "clipvalue": self.clipvalue,
        }

    @classmethod
    def from_config(cls, config: dict) -> "Optimizer":
        config = dict(config)
        for ignored in ("use_ema", "ema_momentum", "ema_overwrite_frequency", "loss_scale_factor",
                        "gradient_accumulation_steps"):
            config.pop(ignored, None)
        if isinstance(config.get("learning_rate"), dict):
            config["learning_rate"] = schedules.deserialize(config["learning_rate"])
        return cls(**config)

    def __repr__(self) -> str:
        lr = self._learning_rate
        shown = repr(lr) if callable(lr) else f"{float(lr):g}"
        return f"{type(self).__name__}(learning_rate={shown}, iterations={self.iterations})"


class SGD(Optimizer):
    """Gradient descent, with optional momentum and Nesterov momentum.

    Without momentum: `w <- w - lr * g`. With momentum `mu` (velocity `m`, zeros at first)::

        m <- mu * m - lr * g
        w <- w + m                         (classical)
        w <- w + mu * m - lr * g           (nesterov=True, with the new m)

    Args:
        learning_rate: default 0.01.
        momentum: `mu` in [0, 1]; default 0.
        nesterov: default False.
        weight_decay, clipnorm, clipvalue, global_clipnorm, name: as for `Optimizer`.
    """

    _default_name = "SGD"

    def __init__(self, learning_rate: Any = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 **kwargs: Any):
        super().__init__(learning_rate, **kwargs)
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum <= 1:
            raise ValueError(f"SGD: `momentum` must be a float between 0 and 1, got {momentum!r}.")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def build_slots(self, variable: np.ndarray) -> dict[str, np.ndarray]:
        return {"momentum": np.zeros_like(variable)} if self.momentum != 0 else {}

    def update_step(self, g: np.ndarray, w: np.ndarray, lr: np.floating) -> None:
        if self.momentum == 0:
            w -= g * lr
            return
        m = self._slots_for(w)["momentum"]
        mu = w.dtype.type(self.momentum)
        m[...] = m * mu - g * lr
        if self.nesterov:
            w += m * mu - g * lr
        else:
            w += m

    def get_config(self) -> dict:
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam: moving averages of the gradient (`m`) and of its square (`v`), bias-corrected.

    At update number `t = iterations + 1`::

        m <- m + (g - m) * (1 - beta_1)
        v <- v + (g^2 - v) * (1 - beta_2)
        alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)
        w <- w - alpha * m / (sqrt(v) + epsilon)

    Keras folds the bias correction into `alpha`, so `epsilon` is added to the uncorrected
    `sqrt(v)` ("epsilon hat" in the Adam paper). With `amsgrad=True`, `v` in the last line is the
    running maximum of `v`.

    Args:
        learning_rate: default 0.001.
        beta_1: default 0.9. beta_2: default 0.999. epsilon: default 1e-7.
        amsgrad: default False.
        weight_decay, clipnorm, clipvalue, global_clipnorm, name: as for `Optimizer`.
    """

    _default_name = "adam"

    def __init__(self, learning_rate: Any = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, amsgrad: bool = False, **kwargs: Any):
        super().__init__(learning_rate, **kwargs)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.amsgrad = bool(amsgrad)

    def build_slots(self, variable: np.ndarray) -> dict[str, np.ndarray]:
        slots = {"momentum": np.zeros_like(variable), "velocity": np.zeros_like(variable)}
        if self.amsgrad:
            slots["velocity_hat"] = np.zeros_like(variable)
        return slots

    def update_step(self, g: np.ndarray, w: np.ndarray, lr: np.floating) -> None:
        f = w.dtype.type
        slots = self._slots_for(w)
        m, v = slots["momentum"], slots["velocity"]
        t = f(self.iterations + 1)
        beta_1_power = np.power(f(self.beta_1), t)
        beta_2_power = np.power(f(self.beta_2), t)
        alpha = lr * np.sqrt(f(1) - beta_2_power) / (f(1) - beta_1_power)
        if not self.amsgrad and w.size >= _LARGE:
            from unrolled.kernels import _numba  # the same numbers in one compiled pass

            if _numba.adam_update(w, g, m, v, f(1 - self.beta_1), f(1 - self.beta_2), alpha,
                                  f(self.epsilon)):
                return
        m += (g - m) * f(1 - self.beta_1)
        v += (np.square(g) - v) * f(1 - self.beta_2)
        if self.amsgrad:
            v_hat = slots["velocity_hat"]
            np.maximum(v_hat, v, out=v_hat)
            v = v_hat
        w -= (m * alpha) / (np.sqrt(v) + f(self.epsilon))

    def get_config(self) -> dict:
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "amsgrad": self.amsgrad}


class AdamW(Adam):
    """Adam with decoupled weight decay: each update first does `w <- w - w * weight_decay * lr`,
    then the Adam step. Keras's defaults: `weight_decay=0.004`, `learning_rate=0.001`."""

    _default_name = "adamw"

    def __init__(self, learning_rate: Any = 0.001, weight_decay: float = 0.004, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-7, amsgrad: bool = False,
                 **kwargs: Any):
        if weight_decay is None:
            raise ValueError("AdamW: `weight_decay` must be a number; for no decay use Adam.")
        super().__init__(learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                         amsgrad=amsgrad, weight_decay=weight_decay, **kwargs)


class RMSprop(Optimizer):
    """RMSprop: divide the gradient by a moving root-mean-square of recent gradients::

        v <- rho * v + (1 - rho) * g^2
        step = lr * g / sqrt(v + epsilon)                  (centered: sqrt(v - a^2 + epsilon),
                                                            with a <- rho * a + (1 - rho) * g)
        w <- w - step                                      (momentum mu: m <- mu * m + step;
                                                            w <- w - m)

    Note that Keras puts `epsilon` inside the square root.

    Args:
        learning_rate: default 0.001. rho: default 0.9. momentum: default 0.
        epsilon: default 1e-7. centered: default False.
        weight_decay, clipnorm, clipvalue, global_clipnorm, name: as for `Optimizer`.
    """

    _default_name = "rmsprop"

    def __init__(self, learning_rate: Any = 0.001, rho: float = 0.9, momentum: float = 0.0,
                 epsilon: float = 1e-7, centered: bool = False, **kwargs: Any):
        super().__init__(learning_rate, **kwargs)
        self.rho = rho
        self.momentum = momentum
        self.epsilon = epsilon
        self.centered = bool(centered)

    def build_slots(self, variable: np.ndarray) -> dict[str, np.ndarray]:
        slots = {"velocity": np.zeros_like(variable)}
        if self.momentum > 0:
            slots["momentum"] = np.zeros_like(variable)
        if self.centered:
            slots["average_gradient"] = np.zeros_like(variable)
        return slots

    def update_step(self, g: np.ndarray, w: np.ndarray, lr: np.floating) -> None:
        f = w.dtype.type
        slots = self._slots_for(w)
        v = slots["velocity"]
        rho = f(self.rho)
        v[...] = rho * v + f(1 - self.rho) * np.square(g)
        if self.centered:
            a = slots["average_gradient"]
            a[...] = rho * a + f(1 - self.rho) * g
            denominator = v - np.square(a) + f(self.epsilon)
        else:
            denominator = v + f(self.epsilon)
        step = (lr * g) / np.sqrt(denominator)
        if self.momentum > 0:
            m = slots["momentum"]
            m[...] = f(self.momentum) * m + step
            w -= m
        else:
            w -= step

    def get_config(self) -> dict:
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum,
                "epsilon": self.epsilon, "centered": self.centered}


class Adagrad(Optimizer):
    """Adagrad: per-element rates that shrink with the sum of squared gradients so far::

        s <- s + g^2                     (s starts at initial_accumulator_value)
        w <- w - lr * g / sqrt(s + epsilon)

    Args:
        learning_rate: default 0.001. initial_accumulator_value: default 0.1.
        epsilon: default 1e-7.
        weight_decay, clipnorm, clipvalue, global_clipnorm, name: as for `Optimizer`.
    """

    _default_name = "adagrad"

    def __init__(self, learning_rate: Any = 0.001, initial_accumulator_value: float = 0.1,
                 epsilon: float = 1e-7, **kwargs: Any):
        super().__init__(learning_rate, **kwargs)
        self.initial_accumulator_value = initial_accumulator_value
        self.epsilon = epsilon

    def build_slots(self, variable: np.ndarray) -> dict[str, np.ndarray]:
        return {"accumulator": np.full_like(variable, self.initial_accumulator_value)}

    def update_step(self, g: np.ndarray, w: np.ndarray, lr: np.floating) -> None:
        s = self._slots_for(w)["accumulator"]
        s += np.square(g)
        w -= (lr * g) / np.sqrt(s + w.dtype.type(self.epsilon))

    def get_config(self) -> dict:
        return {**super().get_config(),
                "initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon}


_BY_NAME = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad}


def serialize(optimizer: Optimizer) -> dict:
    return {"class_name": type(optimizer).__name__, "config": optimizer.get_config()}


def get(identifier: Any) -> Optimizer:
    """An optimizer from a name ("adam", "sgd", ...), a Keras config dict, or an instance."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str):
        key = identifier.lower()
        if key not in _BY_NAME:
            raise ValueError(
                f"Unknown optimizer {identifier!r}.{_checks.closest(key, _BY_NAME)} Known: "
                f"{sorted(_BY_NAME)}, or pass an instance such as optimizers.Adam(1e-3)."
            )
        return _BY_NAME[key]()
    if isinstance(identifier, dict) and "class_name" in identifier:
        key = identifier["class_name"].lower()
        if key not in _BY_NAME:
            raise ValueError(f"Unknown optimizer class {identifier['class_name']!r}; known: "
                             f"{sorted(_BY_NAME)}.")
        return _BY_NAME[key].from_config(identifier.get("config", {}))
    raise TypeError(f"`optimizer` must be a name like 'adam', a config dict or an Optimizer, got "
                    f"{type(identifier).__name__}.")
