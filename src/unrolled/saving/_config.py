"""Model configs from files: refuse anything that would run code, and bring old configs up to date.

`check_config` walks the whole JSON tree before any object is created. It refuses Lambda layers
and serialized functions (Keras 3 `__lambda__` bytecode, Keras 2 marshal blobs), custom objects
registered under a package name, and any `module` outside Keras itself. The `module` field is only
ever compared as a string: unrolled never imports a module a file names. Classes are then looked
up by `class_name` in unrolled's own registry (`unrolled.layers.deserialize`).

`normalize_legacy` turns a `model_config` written by tf.keras 2.x (or by Keras 3 into a legacy
.h5) into the Keras 3 form that `deserialize` reads; see spec section 6.2.
"""

from __future__ import annotations

import copy
from typing import Any

from unrolled.saving._errors import ModelFileError

# What a Keras-written config may name as `module`. Only compared, never imported.
_KERAS_MODULES = ("keras", "tf_keras", "tensorflow.keras", "tensorflow.python.keras")
_CODE_CLASSES = {"Lambda", "__lambda__", "TFOpLambda", "SlicingOpLambda"}

# Layer kinds whose extra inputs in a Keras 2 functional node are initial states.
_RECURRENT = {"SimpleRNN", "LSTM", "GRU", "RNN", "Bidirectional"}

# Keys dropped from every layer config of a Keras 2 file: Keras 3 has no such arguments.
_KERAS2_DROP = ("time_major", "implementation")

KERAS2_HARD_SIGMOID = "hard_sigmoid_keras2"


def keras_major(version: Any) -> int | None:
    """3 for "3.15.1", 2 for "2.15.0" (or b"2.2.4"); None if absent or unreadable."""
    if isinstance(version, bytes):
        version = version.decode("utf-8", "replace")
    if not isinstance(version, str) or not version[:1].isdigit():
        return None
    return int(version.split(".")[0])


def _allowed_module(module: str) -> bool:
    return module == "builtins" or any(
        module == m or module.startswith(m + ".") for m in _KERAS_MODULES)


def _layer_name(node: dict, fallback: str) -> str:
    inner = node.get("config")
    if isinstance(inner, dict) and isinstance(inner.get("name"), str):
        return inner["name"]
    return node.get("name") if isinstance(node.get("name"), str) else fallback


def check_config(config: Any, where: str, allowed: set | frozenset = frozenset()) -> None:
    """Raise ModelFileError if `config` names code, a custom object, or a foreign module.

    `allowed` holds class names the caller supplies itself (custom_objects): their `module` and
    `registered_name` are not checked, since they are looked up in the caller's mapping.
    """
    if not isinstance(config, dict) or "class_name" not in config:
        raise ModelFileError(
            f"{where}: the model config should be a JSON object with 'class_name' and 'config' "
            f"(as Keras writes it), found {str(config)[:120]!r}."
        )
    _scan(config, where, "the model", 0, allowed)


def _scan(node: Any, where: str, layer: str, depth: int, allowed: set | frozenset) -> None:
    if depth > 200:
        raise ModelFileError(f"{where}: the model config is nested more than 200 levels deep.")
    if isinstance(node, list):
        for item in node:
            _scan(item, where, layer, depth + 1, allowed)
        return
    if not isinstance(node, dict):
        return
    class_name = node.get("class_name")
    if isinstance(class_name, str):
        if "config" in node and isinstance(node.get("config"), dict):
            layer = _layer_name(node, layer)
        if class_name in _CODE_CLASSES:
            raise ModelFileError(
                f"{where}: layer '{layer}' is a {class_name}, which stores Python code (a "
                f"serialized function). unrolled never runs code from a file, so it cannot load "
                f"this model. Replace the Lambda with built-in layers in the original model, or "
                f"rebuild that part in Python and load only the weights."
            )
        custom = class_name in allowed or node.get("registered_name") in allowed
        module = node.get("module")
        if not custom and module is not None and (not isinstance(module, str) or not _allowed_module(module)):
            raise ModelFileError(
                f"{where}: '{layer}' names the class {class_name!r} from the module {module!r}. "
                f"unrolled never imports a module named in a file and loads only built-in Keras "
                f"classes (module 'keras...'). The file is not a plain Keras model; if it is "
                f"yours, rebuild the model in Python and load only its weights."
            )
        registered = node.get("registered_name")
        if not custom and isinstance(registered, str) and ">" in registered:
            raise ModelFileError(
                f"{where}: '{layer}' uses the custom object {registered!r} ({class_name}), "
                f"registered by a package that unrolled does not run. Only built-in Keras classes "
                f"can be loaded."
            )
    for value in node.values():
        _scan(value, where, layer, depth + 1, allowed)


# ---- legacy (.h5 / Keras 2) configs --------------------------------------------------------------


def normalize_legacy(config: dict, keras_version: Any, where: str) -> dict:
    """A copy of `config` in the Keras 3 form: see spec section 6.2.

    For every file: `batch_input_shape` becomes an InputLayer's `batch_shape`, Keras 2 functional
    nodes `[[["name", node, tensor, {kwargs}], ...]]` become Keras 3 `{"args", "kwargs"}` nodes.
    For files written by Keras 2 (by their `keras_version`): `time_major` and `implementation`
    are dropped and `hard_sigmoid` keeps its Keras 2 meaning (0.2 x + 0.5, not x / 6 + 1/2).
    """
    keras2 = (keras_major(keras_version) or 2) < 3
    config = copy.deepcopy(config)
    class_name = config.get("class_name")
    if class_name == "Model":
        config["class_name"] = "Functional"
    inner = config.get("config")
    if isinstance(inner, list):  # Keras <= 2.2 wrote a Sequential as a bare list of layers
        inner = config["config"] = {"name": "sequential", "layers": inner}
    if not isinstance(inner, dict) or not isinstance(inner.get("layers"), list):
        raise ModelFileError(
            f"{where}: the model config of {class_name!r} has no list of layers; unrolled reads "
            f"Sequential and functional models."
        )
    layers = inner["layers"]
    if config.get("class_name") == "Sequential":
        _sequential_input(layers)
    for entry in layers:
        if isinstance(entry, dict):
            _normalize_layer(entry, keras2)
    if config.get("class_name") != "Sequential":
        for entry in layers:
            if isinstance(entry, dict) and isinstance(entry.get("inbound_nodes"), list):
                entry["inbound_nodes"] = [
                    _keras3_node(node, entry.get("class_name"), where)
                    for node in entry["inbound_nodes"]]
    return config


def _normalize_layer(node: dict, keras2: bool) -> None:
    inner = node.get("config")
    if not isinstance(inner, dict):
        return
    if node.get("class_name") == "InputLayer":
        if "batch_input_shape" in inner:
            inner.setdefault("batch_shape", inner.pop("batch_input_shape"))
        if "input_shape" in inner and "batch_shape" not in inner:
            inner["batch_shape"] = [None] + list(inner.pop("input_shape"))
    else:
        inner.pop("batch_input_shape", None)
    if inner.get("input_length", 0) is None:
        inner.pop("input_length")
    build = node.get("build_config")
    if keras2 and node.get("class_name") in _RECURRENT and isinstance(build, dict):
        # Keras 2 built a recurrent layer called with initial states on the list of shapes
        # [x, h, c]; Keras 3 builds it on the sequence's shape alone.
        shape = build.get("input_shape")
        if isinstance(shape, list) and shape and isinstance(shape[0], list):
            build["input_shape"] = shape[0]
    if keras2:
        for key in _KERAS2_DROP:
            inner.pop(key, None)
        for key in ("activation", "recurrent_activation"):
            if inner.get(key) == "hard_sigmoid":
                inner[key] = KERAS2_HARD_SIGMOID
    for key in ("layer", "backward_layer", "forward_layer", "cell"):
        if isinstance(inner.get(key), dict):
            _normalize_layer(inner[key], keras2)
    cell = inner.get("cell")
    cells = cell.get("config", {}).get("cells") if isinstance(cell, dict) else inner.get("cells")
    if isinstance(cell, list):
        cells = cell
    if isinstance(cells, list):
        for item in cells:
            if isinstance(item, dict):
                _normalize_layer(item, keras2)


def _sequential_input(layers: list) -> None:
    """Keras 2 put a Sequential's input shape on its first layer; Keras 3 wants an InputLayer."""
    if not layers or not isinstance(layers[0], dict) or layers[0].get("class_name") == "InputLayer":
        return
    first = layers[0].get("config")
    if not isinstance(first, dict) or first.get("batch_input_shape") is None:
        return
    layers.insert(0, {"class_name": "InputLayer",
                      "config": {"batch_shape": first["batch_input_shape"],
                                 "dtype": first.get("dtype", "float32"),
                                 "name": f"{first.get('name', 'input')}_input"}})


def _tensor(history: list) -> dict:
    return {"class_name": "__keras_tensor__",
            "config": {"shape": None, "dtype": None, "keras_history": list(history)}}


def _keras3_node(node: Any, class_name: Any, where: str) -> Any:
    if isinstance(node, dict):  # already Keras 3's {"args", "kwargs"}
        return node
    if not isinstance(node, list) or not node:
        raise ModelFileError(f"{where}: a functional node of {class_name} is malformed: {node!r}.")
    tensors, kwargs = [], {}
    for k, entry in enumerate(node):
        if not isinstance(entry, list) or len(entry) not in (3, 4) or not isinstance(entry[0], str):
            raise ModelFileError(
                f"{where}: a functional node of {class_name} is malformed: {entry!r}; expected "
                f"[layer_name, node_index, tensor_index, kwargs]."
            )
        tensors.append(_tensor(entry[:3]))
        if k == 0 and len(entry) == 4 and isinstance(entry[3], dict):
            kwargs = dict(entry[3])
    if len(tensors) == 1:
        return {"args": [tensors[0]], "kwargs": kwargs}
    if class_name in _RECURRENT:
        # Keras 2 passed `layer(x, initial_state=[h, c])` as one input list [x, h, c].
        kwargs.setdefault("initial_state", tensors[1:])
        return {"args": [tensors[0]], "kwargs": kwargs}
    return {"args": [tensors], "kwargs": kwargs}
