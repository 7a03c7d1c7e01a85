"""Where each weight lives in a Keras file, and moving arrays between files and layers.

Keras 3 (`.keras` archives and `.weights.h5`) stores weights by *structure*, not by layer name::

    layers/<snake_case(class)>[_k]/<sub-path>/vars/<i>

The group names are the snake-cased class names, numbered per container in order (`dense`,
`dense_1`, ...); the layer's own name is only an attribute. Sub-paths follow the attributes Keras
walks: `cell` (RNN), `cells/<snake_case(cell class)>[_k]` (StackedRNNCells), `forward_layer` and
`backward_layer` (Bidirectional), `layer` (TimeDistributed). `vars/<i>` are the layer's own
variables numbered in creation order (sorted numerically when read: "10" comes after "9").

Legacy HDF5 (`.h5`) stores one group per layer *name*, listed in the attribute `layer_names`, each
with `weight_names` giving the order of its arrays. Names differ between writers (tf.keras 2.x
`lstm/lstm_cell/kernel:0`, Keras 3 `sequential/lstm/lstm_cell/kernel`), so arrays are matched by
order and shape, as Keras does.

Loading always reads and checks every array first and assigns only when all of them fit, so a
failed load leaves the model as it was.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from unrolled import _checks
from unrolled.saving import _h5
from unrolled.saving._errors import ModelFileError

# Sub-layer attributes Keras's saver walks, in the (sorted) order it visits them.
_SUB_ATTRS = ("backward_layer", "cell", "cells", "forward_layer", "layer")


def _class_name(obj: Any) -> str:
    return type(obj).__name__


def _is_input_layer(layer: Any) -> bool:
    return _class_name(layer) == "InputLayer"


def own_weights(layer: Any) -> list:
    """A layer's own variables (not its sub-layers'), trainable first, as Keras saves them."""
    weights = list(getattr(layer, "_weights", []))
    return [w for w in weights if w.trainable] + [w for w in weights if not w.trainable]


def _unique(name: str, used: dict[str, int]) -> str:
    if name in used:
        used[name] += 1
        return f"{name}_{used[name]}"
    used[name] = 0
    return name


def _children(layer: Any) -> Iterator[tuple[str, Any]]:
    for attr in _SUB_ATTRS:
        value = layer.__dict__.get(attr) if hasattr(layer, "__dict__") else None
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            yield attr, list(value)
        elif hasattr(value, "weights") and hasattr(value, "_weights"):
            yield attr, value


def is_model(obj: Any) -> bool:
    """A Sequential or functional model: something with a `layers` list."""
    return isinstance(getattr(obj, "layers", None), (list, tuple))


def model_layers(model: Any) -> list:
    """The layers Keras lists under `layers/` for this model (a Sequential omits its input)."""
    layers = list(getattr(model, "layers", None) or [])
    if _class_name(model) == "Sequential":
        layers = [layer for layer in layers if not _is_input_layer(layer)]
    return layers


def keras_tree(model: Any) -> list[tuple[str, Any]]:
    """Every (path, layer) whose `vars` Keras writes for `model`, root first ("" is the model).

    A bare layer (not a model) is its own root, as Keras saves it.
    """
    found: list[tuple[str, Any]] = [("", model)]
    seen = {id(model)}

    def visit(path: str, layer: Any) -> None:
        if id(layer) in seen:
            return
        seen.add(id(layer))
        found.append((path, layer))
        walk(path, layer)

    def walk(path: str, layer: Any) -> None:
        for attr, value in _children(layer):
            base = f"{path}/{attr}" if path else attr
            if isinstance(value, list):
                used: dict[str, int] = {}
                for item in value:
                    visit(f"{base}/{_unique(_checks.snake_case(_class_name(item)), used)}", item)
            else:
                visit(base, value)

    if is_model(model):
        used: dict[str, int] = {}
        for layer in model_layers(model):
            visit(f"layers/{_unique(_checks.snake_case(_class_name(layer)), used)}", layer)
    else:
        walk("", model)
    return found


# ---- Keras 3 layout ------------------------------------------------------------------------------


def _layer_label(layer: Any, path: str) -> str:
    return f"layer '{getattr(layer, 'name', '?')}' ({_class_name(layer)}, file path '{path or '/'}')"


def plan_keras3(model: Any, h5file: Any, where: str) -> list[tuple[Any, np.ndarray]]:
    """Read every weight of `model` from a Keras 3 weights tree; (Weight, array) pairs."""
    plan: list[tuple[Any, np.ndarray]] = []
    for path, layer in keras_tree(model):
        weights = own_weights(layer)
        if not weights:
            continue
        vars_path = f"{path}/vars" if path else "vars"
        group = _h5.get_path(h5file, vars_path, where)
        if group is None and path.startswith("layers/"):
            group = _h5.get_path(
                h5file, "_layer_checkpoint_dependencies/" + vars_path[len("layers/"):], where)
        if group is None:
            present = sorted(h5file["layers"].keys()) if "layers" in h5file else []
            raise ModelFileError(
                f"{where}: no weights for {_layer_label(layer, path)}: the file has no group "
                f"'{vars_path}'. Its top-level layer groups are {present}. The file was saved "
                f"from a different model; build the model that matches it, or use load_model."
            )
        if not isinstance(group, _h5.h5py_module().Group):
            raise ModelFileError(f"{where}: '{vars_path}' should be a group of arrays.")
        keys = _h5.numbered_keys(group, where)
        if len(keys) != len(weights):
            raise ModelFileError(
                f"{where}: {_layer_label(layer, path)} has {len(weights)} weights "
                f"({', '.join(w.name for w in weights)}), but the file holds {len(keys)} arrays "
                f"at '{vars_path}'. The file was saved from a different model."
            )
        for key, weight in zip(keys, weights):
            dataset = _h5.child(group, key, where)
            what = f"weight '{weight.path}' of {_layer_label(layer, path)}"
            plan.append((weight, _h5.read_dataset(dataset, weight.shape, what, where)))
    return plan


def write_keras3(model: Any, h5file: Any) -> None:
    """Write `model`'s weights into an open, empty h5py.File in Keras 3's layout."""
    for path, layer in keras_tree(model):
        group = h5file.require_group(f"{path}/vars" if path else "vars")
        group.attrs["name"] = getattr(layer, "name", "")
        for i, weight in enumerate(own_weights(layer)):
            group.create_dataset(str(i), data=np.asarray(weight.value))


# ---- legacy layout -------------------------------------------------------------------------------


def plan_legacy(model: Any, group: Any, where: str) -> list[tuple[Any, np.ndarray]]:
    """Read `model`'s weights from a legacy `model_weights` group (or a weights-only file root)."""
    names = _h5.attr_names(group, "layer_names", where)
    if names is None:
        raise ModelFileError(
            f"{where}: no 'layer_names' attribute, so this is not a Keras .h5 weights file."
        )
    file_layers = []
    for name in names:
        layer_group = _h5.child(group, name, where)
        if layer_group is None:
            raise ModelFileError(
                f"{where}: 'layer_names' lists '{name}' but the file has no group of that name."
            )
        weight_names = _h5.attr_names(layer_group, "weight_names", where) or []
        if weight_names:
            file_layers.append((name, layer_group, weight_names))
    if is_model(model):
        ours = [layer for layer in model_layers(model) if layer.weights]
    else:
        ours = [model] if model.weights else []
    if len(ours) != len(file_layers):
        raise ModelFileError(
            f"{where}: the model has {len(ours)} layers with weights "
            f"({', '.join(layer.name for layer in ours) or 'none'}), but the file has "
            f"{len(file_layers)} ({', '.join(n for n, _, _ in file_layers) or 'none'}). Layers "
            f"are matched in order, as Keras does; build the model that matches the file."
        )
    plan: list[tuple[Any, np.ndarray]] = []
    for layer, (name, layer_group, weight_names) in zip(ours, file_layers):
        weights = layer.weights
        if len(weights) != len(weight_names):
            raise ModelFileError(
                f"{where}: layer '{layer.name}' ({_class_name(layer)}) has {len(weights)} weights "
                f"({', '.join(w.name for w in weights)}), but the file's layer '{name}' has "
                f"{len(weight_names)} ({', '.join(weight_names)})."
            )
        for weight, weight_name in zip(weights, weight_names):
            dataset = _h5.get_path(layer_group, weight_name, where)
            if dataset is None:
                raise ModelFileError(
                    f"{where}: the file's layer '{name}' lists the weight '{weight_name}' but "
                    f"holds no array under that name. The file is damaged."
                )
            what = (f"weight '{weight.path}' of layer '{layer.name}' ({_class_name(layer)}, "
                    f"file entry '{name}/{weight_name}')")
            plan.append((weight, _h5.read_dataset(dataset, weight.shape, what, where)))
    return plan


def apply(plan: list[tuple[Any, np.ndarray]]) -> None:
    """Assign every array of a fully checked plan."""
    for weight, array in plan:
        weight.assign(array.astype(weight.dtype, copy=False))
