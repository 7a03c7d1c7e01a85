"""Sequential: a plain stack of layers, each feeding the next."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from unrolled import _checks
from unrolled.layers.base import Layer
from unrolled.layers.input_layer import InputLayer
from unrolled.models.model import Model
from unrolled.models.node import Graph, SymbolicTensor

__all__ = ["Sequential"]


class Sequential(Model):
    """Layers applied one after the other; masks pass from each layer to the next.

    Start with `Input(shape)` (or an `InputLayer`) to fix the input shape and build at once;
    without one the model is built on its first call, from that data's shape. `layers` lists the
    added layers, without the InputLayer, as in Keras.

    Args:
        layers: the layers, in order (more can be added with `add`).
        name: the model's name; "sequential", "sequential_1", ... by default.
        trainable: whether its weights are trainable.

    Example:
        >>> import numpy as np
        >>> from unrolled import Input, Sequential, layers
        >>> model = Sequential([Input(shape=(None, 3)),              # (batch, timesteps, 3)
        ...                     layers.SimpleRNN(8, return_sequences=True),
        ...                     layers.SimpleRNN(4)])                 # (batch, 4)
        >>> model.predict(np.ones((2, 5, 3))).shape
        (2, 4)
        >>> [layer.name for layer in model.layers] == [model.layers[0].name, model.layers[1].name]
        True
    """

    def __init__(self, layers: Sequence[Any] | None = None, trainable: bool = True,
                 name: str | None = None, **kwargs: Any):
        super().__init__(name=name, trainable=trainable, **kwargs)
        self._stack: list[Layer] = []
        self.built = False
        if layers is not None:
            if isinstance(layers, Layer) or not isinstance(layers, (list, tuple)):
                raise TypeError(
                    f"Sequential '{self.name}': `layers` must be a list of layers, got "
                    f"{type(layers).__name__}. Write Sequential([layer1, layer2]).")
            for layer in layers:
                self.add(layer, rebuild=False)
            self._maybe_rebuild()

    # ---------------------------------------------------------------- the stack

    @property
    def layers(self) -> list[Layer]:
        stack = self._stack
        if stack and isinstance(stack[0], InputLayer):
            return stack[1:]
        return list(stack)

    def add(self, layer: Any, rebuild: bool = True) -> None:
        """Put `layer` on top of the stack (an `Input(...)` tensor is accepted as the first entry)."""
        if isinstance(layer, SymbolicTensor):
            origin = layer._keras_history.layer
            if not isinstance(origin, InputLayer):
                raise TypeError(
                    f"Sequential '{self.name}': only an Input(...) tensor can be added, not the "
                    f"output of layer '{origin.name}'. Add the layers themselves.")
            layer = origin
        if not isinstance(layer, Layer):
            raise TypeError(
                f"Sequential '{self.name}' can only hold layers, got {type(layer).__name__}: "
                f"{layer!r}.")
        if isinstance(layer, InputLayer) and self._stack:
            where = ("it already starts with InputLayer "
                     f"{_checks.shape_str(self._stack[0].batch_shape)}"
                     if isinstance(self._stack[0], InputLayer) else "layers were added before it")
            raise ValueError(
                f"Sequential '{self.name}': an Input can only be its first entry; {where}.")
        for existing in self._stack:
            if existing.name == layer.name and existing is not layer:
                raise ValueError(
                    f"Sequential '{self.name}' already has a layer named '{layer.name}'. Layer "
                    f"names in a model must be unique; pass a different `name=`.")
        self._stack.append(layer)
        if rebuild:
            self._maybe_rebuild()
        else:
            self._network = None
            self.built = False

    def pop(self, rebuild: bool = True) -> Layer:
        """Remove and return the top layer."""
        if not self.layers:
            raise ValueError(f"Sequential '{self.name}' has no layers to pop.")
        layer = self._stack.pop()
        self._network = None
        self.built = False
        if rebuild:
            self._maybe_rebuild()
        return layer

    def _maybe_rebuild(self) -> None:
        self._network = None
        self.built = False
        if self._stack and isinstance(self._stack[0], InputLayer) and len(self._stack) > 1:
            self.build(self._stack[0].batch_shape)

    def build(self, input_shape: Any = None) -> None:
        """Build every layer for inputs of `input_shape` (with the batch axis, None allowed)."""
        if input_shape is None:
            raise ValueError(f"Sequential '{self.name}'.build needs the input shape, e.g. "
                             f"build((None, timesteps, features)).")
        input_shape = tuple(None if s is None else int(s) for s in input_shape)
        if not self.layers:
            raise ValueError(f"Sequential '{self.name}' has no layers; add some with add(layer).")
        if isinstance(self._stack[0], InputLayer):
            if tuple(self._stack[0].batch_shape) != input_shape:
                raise ValueError(
                    f"Sequential '{self.name}' starts with an Input of shape "
                    f"{_checks.shape_str(self._stack[0].batch_shape)}; it cannot be built for "
                    f"{_checks.shape_str(input_shape)}.")
        else:
            dtype = self._stack[0].dtype
            self._stack.insert(0, InputLayer(batch_shape=input_shape, dtype=dtype))
        x = self._stack[0].output
        for layer in self._stack[1:]:
            x = layer(x)
        self._network = Graph(self._stack[0].output, x, f"Sequential '{self.name}'")
        self.built = True

    def _ensure_built(self, inputs: Any) -> None:
        if self._network is None:
            if isinstance(inputs, (list, tuple)) and len(inputs) == 1 and hasattr(inputs[0], "shape"):
                inputs = inputs[0]
            shape = np.shape(inputs)
            if len(shape) == 0:
                raise ValueError(f"Sequential '{self.name}': the input must have a batch axis, got "
                                 f"a scalar.")
            self.build((None,) + tuple(shape[1:]))

    def call(self, inputs: Any, training: bool | None = None, mask: Any = None) -> Any:
        self._ensure_built(inputs)
        return super().call(inputs, training=training, mask=mask)

    def _standardize_for_predict(self, x: Any) -> list[np.ndarray]:
        self._ensure_built(x)
        return self._standardize(x)

    def compute_output_shape(self, input_shape: Any) -> Any:
        if self._network is None:
            shape = input_shape
            for layer in self.layers:
                shape = layer.compute_output_shape(shape)
            return shape
        return super().compute_output_shape(input_shape)

    # ---------------------------------------------------------------- config

    def get_config(self) -> dict:
        """The Sequential config, in the format of Keras 3's config.json."""
        from unrolled.layers.serialization import serialize

        config = {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": {"module": "keras", "class_name": "DTypePolicy",
                      "config": {"name": self.dtype}, "registered_name": None},
            "layers": [serialize(layer) for layer in self._stack],
        }
        if self._network is not None:
            config["build_input_shape"] = list(self._stack[0].batch_shape)
        return config

    def _serialize(self) -> dict:
        out = {"module": "keras", "class_name": "Sequential", "config": self.get_config(),
               "registered_name": None}
        if self._network is not None:
            out["build_config"] = {"input_shape": list(self._stack[0].batch_shape)}
        return out

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> "Sequential":
        """Rebuild from a Sequential config (Keras 3's format, or Keras 2's)."""
        from unrolled.layers.serialization import deserialize

        if isinstance(config, list):  # Keras 2.0-era: the config is the list of layers
            config = {"layers": config}
        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise ValueError(
                f"A Sequential config needs a 'layers' list (as Sequential.get_config() returns), "
                f"got {str(config)[:120]}.")
        model = cls(name=config.get("name"), trainable=config.get("trainable", True))
        for k, entry in enumerate(config["layers"]):
            inner = entry.get("config") if isinstance(entry, dict) else None
            if (k == 0 and isinstance(inner, dict) and inner.get("batch_input_shape") is not None
                    and entry.get("class_name") != "InputLayer"):
                # Keras 2 put the input shape on the first layer instead of an InputLayer.
                inner = dict(inner)
                batch_shape = inner.pop("batch_input_shape")
                model.add(InputLayer(batch_shape=batch_shape, dtype=inner.get("dtype")),
                          rebuild=False)
                entry = {**entry, "config": inner}
            model.add(deserialize(entry, custom_objects), rebuild=False)
        if model._stack and isinstance(model._stack[0], InputLayer) and len(model._stack) > 1:
            model._maybe_rebuild()
        elif config.get("build_input_shape"):
            model.build(config["build_input_shape"])
        return model
