"""`Trainer`: compile / fit / evaluate / train_on_batch for models, as Keras 3 does them.

One training step (`train_on_batch`, and each batch of `fit`)::

    y_pred, cache = model.forward_train(x)              # training=True: dropout on
    loss = loss_fn(y, y_pred, sample_weight) + sum of weight penalties (regularizers)
    grads = model.backward(cache, dloss/dy_pred)         # backpropagation through time
    optimizer.apply(grads, model.trainable_weights)
    metrics.update_state(y, y_pred)                      # on the pre-update predictions

The loss shown per epoch is the mean of the batch losses weighted by batch size, as Keras's.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from unrolled.training.backprop import Grads

__all__ = ["Trainer"]


class _Lazy:
    """A module imported on first attribute access (training code stays out of `import unrolled`)."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        import importlib

        return getattr(importlib.import_module(self._name), attr)


callbacks_module = _Lazy("unrolled.callbacks")
losses_module = _Lazy("unrolled.losses")
metrics_module = _Lazy("unrolled.metrics")
optimizers_module = _Lazy("unrolled.optimizers")
regularizers_module = _Lazy("unrolled.regularizers")

_REGULARIZED = {"kernel": "kernel_regularizer", "recurrent_kernel": "recurrent_regularizer",
                "bias": "bias_regularizer", "embeddings": "embeddings_regularizer"}


def _all_layers(layer: Any) -> list:
    found = [layer]
    for sub in layer._sublayers():
        found.extend(_all_layers(sub))
    return found


def _slice(data: Any, index: np.ndarray) -> Any:
    if data is None:
        return None
    if isinstance(data, (list, tuple)):
        return [_slice(d, index) for d in data]
    if isinstance(data, dict):
        return {k: _slice(v, index) for k, v in data.items()}
    return np.asarray(data)[index]


def _num_samples(data: Any) -> int:
    if isinstance(data, (list, tuple)):
        return _num_samples(data[0])
    if isinstance(data, dict):
        return _num_samples(next(iter(data.values())))
    return int(np.shape(data)[0])


class Trainer:
    """Mixin giving a model `compile`, `fit`, `evaluate`, `train_on_batch`, `test_on_batch`,
    plus `forward_train` / `backward` (which `unrolled.gradients` also uses)."""

    optimizer: Any = None
    stop_training: bool = False

    # ---------------------------------------------------------------- setup

    def compile(self, optimizer: Any = "rmsprop", loss: Any = None, metrics: Any = None,
                loss_weights: Any = None, weighted_metrics: Any = None, **ignored: Any) -> None:
        """Choose the optimizer, loss and metrics, by name ("adam", "mse", "accuracy") or object.

        `metrics` are computed without sample weights and `weighted_metrics` with them, as in
        Keras. For several outputs give `loss` as a list (one per output) or one loss for all;
        `loss_weights` scales each.
        """
        if loss is None:
            raise ValueError(f"{type(self).__name__}.compile: give a `loss`, e.g. loss='mse'.")
        self.optimizer = optimizers_module.get(optimizer)
        self._loss_spec = loss
        self._loss_weights = loss_weights
        self._metric_specs = list(metrics) if isinstance(metrics, (list, tuple)) else (
            [] if metrics is None else [metrics])
        self._weighted_specs = list(weighted_metrics) if isinstance(
            weighted_metrics, (list, tuple)) else ([] if weighted_metrics is None else
                                                   [weighted_metrics])
        self._losses_list = None
        self._metrics_objs = None
        self.compiled = True
        self.stop_training = False

    def _require_compiled(self, what: str) -> None:
        if not getattr(self, "compiled", False):
            raise RuntimeError(f"{type(self).__name__}.{what}: call compile(optimizer, loss) "
                               f"first, e.g. model.compile('adam', 'mse').")

    def _resolve(self, y: list, y_pred: list) -> None:
        """Losses and metrics, chosen once the first batch shows the shapes (as Keras does)."""
        if self._losses_list is not None:
            return
        spec = self._loss_spec
        specs = list(spec) if isinstance(spec, (list, tuple)) else [spec] * len(y_pred)
        if len(specs) != len(y_pred):
            raise ValueError(f"compile: {len(specs)} losses for {len(y_pred)} outputs; give one "
                             f"per output.")
        self._losses_list = [self._pick_loss(s, t, p) for s, t, p in zip(specs, y, y_pred)]
        weights = self._loss_weights
        self._loss_weight_values = list(weights) if weights is not None else [1.0] * len(y_pred)
        # metrics follow the first output (multi-output metrics are not supported yet)
        self._metrics_objs = ([metrics_module.for_compile(m, y[0], y_pred[0])
                               for m in self._metric_specs],
                              [metrics_module.for_compile(m, y[0], y_pred[0])
                               for m in self._weighted_specs])

    @staticmethod
    def _pick_loss(spec: Any, y_true: Any, y_pred: Any) -> Any:
        if isinstance(spec, str) and spec.lower() in ("crossentropy", "ce"):
            y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
            if y_pred.shape[-1] == 1:
                return losses_module.BinaryCrossentropy()
            if y_true.ndim < y_pred.ndim or (y_true.shape[-1] == 1 and y_pred.shape[-1] > 1):
                return losses_module.SparseCategoricalCrossentropy()
            return losses_module.CategoricalCrossentropy()
        return losses_module.get(spec)

    # ---------------------------------------------------------------- forward and backward

    def forward_train(self, x: Any, training: bool = True, mask: Any = None) -> tuple[Any, dict]:
        """The model's output for `x`, plus the cache `backward` needs."""
        from unrolled.training.graph import graph_forward

        if hasattr(self, "_ensure_built"):
            self._ensure_built(x)
        arrays = self._standardize(x)
        network = self._require_network()
        flat_masks = None if mask is None else (mask if isinstance(mask, list) else [mask])
        outputs, tape, out_masks = graph_forward(network, arrays, training=training,
                                                 masks=flat_masks)
        result = outputs[0] if len(outputs) == 1 else list(outputs)
        return result, {"tape": tape, "n_outputs": len(outputs), "network": network,
                        "output_masks": out_masks,
                        "layers": [(node.layer, cache) for node, cache, _ in tape]}

    def backward(self, cache: dict, d_outputs: Any, grads: Grads,
                 input_grads: bool = True) -> Any:
        """Gradients for the model's inputs (None each with `input_grads=False`, which may
        skip them); weight gradients are added to `grads`."""
        from unrolled.training.graph import graph_backward

        flat = [d_outputs] if cache["n_outputs"] == 1 else list(d_outputs)
        d_inputs = graph_backward(cache["network"], cache["tape"], flat, grads, input_grads)
        if not input_grads:
            return [None] * len(d_inputs) if len(d_inputs) > 1 else None
        return d_inputs[0] if len(d_inputs) == 1 else d_inputs

    def _regularization(self, grads: Grads | None) -> float:
        """Sum of every weight penalty; adds the penalties' gradients to `grads`."""
        total = 0.0
        for layer in _all_layers(self):
            for weight in layer._weights:
                attr = _REGULARIZED.get(weight.name)
                spec = getattr(layer, attr, None) if attr else None
                if spec is None:
                    continue
                reg = regularizers_module.get(spec, attr)
                total = total + reg(weight.value)
                if grads is not None and weight.trainable and layer.trainable:
                    grads[weight] = grads.get(weight, 0) + reg.gradient(weight.value)
        return total

    def _loss(self, y: list, y_pred: list, sample_weight: Any, masks: list) -> tuple[Any, list]:
        """The weighted sum of the output losses and each one's gradient. A masked output (a
        sequence after Embedding(mask_zero=True) or Masking) leaves its padded steps out of
        the loss, as Keras does."""
        total, d_preds = 0.0, []
        for loss, w, t, p, m in zip(self._losses_list, self._loss_weight_values, y, y_pred, masks):
            value, d = loss.value_and_grad(t, p, sample_weight, mask=_loss_mask(m, p))
            total = total + np.float32(w) * value if w != 1.0 else total + value
            d_preds.append(d * np.asarray(w, dtype=d.dtype) if w != 1.0 else d)
        return total, d_preds

    @staticmethod
    def _as_list(value: Any, n: int) -> list:
        if n == 1:
            return [value]
        return list(value)

    # ---------------------------------------------------------------- one batch

    def train_on_batch(self, x: Any, y: Any = None, sample_weight: Any = None,
                       return_dict: bool = False) -> Any:
        """One update on one batch; returns the loss (and metrics), as Keras's train_on_batch."""
        self._require_compiled("train_on_batch")
        logs = self._train_step(x, y, sample_weight)
        return self._format_result(logs, return_dict)

    def _train_step(self, x: Any, y: Any, sample_weight: Any) -> dict:
        y_pred, cache = self.forward_train(x, training=True)
        n = cache["n_outputs"]
        ys, preds = self._as_list(y, n), self._as_list(y_pred, n)
        self._resolve(ys, preds)
        masks = cache["output_masks"]
        loss, d_preds = self._loss(ys, preds, sample_weight, masks)
        grads = Grads()
        self.backward(cache, d_preds[0] if n == 1 else d_preds, grads, input_grads=False)
        loss = loss + self._regularization(grads)
        weights = self.trainable_weights
        self.optimizer.apply(grads.for_weights(weights), weights)
        self._update_metrics(ys, preds, sample_weight, masks)
        batch = _num_samples(x)
        self._loss_tracker.update_state(np.float32(loss), sample_weight=np.float32(batch))
        return self._logs()

    def test_on_batch(self, x: Any, y: Any = None, sample_weight: Any = None,
                      return_dict: bool = False) -> Any:
        self._require_compiled("test_on_batch")
        self._reset_metrics()
        logs = self._test_step(x, y, sample_weight)
        return self._format_result(logs, return_dict)

    def _test_step(self, x: Any, y: Any, sample_weight: Any) -> dict:
        from unrolled.training.graph import graph_forward

        if hasattr(self, "_ensure_built"):
            self._ensure_built(x)
        network = self._require_network()
        outputs, _, masks = graph_forward(network, self._standardize(x), training=False)
        n = len(outputs)
        ys, preds = self._as_list(y, n), list(outputs)
        self._resolve(ys, preds)
        loss = sum(np.float32(w) * l(t, p, sample_weight, mask=_loss_mask(m, p))
                   for l, w, t, p, m in zip(self._losses_list, self._loss_weight_values, ys,
                                            preds, masks)) + self._regularization(None)
        self._update_metrics(ys, preds, sample_weight, masks, use_mask=True)
        self._loss_tracker.update_state(np.float32(loss), sample_weight=np.float32(_num_samples(x)))
        return self._logs()

    def _update_metrics(self, ys: list, preds: list, sample_weight: Any, masks: list,
                        use_mask: bool = False) -> None:
        # Measured on Keras 3 (JAX): an output mask reaches the loss always, but the compiled
        # metrics only in evaluate/test steps, not in training steps; both are mirrored here.
        plain, weighted = self._metrics_objs
        mask = _loss_mask(masks[0], preds[0]) if use_mask else None
        mask_weight = None if mask is None else mask.astype("float32")
        for m in plain:
            m.update_state(ys[0], preds[0], sample_weight=mask_weight)
        for m in weighted:
            sw = sample_weight
            if mask_weight is not None:
                sw = mask_weight if sw is None else mask_weight * np.asarray(
                    sw, dtype="float32").reshape(np.shape(sw) + (1,) * (
                        mask_weight.ndim - np.ndim(sw)))
            m.update_state(ys[0], preds[0], sample_weight=sw)

    @property
    def _loss_tracker(self) -> Any:
        tracker = self.__dict__.get("_loss_tracker_obj")
        if tracker is None:
            tracker = metrics_module.Mean(name="loss")
            self.__dict__["_loss_tracker_obj"] = tracker
        return tracker

    def _reset_metrics(self) -> None:
        self._loss_tracker.reset_state()
        if self._metrics_objs is not None:
            for group in self._metrics_objs:
                for m in group:
                    m.reset_state()

    def _logs(self) -> dict:
        logs = {"loss": float(self._loss_tracker.result())}
        if self._metrics_objs is not None:
            for group in self._metrics_objs:
                for m in group:
                    logs[m.name] = float(m.result())
        return logs

    @staticmethod
    def _format_result(logs: dict, return_dict: bool) -> Any:
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    # ---------------------------------------------------------------- loops

    def fit(self, x: Any = None, y: Any = None, batch_size: int | None = None, epochs: int = 1,
            verbose: Any = "auto", callbacks: list | None = None, validation_split: float = 0.0,
            validation_data: Any = None, shuffle: bool = True, sample_weight: Any = None,
            initial_epoch: int = 0, steps_per_epoch: Any = None, **ignored: Any
            ) -> Any:
        """Train for `epochs` passes over `(x, y)` in batches of `batch_size` (default 32).

        Args:
            validation_split: the fraction of the samples, taken from the end before any
                shuffling (as Keras does), held out and evaluated after every epoch.
            validation_data: `(x_val, y_val)` or `(x_val, y_val, sample_weight_val)`.
            shuffle: reshuffle the training samples every epoch.
            verbose: "auto" or 1 (progress bar), 2 (one line per epoch), 0 (silent).
            callbacks: `unrolled.callbacks` objects (EarlyStopping, ModelCheckpoint, ...).

        Returns:
            A `History`, whose `history` dict lists each epoch's loss, metrics and val_ values.
        """
        self._require_compiled("fit")
        if y is None:
            raise ValueError("fit: give the targets `y` along with `x`.")
        batch_size = 32 if batch_size is None else int(batch_size)
        n = _num_samples(x)
        if _num_samples(y) != n:
            raise ValueError(f"fit: x has {n} samples but y has {_num_samples(y)}; they must "
                             f"match.")
        if validation_split and validation_data is None:
            if not 0 < validation_split < 1:
                raise ValueError(f"fit: `validation_split` must be between 0 and 1, got "
                                 f"{validation_split}.")
            split = int(math.floor(n * (1.0 - validation_split)))
            train_idx, val_idx = np.arange(split), np.arange(split, n)
            validation_data = (_slice(x, val_idx), _slice(y, val_idx),
                               _slice(sample_weight, val_idx))
            x, y, sample_weight = (_slice(x, train_idx), _slice(y, train_idx),
                                   _slice(sample_weight, train_idx))
            n = split
        steps = max(1, math.ceil(n / batch_size))
        verbose = 1 if verbose == "auto" else int(verbose)
        history = callbacks_module.History()
        cbs = list(callbacks or [])
        if verbose:
            cbs.append(callbacks_module.ProgbarLogger(verbose))
        cbs.append(history)
        params = {"epochs": epochs, "steps": steps, "verbose": verbose}
        cb = callbacks_module.CallbackList(cbs, self, params)
        history.params = params
        self.stop_training = False
        cb.on_train_begin({})
        logs: dict = {}
        for epoch in range(initial_epoch, epochs):
            self._reset_metrics()
            cb.on_epoch_begin(epoch, {})
            order = np.random.permutation(n) if shuffle else np.arange(n)
            for step in range(steps):
                index = order[step * batch_size:(step + 1) * batch_size]
                cb.on_train_batch_begin(step, {})
                logs = self._train_step(_slice(x, index), _slice(y, index),
                                        _slice(sample_weight, index))
                cb.on_train_batch_end(step, logs)
            logs = dict(logs)
            if validation_data is not None:
                vx, vy, vsw = _unpack_validation(validation_data)
                val = self.evaluate(vx, vy, batch_size=batch_size, verbose=0, sample_weight=vsw,
                                    return_dict=True)
                logs.update({f"val_{k}": v for k, v in val.items()})
            cb.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        cb.on_train_end(logs)
        return history

    def evaluate(self, x: Any = None, y: Any = None, batch_size: int | None = None,
                 verbose: Any = "auto", sample_weight: Any = None, return_dict: bool = False,
                 **ignored: Any) -> Any:
        """The loss (and metrics) on `(x, y)`, averaged over batches weighted by their size."""
        self._require_compiled("evaluate")
        batch_size = 32 if batch_size is None else int(batch_size)
        n = _num_samples(x)
        self._reset_metrics()
        logs: dict = {}
        for start in range(0, n, batch_size):
            index = np.arange(start, min(n, start + batch_size))
            logs = self._test_step(_slice(x, index), _slice(y, index),
                                   _slice(sample_weight, index))
        if verbose not in (0, "0") and verbose != "auto":
            print(" - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
        return self._format_result(logs, return_dict)


def _loss_mask(mask: Any, y_pred: np.ndarray) -> np.ndarray | None:
    """The output's mask as the loss sees it: one flag per loss value (y_pred minus its last
    axis), or None."""
    if mask is None:
        return None
    mask = np.asarray(mask, dtype=bool)
    return mask if mask.shape == np.shape(y_pred)[:-1] else None


def _unpack_validation(data: Any) -> tuple:
    if not isinstance(data, (list, tuple)) or len(data) not in (2, 3):
        raise ValueError("fit: `validation_data` must be (x_val, y_val) or "
                         "(x_val, y_val, sample_weight_val).")
    x, y = data[0], data[1]
    sw = data[2] if len(data) == 3 else None
    return x, y, sw
