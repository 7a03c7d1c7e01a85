"""Layers to and from Keras's nested config dicts, without importing anything named in a config.

Keras writes a layer held by another (a wrapper's `layer`, an RNN's `cell`) as::

    {"module": "keras.layers", "class_name": "SimpleRNN", "config": {...}, "registered_name": None}

`deserialize_layer` maps `class_name` onto the classes exported by `unrolled.layers` (an explicit
whitelist); the `module` field is never imported.
"""

from __future__ import annotations

from typing import Any

from unrolled._checks import closest

__all__ = ["serialize_layer", "deserialize_layer", "layer_classes"]


def layer_classes() -> dict[str, type]:
    """Class name -> class, for every layer and cell `unrolled.layers` exports."""
    from unrolled import layers
    from unrolled.layers.base import Layer

    found = {}
    for name in layers.__all__:
        obj = getattr(layers, name)
        if isinstance(obj, type) and issubclass(obj, Layer):
            found[name] = obj
    return found


def serialize_layer(layer: Any) -> dict:
    """The nested dict Keras writes for `layer`: module, class_name, config, registered_name."""
    cls = type(layer)
    builtin = layer_classes().get(cls.__name__) is cls
    return {
        "module": "keras.layers" if builtin else cls.__module__,
        "class_name": cls.__name__,
        "config": layer.get_config(),
        "registered_name": None if builtin else cls.__name__,
    }


def deserialize_layer(config: Any, argument: str = "layer") -> Any:
    """A new layer from `serialize_layer`'s dict (or the short {class_name, config} form)."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise TypeError(
            f"`{argument}` must be a layer config dict with 'class_name' and 'config' (as "
            f"get_config() writes it), got {config!r:.200}."
        )
    classes = layer_classes()
    name = config["class_name"]
    cls = classes.get(name)
    if cls is None:
        raise ValueError(
            f"`{argument}` names the layer class {name!r}, which unrolled does not implement."
            f"{closest(str(name), classes)} Known classes: {', '.join(sorted(classes))}."
        )
    inner = config.get("config")
    if not isinstance(inner, dict):
        raise TypeError(f"`{argument}`: the 'config' of {name} must be a dict, got {inner!r:.200}.")
    return cls.from_config(dict(inner))
