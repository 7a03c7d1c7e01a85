"""The functional graph: symbolic tensors, the nodes that layer calls record, and the graph walk.

Calling a layer on `unrolled.Input(...)` (or on what another layer returned from one) computes no
numbers. `symbolic_call` builds the layer for the input's shape, asks it for its output shape, and
records a `Node`: which layer was called, with which arguments, giving which symbolic outputs.
Every symbolic tensor remembers where it came from as `(layer, node_index, tensor_index)`, which
is Keras's `keras_history`. `Graph` walks those links back from a model's outputs to its inputs,
orders the layers as Keras does, and later replays the calls on NumPy arrays.
"""

from __future__ import annotations

import collections
import inspect
from typing import Any, Callable, Iterable

import numpy as np

from unrolled import _checks
from unrolled.layers.base import Layer, Symbolic

__all__ = ["SymbolicTensor", "KerasHistory", "Node", "Graph", "symbolic_call"]


class KerasHistory(collections.namedtuple("KerasHistory", ["layer", "node_index", "tensor_index"])):
    """Where a symbolic tensor comes from: `layer._inbound_nodes[node_index].outputs[tensor_index]`."""

    __slots__ = ()


class SymbolicTensor(Symbolic):
    """A placeholder for an array that does not exist yet: its shape, dtype and origin.

    `shape` has `None` for sizes only known at call time (always the batch axis). Pass it to layers
    to build a graph, then hand the graph's ends to `unrolled.Model(inputs, outputs)`.
    """

    __slots__ = ("shape", "dtype", "name", "_keras_history")

    def __init__(self, shape: Iterable[Any], dtype: Any = "float32", name: str | None = None):
        self.shape = tuple(None if s is None else int(s) for s in shape)
        self.dtype = np.dtype(dtype).name
        self.name = name
        self._keras_history: KerasHistory | None = None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        origin = ""
        if self._keras_history is not None:
            layer, node, index = self._keras_history
            origin = f", from {layer.name}[{node}][{index}]"
        return f"<SymbolicTensor shape={_checks.shape_str(self.shape)}, dtype={self.dtype}{origin}>"

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"{self!r} is symbolic: it stands for data that a model will receive later and has no "
            f"values. Only layers can be applied to it. Build a model with "
            f"unrolled.Model(inputs, outputs) and call model.predict(x) to get numbers."
        )

    __array__ = _refuse
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __matmul__ = _refuse
    __truediv__ = __getitem__ = __iter__ = __len__ = __float__ = _refuse

    def __bool__(self) -> bool:
        return True


# ------------------------------------------------------------------ nested structures

def flatten(struct: Any) -> list:
    """Leaves of nested lists/tuples/dicts (dict values in sorted key order, as Keras)."""
    if isinstance(struct, (list, tuple)):
        return [leaf for item in struct for leaf in flatten(item)]
    if isinstance(struct, dict):
        return [leaf for key in sorted(struct) for leaf in flatten(struct[key])]
    return [struct]


def map_structure(fn: Callable, struct: Any) -> Any:
    if isinstance(struct, list):
        return [map_structure(fn, item) for item in struct]
    if isinstance(struct, tuple):
        return tuple(map_structure(fn, item) for item in struct)
    if isinstance(struct, dict):
        return {key: map_structure(fn, value) for key, value in struct.items()}
    return fn(struct)


def pack_like(struct: Any, flat: list) -> Any:
    """Put `flat` back into the nesting of `struct`."""
    leaves = iter(flat)
    return map_structure(lambda _: next(leaves), struct)


def is_shape(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and all(
        v is None or (isinstance(v, (int, np.integer)) and not isinstance(v, bool)) for v in value)


def map_shapes(fn: Callable, struct: Any) -> Any:
    """Map `fn` over the shapes (tuples of int/None) in a nested structure of shapes."""
    if is_shape(struct):
        return fn(tuple(struct))
    if isinstance(struct, list):
        return [map_shapes(fn, item) for item in struct]
    if isinstance(struct, tuple):
        return tuple(map_shapes(fn, item) for item in struct)
    if isinstance(struct, dict):
        return {key: map_shapes(fn, value) for key, value in struct.items()}
    raise TypeError(f"Not a shape or a nested structure of shapes: {struct!r}.")


def holds_symbolic(value: Any) -> bool:
    return any(isinstance(leaf, Symbolic) for leaf in flatten(value))


# ------------------------------------------------------------------ call signatures

_SIGNATURES: dict[Any, inspect.Signature] = {}


def _signature(fn: Callable) -> inspect.Signature:
    sig = _SIGNATURES.get(fn)
    if sig is None:
        sig = _SIGNATURES[fn] = inspect.signature(fn)
    return sig


def accepts(layer: Layer, call: Callable, name: str) -> bool:
    """Whether calling `layer` takes the keyword `name` (`mask`, `training`)."""
    params = _signature(call).parameters
    if name in params:
        return True
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        # Layer.__call__ forwards keywords to `call`: ask `call`.
        inner = _signature(type(layer).call).parameters
        return name in inner or any(p.kind is p.VAR_KEYWORD for p in inner.values())
    return False


def _named_arguments(layer: Layer, call: Callable, args: tuple, kwargs: dict) -> list[tuple[str, Any]]:
    try:
        bound = _signature(call).bind(layer, *args, **kwargs)
    except TypeError as error:
        raise TypeError(f"{type(layer).__name__} '{layer.name}': {error}") from None
    named = []
    params = _signature(call).parameters
    for key, value in list(bound.arguments.items())[1:]:
        kind = params[key].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            named.extend((f"{key}[{k}]", v) for k, v in enumerate(value))
        elif kind is inspect.Parameter.VAR_KEYWORD:
            named.extend(value.items())
        else:
            named.append((key, value))
    return named


# ------------------------------------------------------------------ nodes

def inbound_nodes(layer: Any) -> list["Node"]:
    nodes = layer.__dict__.get("_inbound_nodes")
    if nodes is None:
        nodes = []
        object.__setattr__(layer, "_inbound_nodes", nodes)
    return nodes


class Node:
    """One call of a layer inside a graph: its arguments (symbolic tensors in place) and outputs.

    Attributes:
        layer: the layer that was called.
        args, kwargs: the call's arguments as given, symbolic tensors included.
        outputs: the flat list of output tensors; `outputs[i]` has keras_history
            `(layer, index of this node in layer._inbound_nodes, i)`.
        input_tensors: the symbolic tensors among the arguments, flattened as Keras does
            (positional arguments first, then keyword arguments in sorted order).
    """

    def __init__(self, layer: Any, args: tuple = (), kwargs: dict | None = None,
                 outputs: Any = None, *, first_arg: Any = None, auto_mask: bool = False,
                 accepts_training: bool = False):
        self.layer = layer
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.outputs = flatten(outputs) if outputs is not None else []
        self.outputs_struct = outputs
        self.input_tensors = [t for t in flatten((list(self.args), self.kwargs))
                              if isinstance(t, SymbolicTensor)]
        self.first_arg = first_arg
        self.auto_mask = auto_mask
        self.accepts_training = accepts_training
        nodes = inbound_nodes(layer)
        nodes.append(self)
        node_index = len(nodes) - 1
        for k, tensor in enumerate(self.outputs):
            tensor._keras_history = KerasHistory(layer, node_index, k)
        self.is_input = not self.input_tensors

    @property
    def parent_nodes(self) -> list["Node"]:
        parents = []
        for tensor in self.input_tensors:
            layer, node_index, _ = tensor._keras_history
            parents.append(inbound_nodes(layer)[node_index])
        return parents

    def fill_in(self, values: dict) -> tuple[tuple, dict]:
        swap = lambda x: values[id(x)] if isinstance(x, SymbolicTensor) else x  # noqa: E731
        return map_structure(swap, self.args), map_structure(swap, self.kwargs)

    def __repr__(self) -> str:
        return f"<Node {self.layer.name}[{inbound_nodes(self.layer).index(self)}]>"


def _probe_output_shape(layer: Layer, call: Callable, args: tuple, kwargs: dict) -> Any:
    """Output shapes found by running the layer on zeros, for layers without compute_output_shape.

    Two runs with different sizes for the unknown (None) axes tell which output axes follow them.
    """
    results = []
    for fill in (2, 3):
        def concrete(x: Any) -> Any:
            if isinstance(x, SymbolicTensor):
                return np.zeros([fill if s is None else s for s in x.shape], dtype=x.dtype)
            return x
        out = call(layer, *map_structure(concrete, args), **map_structure(concrete, kwargs))
        results.append(map_structure(lambda a: tuple(np.shape(a)), out))
    first, second = results
    flat_first, flat_second = flatten_shapes(first), flatten_shapes(second)
    merged = [tuple(a if a == b else None for a, b in zip(s1, s2))
              for s1, s2 in zip(flat_first, flat_second)]
    leaves = iter(merged)
    return map_shapes(lambda _: next(leaves), first)


def flatten_shapes(struct: Any) -> list[tuple]:
    found: list[tuple] = []
    map_shapes(lambda s: found.append(s), struct)
    return found


def symbolic_call(layer: Layer, call: Callable, args: tuple, kwargs: dict) -> Any:
    """Record `layer(*args, **kwargs)` on symbolic tensors as a graph node; return its outputs.

    The layer is built for the shape of its first argument (as on an eager call), its
    `compute_output_shape` gives the outputs' shapes, and Keras's masking rule is noted on the
    node: a layer whose call takes `mask` gets its input's mask automatically when it is called
    with exactly one tensor argument and no explicit mask.
    """
    owner = f"{type(layer).__name__} '{layer.name}'"
    named = _named_arguments(layer, call, args, kwargs)
    tensor_args = [(key, value) for key, value in named if holds_symbolic(value)]
    first_key, first = named[0] if named else (None, None)
    if not holds_symbolic(first):
        first_key, first = tensor_args[0]
    for leaf in flatten(first):
        if not isinstance(leaf, SymbolicTensor):
            raise TypeError(
                f"{owner}: the input `{first_key}` mixes symbolic tensors with "
                f"{type(leaf).__name__}; pass only tensors from unrolled.Input(...) and layers.")
    input_shape = map_structure(lambda t: t.shape, first)

    check = getattr(layer, "_check_sequence_shape", None)
    if check is not None and isinstance(first, SymbolicTensor):
        check(first.shape, owner)
    if isinstance(first, SymbolicTensor) and first.shape and first.shape[-1] is not None:
        layer.check_input_features(first.shape[-1], first_key)
    layer._maybe_build(input_shape)

    compute = getattr(layer, "compute_output_shape", None)
    output_shape = None
    if compute is not None:
        try:
            output_shape = compute(input_shape)
        except NotImplementedError:
            output_shape = None
    if output_shape is None:
        output_shape = _probe_output_shape(layer, call, args, kwargs)

    dtype = getattr(layer, "dtype", "float32")
    outputs = map_shapes(lambda s: SymbolicTensor(s, dtype), output_shape)
    explicit_mask = dict(named).get("mask")
    auto_mask = (accepts(layer, call, "mask") and explicit_mask is None and len(tensor_args) == 1)
    Node(layer, args, kwargs, outputs, first_arg=first, auto_mask=auto_mask,
         accepts_training=accepts(layer, call, "training"))
    return outputs


# ------------------------------------------------------------------ graphs

class Graph:
    """The part of a layer graph between some inputs and some outputs, ready to run.

    `layers` lists the layers in Keras's order (deepest first, ties by first visit);
    `nodes_by_depth` groups the calls by distance from the outputs; `run` replays them on arrays.
    `observer` (None normally) is called as `observer(node, args, kwargs, outputs, out_masks)`
    after each layer call of `run` (unrolled.trace uses it to see every intermediate value).
    """

    observer: Callable | None = None

    def __init__(self, inputs: Any, outputs: Any, owner: str):
        self.inputs_struct = inputs
        self.outputs_struct = outputs
        self.inputs = flatten(inputs)
        self.outputs = flatten(outputs)
        self.owner = owner
        for what, tensors in (("inputs", self.inputs), ("outputs", self.outputs)):
            if not tensors:
                raise ValueError(f"{owner}: `{what}` is empty; give at least one tensor.")
            for tensor in tensors:
                if not isinstance(tensor, SymbolicTensor):
                    raise TypeError(
                        f"{owner}: every entry of `{what}` must be a symbolic tensor (from "
                        f"unrolled.Input(...) or a layer called on one), got "
                        f"{type(tensor).__name__}.")
        for tensor in self.inputs:
            layer, node_index, _ = tensor._keras_history
            if not inbound_nodes(layer)[node_index].is_input:
                raise ValueError(
                    f"{owner}: input {tensor!r} comes from layer '{layer.name}', not from "
                    f"unrolled.Input(...). A model's inputs must be Input tensors.")
        self._map_graph()

    def _map_graph(self) -> None:
        order: list[Node] = []  # nodes from inputs to outputs (depth-first post-order)
        first_visit: dict[int, int] = {}
        finished: set[int] = set()
        in_progress: set[int] = set()

        def visit(tensor: SymbolicTensor) -> None:
            layer, node_index, _ = tensor._keras_history
            node = inbound_nodes(layer)[node_index]
            if id(node) in finished:
                return
            if id(node) in in_progress:
                raise ValueError(f"{self.owner}: the graph has a cycle through layer '{layer.name}'.")
            first_visit.setdefault(id(layer), len(first_visit))
            in_progress.add(id(node))
            if not node.is_input:
                for parent in node.input_tensors:
                    visit(parent)
            finished.add(id(node))
            in_progress.discard(id(node))
            order.append(node)

        for tensor in self.outputs:
            visit(tensor)
        in_graph = {id(n) for n in order}

        node_depth: dict[Node, int] = {}
        layer_depth: dict[int, int] = {}
        layers_by_id: dict[int, Any] = {}
        for node in reversed(order):
            depth = node_depth.setdefault(node, 0)
            depth = max(depth, layer_depth.get(id(node.layer), 0))
            layer_depth[id(node.layer)] = depth
            layers_by_id[id(node.layer)] = node.layer
            node_depth[node] = depth
            for parent in node.parent_nodes:
                if id(parent) in in_graph:
                    node_depth[parent] = max(depth + 1, node_depth.get(parent, 0))
        for tensor in self.inputs:  # inputs that no output uses still belong to the model
            layer, node_index, _ = tensor._keras_history
            if id(layer) not in layer_depth:
                layer_depth[id(layer)] = 0
                first_visit[id(layer)] = -1
                layers_by_id[id(layer)] = layer
                node = inbound_nodes(layer)[node_index]
                node_depth[node] = 0
                in_graph.add(id(node))

        self.nodes = in_graph
        self.nodes_by_depth: dict[int, list[Node]] = collections.defaultdict(list)
        for node, depth in node_depth.items():
            self.nodes_by_depth[depth].append(node)
        by_depth: dict[int, list] = collections.defaultdict(list)
        for key, depth in layer_depth.items():
            by_depth[depth].append(layers_by_id[key])
        self.layers = []
        for depth in sorted(by_depth, reverse=True):
            self.layers.extend(sorted(by_depth[depth], key=lambda l: first_visit[id(l)]))

        computable = {id(t) for t in self.inputs}
        for depth in sorted(self.nodes_by_depth, reverse=True):
            for node in self.nodes_by_depth[depth]:
                if node.is_input and not all(id(t) in computable for t in node.outputs):
                    needed_by = [o for o in self.outputs if _depends_on(o, node)]
                    raise ValueError(
                        f"{self.owner}: the graph is disconnected. Output(s) "
                        f"{', '.join(repr(t) for t in needed_by)} depend on the Input "
                        f"'{node.layer.name}', which is not among the model's `inputs` "
                        f"({', '.join(t._keras_history.layer.name for t in self.inputs)}). Add "
                        f"it to `inputs`, or build the outputs from the given inputs only.")
                for tensor in node.input_tensors:
                    if id(tensor) not in computable:
                        source = tensor._keras_history.layer
                        raise ValueError(
                            f"{self.owner}: the graph is disconnected. Layer '{node.layer.name}' "
                            f"needs {tensor!r}, which comes from '{source.name}' and cannot be "
                            f"computed from the model's `inputs` "
                            f"({', '.join(t._keras_history.layer.name for t in self.inputs)}). "
                            f"Add the Input it depends on to `inputs`, or build the outputs from "
                            f"the given inputs only.")
                computable.update(id(t) for t in node.outputs)

        names = [layer.name for layer in self.layers]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(
                    f"{self.owner}: the name '{name}' is used by {names.count(name)} layers. "
                    f"Layer names in a model must be unique (they key its config and weights); "
                    f"pass distinct `name=` arguments.")

    # ---------------------------------------------------------------- running

    def run(self, values: list, training: Any = None, masks: list | None = None) -> list:
        """Replay the graph on arrays; returns the flat list of output arrays."""
        computed = {id(t): v for t, v in zip(self.inputs, values)}
        mask_of: dict[int, Any] = {}
        if masks is not None:
            for tensor, mask in zip(self.inputs, masks):
                if mask is not None:
                    mask_of[id(tensor)] = mask
        for depth in sorted(self.nodes_by_depth, reverse=True):
            for node in self.nodes_by_depth[depth]:
                if node.is_input:
                    continue
                args, kwargs = node.fill_in(computed)
                if training is not None and node.accepts_training:
                    kwargs["training"] = training
                first_masks = map_structure(lambda t: mask_of.get(id(t)), node.first_arg)
                if node.auto_mask and any(m is not None for m in flatten(first_masks)):
                    kwargs["mask"] = first_masks
                outputs = node.layer(*args, **kwargs)
                flat = flatten(outputs)
                for tensor, value in zip(node.outputs, flat):
                    computed[id(tensor)] = value
                previous = kwargs.get("mask")
                if previous is None:
                    previous = first_masks
                first_value = map_structure(lambda t: computed[id(t)], node.first_arg)
                out_masks = node.layer.compute_mask(first_value, previous)
                if self.observer is not None:
                    self.observer(node, args, kwargs, outputs, out_masks)
                if out_masks is None:
                    continue
                for tensor, mask in zip(node.outputs, flatten(out_masks)):
                    if mask is not None:
                        mask_of[id(tensor)] = mask
        return [computed[id(t)] for t in self.outputs]

    def output_shapes(self, input_shapes: list) -> list:
        """The flat output shapes for inputs of `input_shapes`, through compute_output_shape."""
        shapes = {id(t): tuple(s) for t, s in zip(self.inputs, input_shapes)}
        for depth in sorted(self.nodes_by_depth, reverse=True):
            for node in self.nodes_by_depth[depth]:
                if node.is_input:
                    continue
                first = map_structure(lambda t: shapes[id(t)], node.first_arg)
                out = node.layer.compute_output_shape(first)
                for tensor, shape in zip(node.outputs, flatten_shapes(out)):
                    shapes[id(tensor)] = shape
        return [shapes[id(t)] for t in self.outputs]



def _depends_on(tensor: SymbolicTensor, target: Node) -> bool:
    layer, node_index, _ = tensor._keras_history
    node = inbound_nodes(layer)[node_index]
    if node is target:
        return True
    return any(_depends_on(parent, target) for parent in node.input_tensors)
