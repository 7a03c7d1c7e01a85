"""Lazy attributes for unrolled's packages (PEP 562), keeping `import unrolled` fast.

A package's `__init__` lists its public names and where each one lives; the module holding a
name is imported on first access (`unrolled.layers.LSTM`, `from unrolled.layers import LSTM`,
`from unrolled import *`), and the value is then cached in the package's namespace, so later
accesses are plain attribute lookups. `dir(package)` lists every lazy name.
"""

from __future__ import annotations

import importlib
import sys


def attach(package: str, namespace: dict[str, object], names: dict[str, str],
           submodules: tuple[str, ...] = ()) -> tuple:
    """`(__getattr__, __dir__)` for the package `package`.

    Args:
        package: the package's dotted name (its `__name__`).
        namespace: the package's `globals()`; resolved values are cached there.
        names: public name -> "module.path:attribute", or "module.path" for a module itself.
        submodules: names of submodules that resolve to themselves on access (as they did when
            the package imported them eagerly), e.g. `unrolled.layers.lstm`.
    """
    def __getattr__(name: str) -> object:
        target = names.get(name)
        if target is None:
            if name in submodules:
                return importlib.import_module(f"{package}.{name}")
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module_name, _, attribute = target.partition(":")
        # The import statement's machinery (rather than importlib.import_module), so that
        # `python -X importtime` reports these imports too.
        __import__(module_name)
        value = sys.modules[module_name]
        if attribute:
            value = getattr(value, attribute)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names) | set(submodules))

    return __getattr__, __dir__
