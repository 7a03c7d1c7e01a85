"""Model: layers wired into a graph (Keras's functional API), and what every model shares.

`Model(inputs, outputs)` takes symbolic tensors: the `Input`s data enters through and the tensors
that layers called on them returned. Calling the model (or `predict`) replays those layer calls on
NumPy arrays, with masks passed along as Keras passes them. `Sequential` is a `Model` too.

Extension point: training lives in a separate mixin class placed before `Layer` in `Model`'s
bases; `__init__` here is cooperative (it calls `super().__init__(name=, dtype=, trainable=)`), and
a model's layers and weights are read through `layers`, `weights`, `trainable_weights`.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from unrolled import _checks
from unrolled.layers.base import Layer, unique_name
from unrolled.layers.input_layer import InputLayer
from unrolled.saving import SavingMixin
from unrolled.training.trainer import Trainer
from unrolled.models.node import (Graph, SymbolicTensor, flatten, inbound_nodes, map_structure,
                                  pack_like)

__all__ = ["Model"]


def _unpack_singleton(value: Any) -> Any:
    if isinstance(value, (list, tuple)) and len(value) == 1:
        return value[0]
    return value


class Model(Trainer, SavingMixin, Layer):
    """A graph of layers from symbolic inputs to outputs: Keras's functional `Model`.

    Args:
        inputs: an `Input(...)` tensor, or a list (or dict) of them.
        outputs: a tensor a layer returned, or a list (or tuple, or dict) of them.
        name: the model's name; "functional", "functional_1", ... by default.
        trainable: whether its weights are trainable.

    Call arguments:
        inputs: an array (one input) or a list of arrays in the order of `inputs` (or a dict by
            input name). Each is `(batch, *shape)` as its `Input` declared.
        training: run dropout as in training. Default False.
        mask: optional masks for the inputs.

    Returns:
        Arrays in the structure of `outputs` (a single output unwrapped from its list).

    Example:
        >>> import numpy as np
        >>> from unrolled import Input, Model, layers
        >>> tokens = Input(shape=(None, 3), name="tokens")      # (batch, timesteps, features)
        >>> seq = layers.SimpleRNN(4, return_sequences=True)(tokens)
        >>> last = layers.SimpleRNN(2)(seq)                      # (batch, 2)
        >>> model = Model(tokens, [seq, last], name="two_heads")
        >>> [y.shape for y in model.predict(np.ones((5, 7, 3)))]
        [(5, 7, 4), (5, 2)]
    """

    def __init__(self, inputs: Any = None, outputs: Any = None, name: str | None = None,
                 trainable: bool = True, **kwargs: Any):
        super().__init__(name=name if name is not None else unique_name(self._default_name()),
                         trainable=trainable, **kwargs)
        self._network: Graph | None = None
        if inputs is None and outputs is None:
            if type(self) is Model:
                raise TypeError(
                    "Model needs `inputs` and `outputs`: Model(inputs=Input(shape=...), "
                    "outputs=layer(...)). For a plain stack of layers use Sequential([...]).")
            return
        if inputs is None or outputs is None:
            raise TypeError(f"Model '{self.name}': give both `inputs` and `outputs`.")
        self._network = Graph(inputs, outputs, f"Model '{self.name}'")
        self.built = True

    @classmethod
    def _default_name(cls) -> str:
        return "functional" if cls is Model else _checks.snake_case(cls.__name__)

    # ---------------------------------------------------------------- structure

    @property
    def layers(self) -> list[Layer]:
        """The model's layers in Keras's order (a functional model's start with its InputLayers)."""
        return list(self._network.layers) if self._network is not None else []

    def _sublayers(self) -> list[Layer]:
        return self.layers

    @property
    def inputs(self) -> list[SymbolicTensor]:
        return list(self._require_network().inputs)

    @property
    def outputs(self) -> list[SymbolicTensor]:
        return list(self._require_network().outputs)

    @property
    def input(self) -> Any:
        return self._require_network().inputs_struct

    @property
    def output(self) -> Any:
        return self._require_network().outputs_struct

    @property
    def input_shape(self) -> Any:
        return _unpack_singleton([t.shape for t in self.inputs])

    @property
    def output_shape(self) -> Any:
        return _unpack_singleton([t.shape for t in self.outputs])

    @property
    def output_names(self) -> list[str]:
        return [t._keras_history.layer.name for t in self.outputs]

    def _require_network(self) -> Graph:
        if self._network is None:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' has no defined inputs yet. Call it on data "
                f"once, call build(input_shape), or start it with an Input layer.")
        return self._network

    def get_layer(self, name: str | None = None, index: int | None = None) -> Layer:
        """A layer by its name or by its position in `layers`."""
        layers = self.layers
        if (name is None) == (index is None):
            raise ValueError(
                f"get_layer needs exactly one of `name` or `index`, got name={name!r}, "
                f"index={index!r}.")
        if index is not None:
            if not isinstance(index, (int, np.integer)) or not -len(layers) <= index < len(layers):
                raise ValueError(
                    f"get_layer: index {index!r} is out of range; {type(self).__name__} "
                    f"'{self.name}' has {len(layers)} layers (indices 0..{len(layers) - 1}).")
            return layers[index]
        for layer in layers:
            if layer.name == name:
                return layer
        names = [layer.name for layer in layers]
        raise ValueError(
            f"No layer named {name!r} in {type(self).__name__} '{self.name}'.{_checks.closest(name, names)} "
            f"Its layers are: {', '.join(names) or '(none)'}.")

    def reset_states(self) -> None:
        """Zero the carried states of every stateful layer (Keras 3 lacks this; Keras 2 had it)."""
        for layer in self.layers:
            if getattr(layer, "stateful", False) and hasattr(layer, "reset_state"):
                layer.reset_state()
            elif isinstance(layer, Model):
                layer.reset_states()

    reset_state = reset_states

    # ---------------------------------------------------------------- running

    def build(self, input_shape: Any = None) -> None:
        self.built = True

    def _standardize(self, inputs: Any) -> list[np.ndarray]:
        """The call's inputs as a flat list of arrays, checked against the declared Inputs."""
        network = self._require_network()
        refs = network.inputs
        owner = f"{type(self).__name__} '{self.name}'"
        names = [t._keras_history.layer.name for t in refs]
        if isinstance(inputs, dict):
            missing = [n for n in names if n not in inputs]
            if missing:
                raise ValueError(f"{owner}: the input dict lacks {missing}; it expects the keys "
                                 f"{names} (the Input names).")
            flat = [inputs[n] for n in names]
        elif len(refs) == 1:
            if (isinstance(inputs, (list, tuple)) and len(inputs) == 1
                    and hasattr(inputs[0], "shape")):
                inputs = inputs[0]
            flat = [inputs]
        else:
            if not isinstance(inputs, (list, tuple)) or len(inputs) != len(refs):
                got = (f"{len(inputs)} arrays" if isinstance(inputs, (list, tuple))
                       else f"one {type(inputs).__name__}")
                expected = ", ".join(f"{n} {_checks.shape_str(t.shape)}" for n, t in zip(names, refs))
                raise ValueError(
                    f"{owner} has {len(refs)} inputs ({expected}); got {got}. Pass a list of "
                    f"{len(refs)} arrays in this order, or a dict keyed by input name.")
            flat = list(inputs)
        arrays = []
        for name, ref, value in zip(names, refs, flat):
            if ref.dtype.startswith("float"):
                array = _checks.as_float_array(value, f"input '{name}'", owner, np.dtype(ref.dtype))
            else:
                array = np.asarray(value)
                if array.dtype.kind not in "biuf":
                    raise TypeError(f"{owner}: input '{name}' must hold numbers, got dtype "
                                    f"{array.dtype}.")
                if array.dtype != np.dtype(ref.dtype):
                    array = array.astype(ref.dtype)
            expected = ref.shape
            if array.ndim == len(expected) + 1 and array.shape[-1] == 1:
                array = array[..., 0]
            elif array.ndim == len(expected) - 1 and expected[-1] == 1:
                array = array[..., None]
            if array.ndim != len(expected) or any(
                    e is not None and e != a for e, a in zip(expected, array.shape)):
                raise ValueError(
                    f"{owner}: input '{name}' expects shape {_checks.shape_str(expected)} (None: any "
                    f"size), got {_checks.shape_str(array.shape)}."
                    + (" The first axis is the batch: for one sample add it with x[None]."
                       if array.ndim == len(expected) - 1 else ""))
            arrays.append(array)
        return arrays

    def _run(self, arrays: list, training: Any = None, masks: Any = None) -> Any:
        network = self._require_network()
        flat_masks = None if masks is None else flatten(masks)
        outputs = network.run(arrays, training=training, masks=flat_masks)
        return _unpack_singleton(pack_like(network.outputs_struct, outputs))

    def call(self, inputs: Any, training: bool | None = None, mask: Any = None) -> Any:
        return self._run(self._standardize(inputs), training=training, masks=mask)

    def __call__(self, inputs: Any, training: bool | None = None, mask: Any = None) -> Any:
        return self.call(inputs, training=training, mask=mask)

    def predict(self, x: Any, batch_size: int | None = 32, verbose: Any = 0, steps: Any = None,
                callbacks: Any = None) -> Any:
        """Outputs for `x`, computed `batch_size` samples at a time and joined along axis 0.

        Args:
            x: an array, or a list (dict) of arrays for a model with several inputs.
            batch_size: samples per step; default 32. None means 32.
            verbose, steps, callbacks: accepted for Keras compatibility; nothing is printed.

        Returns:
            An array, or a list of arrays for several outputs (in the structure of `outputs`).
        """
        arrays = self._standardize_for_predict(x)
        batch_size = 32 if batch_size is None else _checks.positive_int(
            batch_size, "batch_size", f"{type(self).__name__}.predict")
        total = arrays[0].shape[0]
        self._check_samples(arrays, "predict")
        if total == 0:
            raise ValueError(f"{type(self).__name__} '{self.name}'.predict: the input has 0 samples.")
        chunks: list[list] = []
        for start in range(0, total, batch_size):
            out = self._predict_step([a[start:start + batch_size] for a in arrays])
            chunks.append(flatten(out))
            struct = out
        joined = [np.concatenate([chunk[k] for chunk in chunks], axis=0)
                  for k in range(len(chunks[0]))]
        return pack_like(struct, joined)

    def predict_on_batch(self, x: Any) -> Any:
        """Outputs for `x` as one batch (Keras's `predict_on_batch`): `predict` in a single
        step, whatever the number of samples. Returns what `predict` returns."""
        arrays = self._standardize_for_predict(x)
        self._check_samples(arrays, "predict_on_batch")
        out = self._predict_step(arrays)
        return pack_like(out, [np.asarray(a) for a in flatten(out)])

    def _check_samples(self, arrays: list, method: str) -> None:
        if len({a.shape[0] for a in arrays}) > 1:
            raise ValueError(
                f"{type(self).__name__} '{self.name}'.{method}: the inputs have different numbers "
                f"of samples ({[a.shape[0] for a in arrays]}); every input needs one row per sample.")

    def _standardize_for_predict(self, x: Any) -> list[np.ndarray]:
        return self._standardize(x)

    def _predict_step(self, arrays: list) -> Any:
        return self._run(arrays, training=False)

    def compute_output_shape(self, input_shape: Any) -> Any:
        network = self._require_network()
        shapes = [input_shape] if len(network.inputs) == 1 else list(input_shape)
        out = network.output_shapes([tuple(s) for s in shapes])
        return _unpack_singleton(pack_like(network.outputs_struct, out))

    # ---------------------------------------------------------------- summary

    def summary(self, line_length: int | None = None, positions: Any = None,
                print_fn: Callable[..., Any] | None = None, expand_nested: bool = False,
                show_trainable: bool = False, layer_range: Any = None) -> None:
        """Print a table of the layers: name (type), output shape, parameter count (and, for a
        graph that is not a plain chain, which tensors feed each layer), then the totals."""
        from unrolled.models.summary import print_summary

        print_summary(self, line_length=line_length, positions=positions, print_fn=print_fn)

    # ---------------------------------------------------------------- config

    def get_config(self) -> dict:
        """The functional config, in the format of Keras 3's config.json."""
        from unrolled.layers.serialization import serialize

        network = self._require_network()
        own = network.nodes
        config: dict[str, Any] = {"name": self.name, "trainable": self.trainable}
        reindex: dict[tuple[int, int], int] = {}
        for layer in network.layers:
            kept = 1 if _is_functional(layer) else 0
            for k, node in enumerate(inbound_nodes(layer)):
                if id(node) in own:
                    reindex[(id(layer), k)] = kept
                    kept += 1

        def tensor_config(tensor: SymbolicTensor) -> dict:
            layer, node_index, tensor_index = tensor._keras_history
            skipped = sum(1 for k, node in enumerate(inbound_nodes(layer)[:node_index])
                          if id(node) not in own)
            if _is_functional(layer):  # Keras counts a nested functional model's own first node
                skipped -= 1
            return {"class_name": "__keras_tensor__",
                    "config": {"shape": list(tensor.shape), "dtype": tensor.dtype,
                               "keras_history": [layer.name, node_index - skipped, tensor_index]}}

        def value_config(value: Any) -> Any:
            if isinstance(value, SymbolicTensor):
                return tensor_config(value)
            if isinstance(value, (list, tuple)):
                return [value_config(v) for v in value]
            if isinstance(value, dict):
                return {k: value_config(v) for k, v in value.items()}
            if isinstance(value, np.ndarray):
                raise ValueError(
                    f"Model '{self.name}': a layer was called with a constant array argument; "
                    f"such a model cannot be saved as a config. Pass it through an Input instead.")
            if isinstance(value, np.generic):
                return value.item()
            return value

        layer_configs = []
        for layer in network.layers:
            nodes = []
            for node in inbound_nodes(layer):
                if id(node) in own and not node.is_input:
                    nodes.append({"args": value_config(list(node.args)),
                                  "kwargs": value_config(node.kwargs)})
            entry = serialize(layer)
            entry["name"] = layer.name
            entry["inbound_nodes"] = nodes
            layer_configs.append(entry)
        config["layers"] = layer_configs

        def endpoint(tensor: SymbolicTensor) -> list:
            layer, node_index, tensor_index = tensor._keras_history
            return [layer.name, reindex[(id(layer), node_index)], tensor_index]

        def endpoints(struct: Any) -> Any:
            if isinstance(struct, SymbolicTensor):
                return endpoint(struct)
            if isinstance(struct, dict):
                return {k: endpoints(v) for k, v in struct.items()}
            return [endpoints(v) for v in struct]

        config["input_layers"] = endpoints(network.inputs_struct)
        config["output_layers"] = endpoints(network.outputs_struct)
        return config

    def _serialize(self) -> dict:
        return {"module": "keras.src.models.functional", "class_name": "Functional",
                "config": self.get_config(), "registered_name": "Functional",
                "build_config": {"input_shape": None}}

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> "Model":
        """Rebuild a functional model from its config (Keras 3's format, or Keras 2's)."""
        from unrolled.models.functional_config import functional_from_config

        return functional_from_config(cls, config, custom_objects)

    def __repr__(self) -> str:
        try:
            shapes = (f"inputs={_checks.shape_str(self.input_shape)}"
                      if not isinstance(self.input_shape, list)
                      else f"inputs={[_checks.shape_str(s) for s in self.input_shape]}")
        except ValueError:
            shapes = "not built"
        return (f"{type(self).__name__}(name={self.name!r}, {len(self.layers)} layers, {shapes}, "
                f"params={self.count_params():,})")


def _is_functional(layer: Any) -> bool:
    return isinstance(layer, Model) and type(layer).__name__ != "Sequential"
