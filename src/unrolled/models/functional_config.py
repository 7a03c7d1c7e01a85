"""Rebuilding a functional model from its config: Keras 3's config.json format, or Keras 2's.

The layers are created first (each through the explicit class list of
`unrolled.layers.deserialize`), then their recorded calls are replayed on symbolic tensors in an
order where every call's inputs exist, which recreates the graph, shared layers included.
"""

from __future__ import annotations

from typing import Any

from unrolled.models.node import inbound_nodes

__all__ = ["functional_from_config"]


def _is_tensor_ref(value: Any) -> bool:
    return isinstance(value, dict) and value.get("class_name") == "__keras_tensor__"


def _is_endpoint(value: Any) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) in (3, 4) and isinstance(value[0], str)
            and all(isinstance(v, int) for v in value[1:3]))


def _is_operation(entry: dict) -> bool:
    """A Keras op (not a layer) in the graph, like the `not_equal` Keras 3 adds to compute a mask."""
    module = entry.get("module") or ""
    return module.startswith(("keras.src.ops", "keras.ops"))


class _NotReady(Exception):
    """A call's input comes from a call not yet replayed; try again in the next pass."""


def functional_from_config(cls: type, config: dict, custom_objects: dict | None = None) -> Any:
    from unrolled.layers.serialization import deserialize
    from unrolled.models.model import _is_functional

    if not isinstance(config, dict) or not all(k in config for k in
                                               ("layers", "input_layers", "output_layers")):
        keys = sorted(config) if isinstance(config, dict) else type(config).__name__
        raise ValueError(
            f"A functional model config needs 'layers', 'input_layers' and 'output_layers' "
            f"(as Model.get_config() returns); got keys {keys}.")
    model_name = config.get("name")
    created: dict[str, Any] = {}
    operations: dict[str, dict] = {}
    pending: dict[str, list] = {}
    order: list[str] = []
    for entry in config["layers"]:
        name = entry.get("name") or (entry.get("config") or {}).get("name")
        if _is_operation(entry):
            operations[name] = entry
            continue
        created[name] = deserialize(entry, custom_objects)
        pending[name] = list(entry.get("inbound_nodes") or [])
        order.append(name)

    def tensor(name: str, node_index: int, tensor_index: int) -> Any:
        if name in operations:
            raise ValueError(
                f"Model '{model_name}': layer inputs come from the Keras operation '{name}' "
                f"({operations[name].get('class_name')}), which unrolled does not support. Only "
                f"layers (and the masks Keras computes for them) can be rebuilt.")
        if name not in created:
            raise ValueError(f"Model '{model_name}': a call refers to the unknown layer '{name}'.")
        layer = created[name]
        if _is_functional(layer):
            node_index -= 1
        nodes = inbound_nodes(layer)
        if node_index >= len(nodes):
            raise _NotReady
        return nodes[node_index].outputs[tensor_index]

    def refers_to_operation(value: Any) -> bool:
        if _is_tensor_ref(value):
            return value["config"]["keras_history"][0] in operations
        if isinstance(value, (list, tuple)):
            return any(refers_to_operation(v) for v in value)
        return False

    def revive(value: Any) -> Any:
        if _is_tensor_ref(value):
            return tensor(*value["config"]["keras_history"][:3])
        if isinstance(value, list):
            return [revive(v) for v in value]
        if isinstance(value, dict):
            return {k: revive(v) for k, v in value.items()}
        return value

    def call_arguments(layer: Any, node: Any) -> tuple[list, dict]:
        if isinstance(node, list):  # Keras 2: [[name, node_index, tensor_index, kwargs], ...]
            tensors = [tensor(*item[:3]) for item in node]
            kwargs = dict(node[-1][3]) if node and len(node[-1]) > 3 else {}
            kwargs = {k: (tensor(*v[:3]) if _is_endpoint(v) else v) for k, v in kwargs.items()}
            if len(tensors) > 1 and hasattr(layer, "state_size") and "initial_state" not in kwargs:
                return [tensors[0]], {**kwargs, "initial_state": tensors[1:]}
            return [tensors[0] if len(tensors) == 1 else tensors], kwargs
        kwargs = dict(node.get("kwargs") or {})
        if "mask" in kwargs and refers_to_operation(kwargs["mask"]):
            # Keras 3 records the mask it computed with ops; unrolled's layers compute the same
            # mask themselves (compute_mask) and pass it on automatically.
            del kwargs["mask"]
        return revive(list(node.get("args") or [])), revive(kwargs)

    while pending:
        progress = False
        for name in order:
            queue = pending.get(name)
            if queue is None:
                continue
            layer = created[name]
            while queue:
                try:
                    args, kwargs = call_arguments(layer, queue[0])
                except _NotReady:
                    break
                layer(*args, **kwargs)
                queue.pop(0)
                progress = True
            if not queue:
                del pending[name]
        if not progress:
            raise ValueError(
                f"Model '{model_name}': the config's layer calls cannot all be resolved; the graph "
                f"has a loop or refers to calls that do not exist (waiting: {sorted(pending)}).")

    def endpoints(struct: Any) -> Any:
        if _is_endpoint(struct):
            return tensor(*struct[:3])
        if isinstance(struct, dict):
            return {k: endpoints(v) for k, v in struct.items()}
        return [endpoints(v) for v in struct]

    inputs = endpoints(config["input_layers"])
    outputs = endpoints(config["output_layers"])
    return cls(inputs=inputs, outputs=outputs, name=model_name,
               trainable=config.get("trainable", True))
