"""Layers to and from Keras 3 config dicts, through an explicit list of supported classes.

`serialize(layer)` writes the dict Keras 3 writes into a `.keras` file's config.json:
`{"module", "class_name", "config", "registered_name", "build_config"}`. `deserialize(dict)`
turns such a dict back into an unrolled layer or model. The class is looked up by `class_name`
in `SUPPORTED` (or in the caller's `custom_objects`); the `module` a file names is never
imported, and Lambda layers, which carry Python code, are refused.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["serialize", "deserialize", "supported_classes", "SUPPORTED"]

# Keras class name -> (unrolled module, attribute). Only these modules are ever imported.
SUPPORTED: dict[str, tuple[str, str]] = {
    "InputLayer": ("unrolled.layers.input_layer", "InputLayer"),
    "RNN": ("unrolled.layers.rnn", "RNN"),
    "StackedRNNCells": ("unrolled.layers.stacked", "StackedRNNCells"),
    "SimpleRNN": ("unrolled.layers.simple_rnn", "SimpleRNN"),
    "SimpleRNNCell": ("unrolled.layers.simple_rnn", "SimpleRNNCell"),
    "LSTM": ("unrolled.layers.lstm", "LSTM"),
    "LSTMCell": ("unrolled.layers.lstm", "LSTMCell"),
    "GRU": ("unrolled.layers.gru", "GRU"),
    "GRUCell": ("unrolled.layers.gru", "GRUCell"),
    "Dense": ("unrolled.layers.core", "Dense"),
    "Embedding": ("unrolled.layers.core", "Embedding"),
    "Masking": ("unrolled.layers.core", "Masking"),
    "Dropout": ("unrolled.layers.core", "Dropout"),
    "Bidirectional": ("unrolled.layers.wrappers", "Bidirectional"),
    "TimeDistributed": ("unrolled.layers.wrappers", "TimeDistributed"),
    "Sequential": ("unrolled.models.sequential", "Sequential"),
    "Functional": ("unrolled.models.model", "Model"),
    "Model": ("unrolled.models.model", "Model"),
}

_CODE_CLASSES = ("Lambda", "__lambda__", "TFOpLambda", "SlicingOpLambda")


def _lookup(class_name: str) -> type | None:
    entry = SUPPORTED.get(class_name)
    if entry is None:
        return None
    module_name, attr = entry
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    return getattr(module, attr, None)


def supported_classes() -> list[str]:
    """The Keras class names this installation can rebuild."""
    return [name for name in SUPPORTED if _lookup(name) is not None]


def _class_for(config: dict, custom_objects: dict | None) -> type:
    class_name = config.get("class_name")
    inner = config.get("config") if isinstance(config.get("config"), dict) else {}
    name = inner.get("name", config.get("name", "?"))
    if class_name in _CODE_CLASSES:
        raise ValueError(
            f"Cannot rebuild layer '{name}': it is a {class_name} layer, which stores Python code. "
            f"unrolled never runs code from a model file. Replace the Lambda with a built-in "
            f"layer in the original model, or rebuild this part in Python and load only the "
            f"weights.")
    custom_objects = custom_objects or {}
    registered = config.get("registered_name")
    for key in (class_name, registered):
        if key is not None and key in custom_objects:
            return custom_objects[key]
    cls = _lookup(class_name) if isinstance(class_name, str) else None
    if cls is None:
        raise ValueError(
            f"Cannot rebuild layer '{name}' of class '{class_name}': unrolled does not support "
            f"this class. Supported: {', '.join(supported_classes())}. For your own layer class, "
            f"pass custom_objects={{'{class_name}': YourClass}}.")
    return cls


def deserialize(config: Any, custom_objects: dict | None = None) -> Any:
    """A layer (or model) from its Keras config dict.

    Args:
        config: `{"class_name": ..., "config": {...}, "build_config": {...}}` as `serialize`
            and Keras write it (the "module" key, if any, is ignored). A layer passes through.
        custom_objects: optional `{class_name: class}` for your own layer classes.

    Returns:
        The layer, built from `build_config["input_shape"]` when the config has one, so that its
        weights exist and can be loaded.
    """
    from unrolled.layers.base import Layer

    if isinstance(config, Layer):
        return config
    if not isinstance(config, dict) or "class_name" not in config:
        raise TypeError(
            f"deserialize expects a layer config dict with 'class_name' and 'config' (as "
            f"serialize(layer) returns), got {type(config).__name__}: {str(config)[:120]}.")
    cls = _class_for(config, custom_objects)
    inner = dict(config.get("config") or {})
    # Nested layer configs (an RNN's cell, a wrapper's layer) are rebuilt by those classes'
    # from_config, through the same whitelist of unrolled's own classes.
    from unrolled.models.model import Model

    if isinstance(cls, type) and issubclass(cls, Model):
        return cls.from_config(inner, custom_objects=custom_objects)
    layer = cls.from_config(inner) if hasattr(cls, "from_config") else cls(**inner)
    build = config.get("build_config")
    if isinstance(build, dict) and isinstance(layer, Layer) and not layer.built:
        shape = build.get("input_shape")
        if shape is None and isinstance(build.get("shapes_dict"), dict) and build["shapes_dict"]:
            shape = next(iter(build["shapes_dict"].values()))
        if shape is not None:
            layer._maybe_build(_as_shape(shape))
    return layer


def _as_shape(shape: Any) -> Any:
    """JSON lists back to tuples; a list of shapes stays a list of tuples."""
    if isinstance(shape, (list, tuple)) and all(s is None or isinstance(s, int) for s in shape):
        return tuple(shape)
    return [_as_shape(s) for s in shape]


def _plain(value: Any) -> Any:
    """Tuples to lists, as JSON (and Keras's config.json) has them."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def serialize(layer: Any) -> dict:
    """A layer's Keras 3 config dict: module, class_name, config, registered_name, build_config."""
    from unrolled.models.model import Model

    if isinstance(layer, Model):
        return layer._serialize()
    class_name = type(layer).__name__
    builtin = _lookup(class_name) is type(layer)
    out = {
        "module": "keras.layers" if builtin else type(layer).__module__,
        "class_name": class_name,
        "config": layer.get_config(),
        "registered_name": None if builtin else class_name,
    }
    shape = getattr(layer, "_build_shape", None)
    if layer.built and shape is not None and class_name != "InputLayer":
        out["build_config"] = {"input_shape": _plain(shape)}
    return out
