"""RNN: the time loop around any cell (masking, go_backwards, stateful, return_sequences/state)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from unrolled import _checks
from unrolled.layers._serialization import deserialize_layer, serialize_layer
from unrolled.layers.base import Layer
from unrolled.layers.cell import check_states, describe_states, takes_training
from unrolled.layers.stacked import StackedRNNCells, _output_size

__all__ = ["RNN", "first_mask"]

_kernels: Any = None  # unrolled.kernels, imported on the first call (it imports the cells)
_train: Any = None  # unrolled.kernels.train, imported on the first forward_train


def _map(fn: Callable, *trees: Any) -> Any:
    """Apply `fn` leaf-wise over nested lists of arrays, keeping the first tree's nesting."""
    first = trees[0]
    if isinstance(first, (list, tuple)):
        return [_map(fn, *items) for items in zip(*trees)]
    return fn(*trees)


def _flatten(tree: Any) -> list:
    if isinstance(tree, (list, tuple)):
        return [leaf for item in tree for leaf in _flatten(item)]
    return [tree]


def first_mask(mask: Any) -> Any:
    """The sequence's mask: a nested mask (one per input, as Keras passes) gives its first entry.

    A (batch, timesteps) mask written as nested Python lists is a mask, not a nesting.
    """
    if isinstance(mask, (list, tuple)):
        if not mask:
            return None
        if mask[0] is None or np.ndim(mask[0]) >= 2:
            return mask[0]
    return mask


def the_sequence(sequences: Any, inputs: Any, owner: str) -> Any:
    """The input of a sequence layer's call, given as `sequences` (Keras 3) or `inputs`."""
    if sequences is not None and inputs is not None:
        raise TypeError(f"{owner}: pass the input once, as `sequences` or `inputs`, not both.")
    x = sequences if inputs is None else inputs
    if x is None:
        raise TypeError(f"{owner}: missing the input sequence; call layer(x) with x of shape "
                        f"(batch, timesteps, features).")
    return x


def _where(step_mask: np.ndarray, new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """Per sample: `new` where the step is valid, `old` where it is masked."""
    keep = step_mask.reshape(step_mask.shape + (1,) * (new.ndim - 1))
    return np.where(keep, new, old)


class RNN(Layer):
    """Run a cell over every timestep of a sequence: Keras's generic recurrent layer.

    For `t = 0 .. T-1` (or `T-1 .. 0` with `go_backwards`)::

        output_t, states_t = cell(x[:, t], states_{t-1})

    where:
        x          (batch, timesteps, features)   the input sequence
        states_t   as the cell's `state_size`: one `(batch, units)` array for SimpleRNN, one
                   entry per cell for a stack
        output_t   (batch, output_size)

    A step whose mask is False is skipped per sample: its states are carried over unchanged and
    its output repeats the previous state's `h` (zeros with `zero_output_for_mask=True`).

    Args:
        cell: a cell (anything with `call(inputs, states)` and `state_size`), or a list of cells,
            which is wrapped in `StackedRNNCells`.
        return_sequences: return every step's output `(batch, timesteps, units)` rather than the
            last one `(batch, units)`. Default False.
        return_state: also return the final states: `(output, *states)`. Default False.
        go_backwards: process the sequence from the last step to the first. The returned sequence
            stays in processing order (reversed time), as in Keras. Default False.
        stateful: carry the final states of one call into the next as its initial states (the
            batch size must then stay the same); `reset_state()` zeroes them. Default False.
        unroll: accepted for Keras compatibility. As in Keras, an unrolled loop takes a masked
            step's output from the previous *output* (zeros at the first step) rather than from the
            state. Default False.
        zero_output_for_mask: masked steps output zeros, including the last output when the final
            step is masked. Default False.
        name, dtype, trainable: as for every layer; `dtype` defaults to the cell's.

    Call arguments:
        sequences: `(batch, timesteps, features)`; also accepted as `inputs=`.
        initial_state: the states to start from, nested as the cell's states (a bare array for a
            single state). Default: the cell's `get_initial_state` (zeros), or the carried states
            when `stateful`.
        mask: `(batch, timesteps)` booleans (or 0/1), True where a step is real.
        training: apply dropout and recurrent dropout. Default False.

    Returns:
        The output (see `return_sequences`), or with `return_state` the tuple
        `(output, *final_states)`: `(out, h)` for SimpleRNN, `(out, [h1], [h2, c2])` for a stack.

    Example:
        >>> import numpy as np
        >>> from unrolled import layers
        >>> x = np.ones((32, 10, 8), dtype="float32")
        >>> rnn = layers.RNN(layers.SimpleRNNCell(4), return_sequences=True, return_state=True)
        >>> whole_sequence, final_state = rnn(x)
        >>> whole_sequence.shape, final_state.shape   # (batch, timesteps, units), (batch, units)
        ((32, 10, 4), (32, 4))
    """

    _input_ndim: int | None = None  # layers with a fixed input rank (SimpleRNN: 3) set this
    supports_masking = True
    # Set by `unrolled.trace` while it runs: the loop then reports each step to it (begin_step,
    # end_step) and always takes the reference path, so a trace shows the code that defines the
    # layer's numbers.
    _recorder: Any = None

    def __init__(self, cell: Any, return_sequences: bool = False, return_state: bool = False,
                 go_backwards: bool = False, stateful: bool = False, unroll: bool = False,
                 zero_output_for_mask: bool = False, **kwargs: Any):
        if isinstance(cell, (list, tuple)):
            cell = StackedRNNCells(cell)
        owner = type(self).__name__
        if isinstance(cell, RNN):
            raise TypeError(
                f"{owner}: `cell` must be a cell (one timestep), got the layer {cell!r}, which "
                f"already runs over time. Call it directly instead of wrapping it in RNN, or wrap "
                f"its cell: RNN({type(cell).__name__}Cell(...))."
            )
        for attr in ("call", "state_size"):
            if not hasattr(cell, attr):
                raise TypeError(
                    f"{owner}: `cell` must be a recurrent cell with call(inputs, states) and "
                    f"state_size (for example SimpleRNNCell(4)), or a list of cells; got "
                    f"{type(cell).__name__} without `{attr}`."
                )
        state_size = cell.state_size
        if state_size is None or not isinstance(state_size, (int, np.integer, list, tuple)):
            raise TypeError(
                f"{owner}: the cell's state_size must be an integer or a list of integers (one "
                f"per state), got {state_size!r}."
            )
        if kwargs.get("dtype") is None and isinstance(cell, Layer):
            kwargs["dtype"] = cell.dtype
        super().__init__(**kwargs)
        self.cell = cell
        self._adopt(cell)
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.unroll = bool(unroll)
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.single_state = isinstance(state_size, (int, np.integer))
        self.states: list | None = None
        self._expected_batch_size: int | None = None

    @property
    def state_size(self) -> list:
        size = self.cell.state_size
        return [size] if isinstance(size, (int, np.integer)) else list(size)

    @property
    def output_size(self) -> Any:
        return _output_size(self.cell)

    def _sublayers(self) -> list[Layer]:
        return [self.cell] if isinstance(self.cell, Layer) else []

    # ---------------------------------------------------------------- build and states

    def build(self, sequences_shape: Any, initial_state_shape: Any = None) -> None:
        """Build the cell for steps of shape `(batch, features)`."""
        sequences_shape = tuple(sequences_shape)
        if len(sequences_shape) < 3:
            raise ValueError(
                f"{type(self).__name__}.build expects (batch, timesteps, features), got "
                f"{sequences_shape}."
            )
        step_shape = (sequences_shape[0],) + sequences_shape[2:]
        if isinstance(self.cell, Layer) and not self.cell.built:
            self.cell._maybe_build(step_shape)
        if self.stateful and sequences_shape[0] is not None:
            self._carried_states(int(sequences_shape[0]), type(self).__name__)
        super().build(sequences_shape)

    def _carried_states(self, batch: int, owner: str) -> list:
        """A stateful layer's states, created (zeros) for the first batch size it sees."""
        if self._expected_batch_size is None:
            self._expected_batch_size = batch
        elif batch != self._expected_batch_size:
            raise ValueError(
                f"{owner} is stateful and carries states for a batch of {self._expected_batch_size}, "
                f"but this input has a batch of {batch}. Feed batches of {self._expected_batch_size} "
                f"(pad the last one), or create a new layer for another batch size."
            )
        if self.states is None:
            self.states = self.get_initial_state(batch)
        return self.states

    def get_initial_state(self, batch_size: int) -> list:
        """The cell's initial states as a list (zeros unless the cell says otherwise)."""
        fn = getattr(self.cell, "get_initial_state", None)
        if fn is None:
            return [np.zeros((batch_size, s), dtype=self.dtype) for s in self.state_size]
        state = fn(batch_size=batch_size)
        return list(state) if isinstance(state, (list, tuple)) else [state]

    def reset_state(self) -> None:
        """Zero the carried states of a stateful layer (a no-op before its first call)."""
        if self.states is not None:
            self.states = _map(np.zeros_like, self.states)

    def reset_states(self) -> None:
        """Alias of `reset_state`, Keras 2's name."""
        self.reset_state()

    # ---------------------------------------------------------------- calling

    def __call__(self, sequences: Any = None, initial_state: Any = None, mask: Any = None,
                 training: bool = False, *, inputs: Any = None) -> Any:
        plain = (initial_state is None and mask is None and not training and inputs is None
                 and type(sequences) is np.ndarray and self._recorder is None)
        if plain:
            # A repeat of the last plain call's shape: its kernel plan, without the checks.
            plan = self.__dict__.get("_plan")
            if plan is not None:
                result = plan.call(self, sequences)
                if result is not None:
                    return result
        elif (initial_state is not None and mask is None and not training and inputs is None
              and type(sequences) is np.ndarray and self._recorder is None
              and not self.stateful):
            result = self._call_planned(sequences, initial_state)
            if result is not None:
                return result
        owner = f"{type(self).__name__} '{self.name}'"
        x = the_sequence(sequences, inputs, owner)
        x, states, mask = self._prepare(x, initial_state, mask, owner)
        if plain and not self.stateful and x is sequences:
            self._keep_plan(x, states)
        try:
            last, outputs, final = self._loop(x, states, mask, training)
        finally:
            for reset in ("reset_dropout_mask", "reset_recurrent_dropout_mask"):
                if hasattr(self.cell, reset):
                    getattr(self.cell, reset)()

        if self.stateful:
            self.states = _map(np.array, final)
        output = outputs if self.return_sequences else last
        if self.return_state:
            return (output, *final)
        return output

    def _call_planned(self, x: np.ndarray, initial_state: Any) -> Any:
        """A call with initial states, of a shape whose kernel plan the layer keeps, and with
        states the checks would pass as they are (`Plan.given_states`): the plan's short route,
        without the checks; else None. A generator's loop calls a layer so, a step a call with
        the state of the call before: the checks were half of such a call of a SimpleRNN(256)
        (RESULTS.md, round 31)."""
        # a kept plan is made by unrolled.kernels, imported by then (`_run_kernel`)
        if _kernels is None or not self._kernel_is_own():
            return None
        plan = _kernels.kept_plan(self, x)
        states = None if plan is None else plan.given_states(initial_state)
        return None if states is None else plan.call(self, x, states)

    def _kernel_is_own(self) -> bool:
        """Whether `_run_kernel` is RNN's own, neither overridden by a subclass nor set on the
        layer: only then may a kept plan stand in for it."""
        return "_run_kernel" not in self.__dict__ and type(self)._run_kernel is RNN._run_kernel

    def _keep_plan(self, x: np.ndarray, states: list) -> None:
        """Keep the kernel plan for plain calls shaped like `x` (see unrolled.kernels.Plan).

        Only while `_run_kernel` is the class's own: an override decides per call.
        """
        if not self._kernel_is_own():
            return
        global _kernels
        if _kernels is None:
            from unrolled import kernels as _kernels
        plan = _kernels.plan_for(self, x, False)
        if plan is not None:
            plan.states = states  # the cell's zeros: kernels read states, never write them
        self.__dict__["_plan"] = plan

    def _prepare(self, x: Any, initial_state: Any, mask: Any,
                 owner: str) -> tuple[np.ndarray, list, np.ndarray | None]:
        """Check and convert a call's input, initial states and mask (building on first use).

        Returns `x` as an array of the layer's dtype, the states to start from (the given ones,
        the carried ones of a stateful layer, or the cell's initial states) and the mask.
        """
        x = _checks.as_float_array(x, "sequences", owner, np.dtype(self.dtype))
        self._check_sequence_shape(x.shape, owner)
        batch, timesteps = x.shape[:2]
        self._maybe_build(x.shape)
        if isinstance(self.cell, Layer):
            self.cell.check_input_features(x.shape[-1], "sequences")
        mask = self._check_mask(mask, batch, timesteps, owner)
        carried = self._carried_states(batch, owner) if self.stateful else None
        if initial_state is not None:
            states = check_states(initial_state, self.cell, batch, np.dtype(self.dtype), owner,
                                  "initial_state")
            if not isinstance(states, list):
                states = [states]
        else:
            states = carried if self.stateful else self.get_initial_state(batch)
        return x, states, mask

    def _check_sequence_shape(self, shape: tuple, owner: str) -> None:
        ndim = len(shape)
        expected = self._input_ndim
        if (expected is not None and ndim != expected) or ndim < 3:
            hint = ""
            if ndim == 2:
                hint = (" If it comes from another recurrent layer, give that layer "
                        "return_sequences=True so it passes on the whole sequence. For one sequence "
                        "add a batch axis (x[None]); for one feature per step add a feature axis "
                        "(x[..., None]).")
            elif ndim == 1:
                hint = " Reshape it, e.g. x.reshape(1, -1, 1) for one sequence of scalars."
            elif ndim > 3:
                hint = (" Merge the extra axes into the features, e.g. "
                        "x.reshape(batch, timesteps, -1).")
            raise ValueError(
                f"{owner} expects input of shape (batch, timesteps, features), 3-D; got {ndim}-D "
                f"input of shape {_checks.shape_str(shape)}.{hint}"
            )
        if shape[1] == 0:
            raise ValueError(
                f"{owner}: the input has 0 timesteps (shape {_checks.shape_str(shape)}); a recurrent "
                f"layer needs at least one step."
            )

    def _check_mask(self, mask: Any, batch: int, timesteps: int, owner: str) -> np.ndarray | None:
        mask = first_mask(mask)
        if mask is None:
            return None
        array = np.asarray(mask)
        if array.dtype.kind not in "biuf":
            raise TypeError(
                f"{owner}: `mask` must hold booleans (or 0/1), got dtype {array.dtype}."
            )
        if array.shape != (batch, timesteps):
            raise ValueError(
                f"{owner}: `mask` must have shape (batch, timesteps) = ({batch}, {timesteps}), "
                f"one flag per step, got {_checks.shape_str(array.shape)}."
            )
        return array.astype(bool)

    def _loop(self, x: np.ndarray, states: list, mask: np.ndarray | None,
              training: bool) -> tuple[np.ndarray, np.ndarray | None, list]:
        """Run the sequence: a whole-sequence kernel when one applies, else the reference loop."""
        if self._recorder is None:
            fast = self._run_kernel(x, states, mask, training)
            if fast is not None:
                return fast
        return self._reference_loop(x, states, mask, training)

    def _run_kernel(self, x: np.ndarray, states: list, mask: np.ndarray | None,
                    training: bool) -> tuple[np.ndarray, np.ndarray | None, list] | None:
        """A fused whole-sequence kernel's `(last, outputs, final)`, or None when none applies.

        The kernels (unrolled.kernels) cover the built-in cells; tests prove they equal
        `_reference_loop`.
        """
        global _kernels
        if _kernels is None:
            from unrolled import kernels as _kernels
        return _kernels.run(self, x, states, mask, training)

    def _reference_loop(self, x: np.ndarray, states: list, mask: np.ndarray | None,
                        training: bool) -> tuple[np.ndarray, np.ndarray | None, list]:
        """The reference time loop (Keras's backend.rnn): one `cell.call` per timestep."""
        rec = self._recorder
        cell = self.cell
        # Built cells are stepped through `call` directly: the inputs were checked once, up front.
        step = cell.call if isinstance(cell, Layer) else (cell if callable(cell) else cell.call)
        kwargs = {"training": training} if takes_training(step) else {}
        batch, timesteps = x.shape[:2]
        order = range(timesteps - 1, -1, -1) if self.go_backwards else range(timesteps)
        stacked = isinstance(self.cell, StackedRNNCells)
        outputs = None
        output = None
        for k, t in enumerate(order):
            if rec is not None:
                rec.begin_step(self, k, t, None if mask is None else mask[:, t])
            y, new_states = step(x[:, t], states, **kwargs)                # y: (batch, units)
            if not isinstance(new_states, (list, tuple)):
                new_states = [new_states]
            if mask is None:
                output, states = y, list(new_states)
            else:
                output, states = self._masked_step(mask[:, t], y, new_states, output, states,
                                                   stacked)
            if rec is not None:
                rec.end_step(self, output, states)
            if self.return_sequences:
                if outputs is None:
                    outputs = np.empty((batch, timesteps) + output.shape[1:], dtype=self.dtype)
                outputs[:, k] = output
        last = np.asarray(output, dtype=self.dtype)
        final = _map(lambda s: np.asarray(s, dtype=self.dtype), states)
        return last, outputs, final

    # ---------------------------------------------------------------- training: BPTT

    def forward_train(self, sequences: Any, initial_state: Any = None, mask: Any = None,
                      training: bool = True) -> tuple[Any, dict]:
        """The call for training: the same result as `layer(...)`, plus the cache `backward` needs.

        A built-in cell runs the whole-sequence training kernel (unrolled.kernels.train) when
        it applies, which chooses its own thread setting; else `_forward_train`, the per-step
        reference, under `_step_threads`.
        """
        global _train
        if _train is None:
            from unrolled.kernels import train as _train
        fast = _train.forward(self, sequences, initial_state, mask, training)
        if fast is not None:
            return fast
        batch = int(np.shape(sequences if not isinstance(sequences, (list, tuple))
                             else np.asarray(sequences))[0])
        with self._step_threads(batch):
            return self._forward_train(sequences, initial_state, mask, training)

    def backward(self, cache: dict, d_result: Any, grads: Any) -> np.ndarray:
        """Backpropagation through time: the training kernel's backward for a cache its
        forward made, else `_backward` under `_step_threads`."""
        if "train_tape" in cache:
            return _train.backward(self, cache, d_result, grads)
        with self._step_threads(cache["x_shape"][0], "backward"):
            return self._backward(cache, d_result, grads)

    def _step_threads(self, batch: int, phase: str = "forward") -> Any:
        """Training runs per step, like the kernels: one BLAS thread for the step products when
        that is faster (unrolled.kernels._threads, which times each `phase` of this layer
        separately), the process's setting restored afterwards."""
        from unrolled.kernels._threads import step_threads

        cells = self.cell.cells if isinstance(self.cell, StackedRNNCells) else [self.cell]
        work = max((batch * w.shape[0] * w.shape[1] for c in cells
                    for w in [getattr(c, "recurrent_kernel", None)] if isinstance(w, np.ndarray)),
                   default=0)
        return step_threads(work, (id(self), batch, phase))

    def _forward_train(self, sequences: Any, initial_state: Any = None, mask: Any = None,
                       training: bool = True) -> tuple[Any, dict]:
        """The call for training: the same result as `layer(...)`, plus the cache `backward` needs.

        It runs the reference loop (one cell step at a time), keeping each step's cell cache,
        states and mask. Returns `(result, cache)`, `result` shaped as `__call__` returns it.
        """
        owner = f"{type(self).__name__} '{self.name}'"
        x, states, mask = self._prepare(sequences, initial_state, mask, owner)
        batch, timesteps = x.shape[:2]
        from unrolled.training.backprop import forward_step

        stacked = isinstance(self.cell, StackedRNNCells)
        order = range(timesteps - 1, -1, -1) if self.go_backwards else range(timesteps)
        steps, outputs, output = [], [], None
        try:
            for t in order:
                before = states
                y, new_states, cell_cache = forward_step(self.cell, x[:, t], list(states), training)
                if mask is None:
                    output, states = y, list(new_states)
                else:
                    output, states = self._masked_step(mask[:, t], y, new_states, output,
                                                       states, stacked)
                steps.append({"t": t, "cell": cell_cache, "states_before": before})
                outputs.append(output)
        finally:
            for reset in ("reset_dropout_mask", "reset_recurrent_dropout_mask"):
                if hasattr(self.cell, reset):
                    getattr(self.cell, reset)()
        final = _map(lambda s: np.asarray(s, dtype=self.dtype), states)
        if self.stateful:
            self.states = _map(np.array, final)
        sequence = np.stack(outputs, axis=1) if self.return_sequences else None
        output = sequence if self.return_sequences else np.asarray(output, dtype=self.dtype)
        result = (output, *final) if self.return_state else output
        cache = {"x_shape": x.shape, "mask": mask, "steps": steps, "final": final,
                 "stacked": stacked, "output_shape": outputs[-1].shape}
        return result, cache

    def _backward(self, cache: dict, d_result: Any, grads: Any) -> np.ndarray:
        """Backpropagation through time: the gradient of the loss with respect to the input
        sequence, adding every weight's gradient (summed over the timesteps) to `grads`.

        `d_result` mirrors what `forward_train` returned: the output's gradient, or with
        `return_state` a tuple `(d_output, *d_states)`; any entry may be None (no gradient).
        Afterwards `cache["d_initial_state"]` holds the gradient with respect to the initial
        states (nested as they were), and `cache["step_grads"][k]` the gradients reaching step
        k's output and new states (processing order), from which `unrolled.gradients` reads
        dL/dh_t.

        Each step k, from the last to the first::

            d_o      = d_outputs[:, k] (+ d_last at the last step)
            valid steps:  d_y = d_o,  d_new = d_states;   masked: carried to the step before
            d_x_t, d_states = cell.backward_step(cache_k, d_y, d_new)
        """
        from unrolled.training.backprop import backward_step, zeros_like_tree

        if self.return_state:
            d_output, *d_final = d_result
        else:
            d_output, d_final = d_result, [None] * len(cache["final"])
        d_states = [zeros_like_tree(f) if d is None else _map(np.asarray, d)
                    for d, f in zip(d_final, cache["final"])]
        steps, mask, stacked = cache["steps"], cache["mask"], cache["stacked"]
        K = len(steps)
        zeros_out = np.zeros(cache["output_shape"], dtype=self.dtype)
        d_x = np.zeros(cache["x_shape"], dtype=self.dtype)           # (batch, timesteps, features)
        carry = None  # unroll: the gradient on the previous step's output
        step_grads: list = [None] * K
        for k in range(K - 1, -1, -1):
            step = steps[k]
            t = step["t"]
            if d_output is None:
                d_o = zeros_out
            elif self.return_sequences:
                d_o = d_output[:, k]
            else:
                d_o = d_output if k == K - 1 else zeros_out
            if carry is not None:
                d_o = d_o + carry
                carry = None
            if mask is None:
                d_y, d_new = d_o, d_states
            else:
                valid = mask[:, t]                                          # (batch,)
                d_y = _where(valid, d_o, zeros_out)
                d_new = _map(lambda d: _where(valid, d, np.zeros_like(d)), d_states)
                d_kept = _map(lambda d: _where(valid, np.zeros_like(d), d), d_states)
                d_prev = _where(valid, zeros_out, d_o)
            step_grads[k] = {"t": t, "output": d_y, "states": d_new}
            d_x_t, d_before = backward_step(self.cell, step["cell"], d_y, list(d_new), grads)
            d_x[:, t] = d_x_t
            if mask is not None:
                d_before = _map(lambda a, b: a + b, list(d_before), d_kept)
                if self.zero_output_for_mask:
                    pass
                elif self.unroll:
                    carry = d_prev
                else:
                    d_before = self._add_to_previous_output(d_before, d_prev, stacked)
            d_states = list(d_before)
        cache["d_initial_state"] = d_states
        cache["step_grads"] = step_grads
        return d_x

    @staticmethod
    def _add_to_previous_output(d_states: list, d_prev: np.ndarray, stacked: bool) -> list:
        """A masked step's output is the previous state's h: send its gradient there."""
        d_states = list(d_states)
        if stacked:
            last = d_states[-1]
            if isinstance(last, (list, tuple)):
                d_states[-1] = [last[0] + d_prev] + list(last[1:])
            else:
                d_states[-1] = last + d_prev
        else:
            d_states[0] = d_states[0] + d_prev
        return d_states

    def _masked_step(self, valid: np.ndarray, y: np.ndarray, new_states: Any, output: Any,
                     states: list, stacked: bool) -> tuple[np.ndarray, list]:
        """Keras's rule for a step with a mask: per sample, a valid step takes the cell's output
        and states; a masked one keeps the old states and outputs the previous state's h (zeros
        with zero_output_for_mask; with unroll, the previous *output*, zeros at the first step).

        valid (batch,); y (batch, units); returns (output, states).
        """
        if self.zero_output_for_mask:
            previous = np.zeros_like(y)
        elif self.unroll:
            previous = output if output is not None else np.zeros_like(y)
        else:
            previous = self._previous_output(states, stacked)
        output = _where(valid, y, previous)
        states = _map(lambda new, old: _where(valid, new, old), list(new_states), states)
        return output, states

    @staticmethod
    def _previous_output(states: list, stacked: bool) -> np.ndarray:
        """What a masked step outputs: the state's h (for a stack, the last cell's h)."""
        if stacked:
            last_cell = states[-1]
            return last_cell[0] if isinstance(last_cell, (list, tuple)) else last_cell
        return states[0]

    def compute_output_shape(self, sequences_shape: tuple) -> Any:
        """The shape(s) a call returns for input of `sequences_shape`, as Keras reports them."""
        batch, timesteps = sequences_shape[0], sequences_shape[1]
        size = self.output_size
        out = (batch, timesteps, size) if self.return_sequences else (batch, size)
        if not self.return_state:
            return out
        states = []
        for state_size in self.state_size:
            if isinstance(state_size, (list, tuple)):
                states.append([(batch, s) for s in state_size])
            else:
                states.append((batch, state_size))
        return (out, *states)

    def compute_mask(self, inputs: Any, mask: Any) -> Any:
        """The mask that travels on with the output: the input's if return_sequences, else None."""
        mask = first_mask(mask)
        output_mask = mask if self.return_sequences else None
        if self.return_state:
            return [output_mask] + [None] * len(self.state_size)
        return output_mask

    # ---------------------------------------------------------------- config and display

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            return_sequences=self.return_sequences, return_state=self.return_state,
            go_backwards=self.go_backwards, stateful=self.stateful, unroll=self.unroll,
            zero_output_for_mask=self.zero_output_for_mask,
        )
        if hasattr(self.cell, "get_config"):
            config["cell"] = serialize_layer(self.cell)
        return config

    @classmethod
    def from_config(cls, config: dict) -> "RNN":
        """Rebuild from `get_config()`; a nested `cell` dict names one of unrolled's cells."""
        config = dict(config)
        if "cell" not in config:  # SimpleRNN, LSTM, GRU: the cell's arguments sit in the config
            return cls(**config)
        cell = config.pop("cell")
        if isinstance(cell, dict):
            cell = deserialize_layer(cell, "cell")
        return cls(cell, **config)

    def _flag_fields(self) -> list[str]:
        flags = ("return_sequences", "return_state", "go_backwards", "stateful", "unroll",
                 "zero_output_for_mask")
        return [f"{f}=True" for f in flags if getattr(self, f)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join([repr(self.cell)] + self._flag_fields())})"

    def describe_states(self, batch: Any = "batch") -> str:
        """The nesting `initial_state` must have, with shapes."""
        return describe_states(self.cell, batch)
