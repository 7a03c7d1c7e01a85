"""512-bit vectors for one compiled function, on CPUs with AVX-512.

LLVM's X86 backend, for most CPUs with AVX-512, prefers 256-bit vectors: its vectorizers build
no wider vectors, and 512-bit registers are used only where code asks for them. The panel
products (`_numba_panels`) are fastest on such a CPU with 512-bit vectors: two registers hold a
row of a 32-column panel, and 16 of the 32 registers the sums of a block of 8 rows (185-212
GFLOP/s on one thread at the grid's step shapes, against 93-128 for the 256-bit products and
OpenBLAS's 104-166; RESULTS.md, round 19). The forward loops' step arithmetic asks for them
too: 0.86-0.96 of a layer's time. Clang's `-mprefer-vector-width=512` sets two attributes on
every function; Numba has no such option, so `prefer_512_bit_vectors()`, called first in a
compiled function, sets them on the function that calls it and emits no instruction. Each
number's arithmetic is the same in a vector of either width, so the results are the same to
the bit.

`available()` says whether the host has AVX-512 (Numba's target CPU features, which
NUMBA_CPU_FEATURES overrides).
"""

from __future__ import annotations

from numba import types
from numba.core.extending import intrinsic

__all__ = ["prefer_512_bit_vectors", "available"]

# LLVM's function attributes (written as clang writes them). llvmlite's attribute set accepts
# only the attributes it knows, so these go into the set itself (a `set`, written out as given);
# were that to change, the functions would compile without them: slower, the same numbers.
_ATTRIBUTES = ('"prefer-vector-width"="512"', '"min-legal-vector-width"="512"')


@intrinsic
def prefer_512_bit_vectors(typingctx):
    def codegen(context, builder, signature, args):
        if available():  # elsewhere the attributes would change nothing; leave them off
            attributes = builder.function.attributes
            if isinstance(attributes, set):
                for attribute in _ATTRIBUTES:
                    set.add(attributes, attribute)
        return context.get_dummy_value()

    return types.none(), codegen


_available: bool | None = None


def available() -> bool:
    """Whether the CPU Numba compiles for has AVX-512F (and so 32 registers of 512 bits); False
    where LLVM cannot say."""
    global _available
    if _available is None:
        from numba.core import config

        features = config.CPU_FEATURES
        if features is None:
            try:
                import llvmlite.binding as llvm

                features = llvm.get_host_cpu_features().flatten()
            except (RuntimeError, OSError):   # LLVM knows no feature list for this host
                features = ""
        _available = "+avx512f" in features.split(",")
    return _available
