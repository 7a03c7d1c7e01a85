"""Whole-sequence forward kernels for the built-in cells: the fast path of `RNN`.

`RNN` calls `run` for every forward pass without a trace recorder; it returns what the reference
loop (`RNN._reference_loop`, one `cell.call` per timestep) returns, or None when no kernel
applies. tests/test_kernels.py proves the two agree for every option.

What a kernel does differently from the readable step, and why it is faster:
- the input projection `x U + b` is one matrix multiply over all timesteps (or over chunks of
  them, when the scratch would be large), not one per step;
- the loop is time-major: `(timesteps, batch, units)` buffers, so every step reads and writes
  contiguous rows; `return_sequences` hands back a `(batch, timesteps, units)` view of it;
- buffers are allocated once per call, activations run in place (`np.tanh(z, out=z)`), and for
  SimpleRNN the projection is written straight into the output, which each step overwrites;
- masks are applied with one `np.copyto(..., where=)` per step that has a masked sample;
  go_backwards reads the input through a reversed view (no copy).

Kernels run for exact built-in cell classes (SimpleRNNCell, and StackedRNNCells of them) in
float32 or float64. The reference loop runs instead for: user-written or subclassed cells,
float16, training with dropout or recurrent dropout (the masks belong to the cell), and while a
trace recorder is attached.
"""

from unrolled.kernels._dispatch import KERNELS, run

__all__ = ["KERNELS", "run"]
