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
  go_backwards reads the input through a reversed view (no copy);
- a padded batch whose valid steps are one run a sample (padding after the data or before it,
  either direction) runs in spans of steps over only the samples valid in each, the rows sorted
  once (unrolled.kernels._runs), where the estimate says that saves time.

With Numba installed, compiled loops take over (unrolled.kernels._numba): plain loops at small
shapes, and at larger ones loops that hand the matrix products to BLAS and do the rest of each
step in one vectorized pass.

A layer keeps the plan of its last plain call (`Plan`: an array of its dtype, no mask, no
initial state, not training, not stateful) and reuses it for calls of the same shape, without
repeating the checks and the choice of kernel: at (4, 5, 1, 2) that was two thirds of a call.

Outputs of 32 MiB and more come from a few buffers kept between calls and handed out again only
once nothing refers to them (unrolled.kernels._outputs): new memory faults in page by page on
its first write, which took 15% of a SimpleRNN (256, 100, 256, 1024) call on the benchmark
machine. `release_outputs()` lets go of them; `UNROLLED_KEEP_OUTPUTS=0` turns keeping off.

With Numba, each compiled loop compiles at the first call that needs it, once per machine;
`warm_up(cells, shapes)` and `warm_up_model(model, batch_size)` (`python -m unrolled warmup`)
run those calls ahead of time.

Kernels run for exact built-in cell classes (SimpleRNNCell, LSTMCell, GRUCell, and StackedRNNCells of them) in
float32 or float64. The reference loop runs instead for: user-written or subclassed cells,
float16, training with dropout or recurrent dropout (the masks belong to the cell), and while a
trace recorder is attached.
"""

from unrolled.kernels._dispatch import KERNELS, Plan, kept_plan, plan_for, run
from unrolled.kernels._outputs import release as release_outputs
from unrolled.kernels.warmup import warm_up, warm_up_model

__all__ = ["KERNELS", "Plan", "kept_plan", "plan_for", "run", "release_outputs", "warm_up",
           "warm_up_model"]
