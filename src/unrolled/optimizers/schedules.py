"""Learning-rate schedules: the learning rate as a function of the optimizer's step count.

An optimizer given a schedule calls it with `iterations`, the number of updates applied so far
(0 for the first update), exactly as Keras does. Each schedule computes in float32, Keras's default
float type, so the rates equal Keras's to the last bit in the common cases.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = ["LearningRateSchedule", "ExponentialDecay", "PiecewiseConstantDecay", "InverseTimeDecay",
           "PolynomialDecay", "CosineDecay", "get", "serialize", "deserialize"]

_F = np.float32


def _positive(value: Any, name: str, owner: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or value <= 0:
        raise ValueError(f"{owner}: `{name}` must be a positive number, got {value!r}.")
    return value


class LearningRateSchedule:
    """Base class: a callable `schedule(step) -> learning rate` with a config."""

    def __call__(self, step: int) -> np.float32:
        raise NotImplementedError(f"{type(self).__name__} does not implement __call__(step).")

    def get_config(self) -> dict:
        raise NotImplementedError(f"{type(self).__name__} does not implement get_config().")

    @classmethod
    def from_config(cls, config: dict) -> "LearningRateSchedule":
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class ExponentialDecay(LearningRateSchedule):
    """`lr(step) = initial_learning_rate * decay_rate ** (step / decay_steps)`.

    With `staircase=True` the exponent is floored, so the rate drops every `decay_steps` updates.
    """

    def __init__(self, initial_learning_rate: float, decay_steps: int, decay_rate: float,
                 staircase: bool = False, name: str = "ExponentialDecay"):
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = _positive(decay_steps, "decay_steps", "ExponentialDecay")
        self.decay_rate = decay_rate
        self.staircase = bool(staircase)
        self.name = name

    def __call__(self, step: int) -> np.float32:
        p = _F(step) / _F(self.decay_steps)
        if self.staircase:
            p = np.floor(p)
        return _F(self.initial_learning_rate) * np.power(_F(self.decay_rate), p)

    def get_config(self) -> dict:
        return dict(initial_learning_rate=self.initial_learning_rate, decay_steps=self.decay_steps,
                    decay_rate=self.decay_rate, staircase=self.staircase, name=self.name)


class InverseTimeDecay(LearningRateSchedule):
    """`lr(step) = initial_learning_rate / (1 + decay_rate * step / decay_steps)` (floored with staircase)."""

    def __init__(self, initial_learning_rate: float, decay_steps: int, decay_rate: float,
                 staircase: bool = False, name: str = "InverseTimeDecay"):
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = _positive(decay_steps, "decay_steps", "InverseTimeDecay")
        self.decay_rate = decay_rate
        self.staircase = bool(staircase)
        self.name = name

    def __call__(self, step: int) -> np.float32:
        p = _F(step) / _F(self.decay_steps)
        if self.staircase:
            p = np.floor(p)
        return _F(self.initial_learning_rate) / (_F(1) + _F(self.decay_rate) * p)

    def get_config(self) -> dict:
        return dict(initial_learning_rate=self.initial_learning_rate, decay_steps=self.decay_steps,
                    decay_rate=self.decay_rate, staircase=self.staircase, name=self.name)


class PiecewiseConstantDecay(LearningRateSchedule):
    """`values[0]` while `step <= boundaries[0]`, `values[i]` while `boundaries[i-1] < step <=
    boundaries[i]`, and `values[-1]` after the last boundary.

    Args:
        boundaries: increasing step counts, one fewer than `values`.
        values: the learning rates.
    """

    def __init__(self, boundaries: Sequence[int], values: Sequence[float],
                 name: str = "PiecewiseConstant"):
        if len(values) != len(boundaries) + 1:
            raise ValueError(
                f"PiecewiseConstantDecay: `values` needs one more entry than `boundaries` (one rate "
                f"before each boundary and one after the last), got {len(boundaries)} boundaries "
                f"and {len(values)} values."
            )
        self.boundaries = list(boundaries)
        self.values = list(values)
        self.name = name

    def __call__(self, step: int) -> np.float32:
        for boundary, value in zip(self.boundaries, self.values):
            if step <= boundary:
                return _F(value)
        return _F(self.values[-1])

    def get_config(self) -> dict:
        return dict(boundaries=self.boundaries, values=self.values, name=self.name)


class PolynomialDecay(LearningRateSchedule):
    """`(initial - end) * (1 - step / decay_steps) ** power + end`, held at `end` after
    `decay_steps` (or restarted with longer periods when `cycle=True`)."""

    def __init__(self, initial_learning_rate: float, decay_steps: int,
                 end_learning_rate: float = 0.0001, power: float = 1.0, cycle: bool = False,
                 name: str = "PolynomialDecay"):
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = _positive(decay_steps, "decay_steps", "PolynomialDecay")
        self.end_learning_rate = end_learning_rate
        self.power = power
        self.cycle = bool(cycle)
        self.name = name

    def __call__(self, step: int) -> np.float32:
        step_f = _F(step)
        decay_steps = _F(self.decay_steps)
        if self.cycle:
            multiplier = _F(1) if step == 0 else np.ceil(step_f / decay_steps)
            decay_steps = decay_steps * multiplier
        else:
            step_f = min(step_f, decay_steps)
        p = step_f / decay_steps
        end = _F(self.end_learning_rate)
        return (_F(self.initial_learning_rate) - end) * np.power(_F(1) - p, _F(self.power)) + end

    def get_config(self) -> dict:
        return dict(initial_learning_rate=self.initial_learning_rate, decay_steps=self.decay_steps,
                    end_learning_rate=self.end_learning_rate, power=self.power, cycle=self.cycle,
                    name=self.name)


class CosineDecay(LearningRateSchedule):
    """Cosine decay from `initial_learning_rate` to `alpha * initial_learning_rate` over
    `decay_steps`, optionally after a linear warm-up to `warmup_target` over `warmup_steps`::

        decayed(s) = ((1 - alpha) * 0.5 * (1 + cos(pi * s / decay_steps)) + alpha) * peak
    """

    def __init__(self, initial_learning_rate: float, decay_steps: int, alpha: float = 0.0,
                 name: str = "CosineDecay", warmup_target: float | None = None,
                 warmup_steps: int = 0):
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = _positive(decay_steps, "decay_steps", "CosineDecay")
        self.alpha = alpha
        self.name = name
        self.warmup_target = warmup_target
        self.warmup_steps = warmup_steps

    def _decay(self, step: np.float32, peak: np.float32) -> np.float32:
        fraction = step / _F(self.decay_steps)
        cosine = _F(0.5) * (_F(1) + np.cos(_F(math.pi) * fraction))
        return peak * ((_F(1) - _F(self.alpha)) * cosine + _F(self.alpha))

    def __call__(self, step: int) -> np.float32:
        initial = _F(self.initial_learning_rate)
        decay_steps = _F(self.decay_steps)
        if self.warmup_target is None:
            return self._decay(min(_F(step), decay_steps), initial)
        warmup_steps = _F(self.warmup_steps)
        target = _F(self.warmup_target)
        s = min(_F(step), decay_steps + warmup_steps)
        if s < warmup_steps:
            return (target - initial) * (s / warmup_steps) + initial
        return self._decay(s - warmup_steps, target)

    def get_config(self) -> dict:
        return dict(initial_learning_rate=self.initial_learning_rate, decay_steps=self.decay_steps,
                    alpha=self.alpha, name=self.name, warmup_target=self.warmup_target,
                    warmup_steps=self.warmup_steps)


_ALL = {cls.__name__: cls for cls in (ExponentialDecay, PiecewiseConstantDecay, InverseTimeDecay,
                                      PolynomialDecay, CosineDecay)}


def serialize(schedule: LearningRateSchedule) -> dict:
    return {"class_name": type(schedule).__name__, "config": schedule.get_config()}


def deserialize(config: dict) -> LearningRateSchedule:
    name = config.get("class_name")
    if name not in _ALL:
        raise ValueError(f"Unknown learning-rate schedule {name!r}; known: {sorted(_ALL)}.")
    return _ALL[name].from_config(config["config"])


def get(identifier: Any) -> Any:
    if isinstance(identifier, dict):
        return deserialize(identifier)
    return identifier
