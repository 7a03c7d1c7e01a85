"""Atomic operations on the elements of an int64 array, for compiled loops whose threads meet.

Numba has no atomics of its own on the CPU. These are LLVM's, emitted inline into the calling
function (`intrinsic`): `load` (acquire: what the thread that stored the value wrote before it
is seen after), `add` (returns the value before), `compare_swap` (sets the element to `new`
only where it holds `expected`, and says whether it did), all sequentially consistent where
they write. Besides them, for waiting: `pause`, the CPU's hint that the thread is spinning
(x86's `pause`: it yields the core to a hyperthread sibling and keeps the spin from flooding
the memory system; elsewhere nothing), and `yield_cpu`, which gives the CPU to another thread
ready to run on it (POSIX `sched_yield`; `pause` where the C library has none). And
`thread_id`, the calling thread's kernel id (Linux's `gettid`), by which the threads of Numba's
threading layer are found (`_threads._run_native`).

Each of the atomics takes the array and an index into it; the index is not checked. Elements
that different threads write often belong on cache lines of their own (`LINE` elements apart),
or every write takes the other threads' copies of the line away.
"""

from __future__ import annotations

import platform
import sys

import llvmlite.binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.extending import intrinsic

__all__ = ["load", "add", "compare_swap", "pause", "yield_cpu", "thread_id", "LINE"]

LINE = 8  # int64 elements in a 64-byte cache line

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def _has(symbol: str) -> bool:
    # whether LLVM finds the C library's `symbol` among the process's symbols (once Numba has
    # started LLVM, as it has by the time anything compiles), as it finds libm's
    return bool(llvm.address_of_symbol(symbol))


def _has_gettid() -> bool:
    # glibc has had `gettid` since 2.30
    return sys.platform.startswith("linux") and _has("gettid")


def _int64_vector(array) -> bool:
    return isinstance(array, types.Array) and array.dtype == types.int64 and array.ndim == 1


def _pointer(context, builder, array_type, array, index):
    made = context.make_array(array_type)(context, builder, array)
    return cgutils.get_item_pointer(context, builder, array_type, made, [index],
                                    wraparound=False)


@intrinsic
def load(typingctx, array, index):
    """array[index], read atomically (acquire)."""
    if not (_int64_vector(array) and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        index = context.cast(builder, args[1], signature.args[1], types.intp)
        at = _pointer(context, builder, signature.args[0], args[0], index)
        return builder.load_atomic(at, "acquire", 8)

    return types.int64(array, index), codegen


@intrinsic
def add(typingctx, array, index, value):
    """array[index] += value atomically; the value before."""
    if not (_int64_vector(array) and isinstance(index, types.Integer)
            and isinstance(value, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        index = context.cast(builder, args[1], signature.args[1], types.intp)
        value = context.cast(builder, args[2], signature.args[2], types.int64)
        at = _pointer(context, builder, signature.args[0], args[0], index)
        return builder.atomic_rmw("add", at, value, "seq_cst")

    return types.int64(array, index, value), codegen


@intrinsic
def compare_swap(typingctx, array, index, expected, new):
    """array[index] = new if it holds `expected`, atomically; whether it did."""
    if not (_int64_vector(array) and isinstance(index, types.Integer)
            and isinstance(expected, types.Integer) and isinstance(new, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        index = context.cast(builder, args[1], signature.args[1], types.intp)
        expected = context.cast(builder, args[2], signature.args[2], types.int64)
        new = context.cast(builder, args[3], signature.args[3], types.int64)
        at = _pointer(context, builder, signature.args[0], args[0], index)
        outcome = builder.cmpxchg(at, expected, new, "seq_cst", "seq_cst")
        return builder.extract_value(outcome, 1)

    return types.boolean(array, index, expected, new), codegen


def _call(builder, name, returns=None):
    # a call of the function `name` that takes nothing (an LLVM intrinsic or the C library's)
    returns = ir.VoidType() if returns is None else returns
    function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(returns, []), name)
    return builder.call(function, [])


@intrinsic
def pause(typingctx):
    """The CPU's spin-wait hint (x86 `pause`); nothing elsewhere."""

    def codegen(context, builder, signature, args):
        if _X86:
            _call(builder, "llvm.x86.sse2.pause")
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def yield_cpu(typingctx):
    """`sched_yield()`: another thread ready to run on this CPU runs first; `pause` where the
    C library has no `sched_yield`."""

    def codegen(context, builder, signature, args):
        if sys.platform != "win32" and _has("sched_yield"):
            _call(builder, "sched_yield", ir.IntType(32))
        elif _X86:
            _call(builder, "llvm.x86.sse2.pause")
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def thread_id(typingctx):
    """The calling thread's kernel id (`gettid`), or -1 where the C library has none."""

    def codegen(context, builder, signature, args):
        if not _has_gettid():
            return ir.Constant(ir.IntType(64), -1)
        return builder.sext(_call(builder, "gettid", ir.IntType(32)), ir.IntType(64))

    return types.int64(), codegen
