"""Callbacks for `fit`: History, the progress bar, EarlyStopping, ModelCheckpoint,
LearningRateScheduler and LambdaCallback, with Keras's hooks and log names.

Each hook receives `logs`, a dict of the current values ("loss", "mae", "val_loss", ...).
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from typing import Any, Callable

import numpy as np

__all__ = ["Callback", "History", "ProgbarLogger", "EarlyStopping", "ModelCheckpoint",
           "LearningRateScheduler", "LambdaCallback", "CallbackList"]


class Callback:
    """Base class: override the hooks you need. `self.model` is the model being trained."""

    def __init__(self) -> None:
        self.model: Any = None
        self.params: dict = {}

    def set_model(self, model: Any) -> None:
        self.model = model

    def set_params(self, params: dict) -> None:
        self.params = params

    def on_train_begin(self, logs: dict | None = None) -> None: ...
    def on_train_end(self, logs: dict | None = None) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None: ...
    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None: ...
    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None: ...
    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None: ...
    def on_test_begin(self, logs: dict | None = None) -> None: ...
    def on_test_end(self, logs: dict | None = None) -> None: ...
    def on_test_batch_begin(self, batch: int, logs: dict | None = None) -> None: ...
    def on_test_batch_end(self, batch: int, logs: dict | None = None) -> None: ...


class CallbackList(Callback):
    """Calls each hook on every callback in order."""

    def __init__(self, callbacks: list, model: Any, params: dict):
        super().__init__()
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"fit: every entry of `callbacks` must be a Callback, got "
                                f"{type(cb).__name__}.")
            cb.set_model(model)
            cb.set_params(params)

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("on_"):
            callbacks = object.__getattribute__(self, "callbacks")

            def call_all(*args: Any, **kwargs: Any) -> None:
                for cb in callbacks:
                    getattr(cb, name)(*args, **kwargs)
            return call_all
        return object.__getattribute__(self, name)


class History(Callback):
    """Records every epoch's logs: `history.history["loss"]` is the list of epoch losses.
    `fit` returns it."""

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list] = {}
        self.epoch: list[int] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.epoch = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self) -> str:
        last = {k: f"{v[-1]:.4g}" for k, v in self.history.items() if v}
        return f"History(epochs={len(self.epoch)}, last={last})"


def _format_logs(logs: dict) -> str:
    return " - ".join(f"{k}: {v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{k}: {v:.4e}"
                      for k, v in logs.items())


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython  # type: ignore
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class ProgbarLogger(Callback):
    """Keras-style progress: "Epoch 3/10", then a bar with the running loss and metrics.

    verbose=1 in a terminal or notebook redraws one line with carriage returns; when the output
    is not interactive (a log file, CI) it prints one line per epoch instead. verbose=2 always
    prints one line per epoch.
    """

    def __init__(self, verbose: int = 1, stream: Any = None, width: int = 20):
        super().__init__()
        self.verbose = verbose
        self.stream = stream
        self.width = width

    def _out(self) -> Any:
        return self.stream if self.stream is not None else sys.stdout

    def _interactive(self) -> bool:
        out = self._out()
        return self.verbose == 1 and (
            (hasattr(out, "isatty") and out.isatty()) or _in_notebook()
            or "ipykernel" in sys.modules)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()
        self._epoch = epoch
        self._steps = self.params.get("steps")
        if self.verbose and self._interactive():
            self._out().write(f"Epoch {epoch + 1}/{self.params.get('epochs')}\n")

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if not (self.verbose and self._interactive()):
            return
        steps = self._steps or (batch + 1)
        done = int(self.width * (batch + 1) / steps)
        bar = "━" * done + "─" * (self.width - done)
        elapsed = time.perf_counter() - self._start
        line = f"\r{batch + 1:>{len(str(steps))}}/{steps} {bar} {elapsed:.0f}s"
        if logs:
            line += " - " + _format_logs(logs)
        self._out().write(line)
        self._out().flush()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not self.verbose:
            return
        elapsed = time.perf_counter() - self._start
        steps = self._steps or 1
        per_step = elapsed / steps
        timing = f"{elapsed:.0f}s {per_step * 1000:.0f}ms/step"
        if self._interactive():
            bar = "━" * self.width
            self._out().write(f"\r{steps}/{steps} {bar} {timing} - {_format_logs(logs or {})}\n")
        else:
            self._out().write(f"Epoch {epoch + 1}/{self.params.get('epochs')} - {timing} - "
                              f"{_format_logs(logs or {})}\n")
        self._out().flush()


def _monitor_op(mode: str, monitor: str) -> Callable[[float, float], bool]:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"`mode` must be 'auto', 'min' or 'max', got {mode!r}.")
    if mode == "max" or (mode == "auto" and ("acc" in monitor or monitor.endswith("auc"))):
        return np.greater
    return np.less


class EarlyStopping(Callback):
    """Stop training when `monitor` has stopped improving for `patience` epochs.

    Args:
        monitor: the log to watch; default "val_loss".
        min_delta: the least change that counts as an improvement.
        patience: epochs without improvement before stopping.
        mode: "min", "max" or "auto" (max for accuracies).
        baseline: a value the monitor must beat.
        restore_best_weights: put back the best epoch's weights when stopping.
        start_from_epoch: epochs to wait before watching.
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0, patience: int = 0,
                 verbose: int = 0, mode: str = "auto", baseline: float | None = None,
                 restore_best_weights: bool = False, start_from_epoch: int = 0):
        super().__init__()
        self.monitor = monitor
        self.patience = patience
        self.verbose = verbose
        self.baseline = baseline
        self.min_delta = abs(min_delta)
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = start_from_epoch
        self.monitor_op = _monitor_op(mode, monitor)
        if self.monitor_op == np.less:
            self.min_delta *= -1

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.wait = 0
        self.stopped_epoch = 0
        self.best = math.inf if self.monitor_op == np.less else -math.inf
        self.best_weights = None
        self.best_epoch = 0

    def _improved(self, current: float, reference: float) -> bool:
        return bool(self.monitor_op(current - self.min_delta, reference))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        current = (logs or {}).get(self.monitor)
        if current is None:
            warnings.warn(f"EarlyStopping: the monitored value {self.monitor!r} is not in the logs "
                          f"(available: {sorted(logs or {})}).", stacklevel=2)
            return
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
        self.wait += 1
        if self._improved(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._improved(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.stopped_epoch > 0 and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None and self.stopped_epoch:
            if self.verbose:
                print(f"Restoring model weights from the end of the best epoch: "
                      f"{self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model (or its weights) after each epoch, or only when `monitor` improves.

    `filepath` may contain `{epoch}` and log names, e.g. "ckpt-{epoch:02d}-{val_loss:.2f}.keras".
    Saving uses `model.save` / `model.save_weights` (unrolled.saving); a model without them gets
    its weights written with `np.savez` to the path (".npz"), and a warning says so.
    """

    def __init__(self, filepath: str, monitor: str = "val_loss", verbose: int = 0,
                 save_best_only: bool = False, save_weights_only: bool = False,
                 mode: str = "auto", save_freq: str = "epoch", initial_value_threshold: Any = None):
        super().__init__()
        if save_freq != "epoch":
            raise ValueError("ModelCheckpoint: only save_freq='epoch' is supported.")
        self.filepath = os.fspath(filepath)
        self.monitor = monitor
        self.verbose = verbose
        self.save_best_only = save_best_only
        self.save_weights_only = save_weights_only
        self.monitor_op = _monitor_op(mode, monitor)
        self.best = initial_value_threshold if initial_value_threshold is not None else (
            math.inf if self.monitor_op == np.less else -math.inf)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        if self.save_best_only:
            current = logs.get(self.monitor)
            if current is None:
                warnings.warn(f"ModelCheckpoint: {self.monitor!r} is not in the logs; nothing "
                              f"saved.", stacklevel=2)
                return
            if not self.monitor_op(current, self.best):
                return
            self.best = current
        path = self.filepath.format(epoch=epoch + 1, **logs)
        self._save(path)
        if self.verbose:
            print(f"Epoch {epoch + 1}: saved to {path}")

    def _save(self, path: str) -> None:
        model = self.model
        method = "save_weights" if self.save_weights_only else "save"
        if hasattr(model, method):
            getattr(model, method)(path)
            return
        warnings.warn("ModelCheckpoint: this model has no save/save_weights; writing its weights "
                      "with np.savez instead.", stacklevel=2)
        np.savez(path, *model.get_weights())


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate at the start of each epoch: `lr = schedule(epoch, lr)`
    (or `schedule(epoch)`)."""

    def __init__(self, schedule: Callable, verbose: int = 0):
        super().__init__()
        self.schedule = schedule
        self.verbose = verbose

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        optimizer = self.model.optimizer
        try:
            lr = self.schedule(epoch, float(optimizer.learning_rate))
        except TypeError:
            lr = self.schedule(epoch)
        if not isinstance(lr, (float, int, np.floating)):
            raise ValueError(f"LearningRateScheduler: the schedule must return a number, got "
                             f"{lr!r}.")
        optimizer.learning_rate = float(lr)
        if self.verbose:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr}.")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)


class LambdaCallback(Callback):
    """A callback from functions, e.g.
    `LambdaCallback(on_epoch_begin=lambda epoch, logs: model.reset_states())` to reset a
    stateful model's states every epoch."""

    def __init__(self, on_epoch_begin: Callable | None = None,
                 on_epoch_end: Callable | None = None, on_train_begin: Callable | None = None,
                 on_train_end: Callable | None = None, on_train_batch_begin: Callable | None = None,
                 on_train_batch_end: Callable | None = None):
        super().__init__()
        for name, fn in (("on_epoch_begin", on_epoch_begin), ("on_epoch_end", on_epoch_end),
                         ("on_train_begin", on_train_begin), ("on_train_end", on_train_end),
                         ("on_train_batch_begin", on_train_batch_begin),
                         ("on_train_batch_end", on_train_batch_end)):
            if fn is not None:
                setattr(self, name, fn)
