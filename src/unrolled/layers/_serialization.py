"""Nested layer configs (an RNN's cell, a wrapper's layer) to and from Keras's dict form.

Keras writes a layer held by another as::

    {"module": "keras.layers", "class_name": "SimpleRNN", "config": {...}, "registered_name": None}

Both directions go through `unrolled.layers.serialization`, so a nested cell is looked up in the
same explicit list of supported classes (`SUPPORTED`, plus the caller's `custom_objects`) as a
top-level layer; the `module` field is never imported.
"""

from __future__ import annotations

from typing import Any

__all__ = ["serialize_layer", "deserialize_layer"]


def serialize_layer(layer: Any) -> dict:
    """The nested dict Keras writes for `layer`: module, class_name, config, registered_name,
    and build_config once the layer is built."""
    from unrolled.layers.serialization import serialize

    return serialize(layer)


def deserialize_layer(config: Any, argument: str = "layer") -> Any:
    """A new layer from `serialize_layer`'s dict (or the short {class_name, config} form)."""
    from unrolled.layers.serialization import deserialize

    if not isinstance(config, dict) or "class_name" not in config:
        raise TypeError(
            f"`{argument}` must be a layer config dict with 'class_name' and 'config' (as "
            f"get_config() writes it), got {config!r:.200}."
        )
    if not isinstance(config.get("config"), dict):
        raise TypeError(f"`{argument}`: the 'config' of {config['class_name']} must be a dict, "
                        f"got {config.get('config')!r:.200}.")
    return deserialize(config)
