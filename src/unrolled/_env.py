"""The `UNROLLED_*` environment variables, read one way.

An empty value counts as unset, as `VAR= python ...` is the shell's way of clearing one. Any
other value must be one the variable knows: a misspelt setting raises, naming the variable,
what it takes and what it got, rather than quietly meaning something else (before, any value
but `0` turned a flag on, and `UNROLLED_STEP_THREADS=2` turned row blocks off).
"""

from __future__ import annotations

import os

__all__ = ["flag", "choice", "count"]


def _text(name: str) -> str | None:
    text = os.environ.get(name, "").strip()
    return text or None


def flag(name: str, default: bool = True) -> bool:
    """`name` as an on/off switch: `1` on, `0` off, unset or empty `default`."""
    text = _text(name)
    if text is None:
        return default
    if text not in ("0", "1"):
        raise ValueError(f"the environment variable {name} must be 1 (on) or 0 (off), got "
                         f"{text!r}; set it to 1 or 0, or unset it for the default "
                         f"({int(default)})")
    return text == "1"


def choice(name: str, allowed: tuple[str, ...], default: str) -> str:
    """`name` as one of `allowed`; unset or empty `default`."""
    text = _text(name)
    if text is None:
        return default
    if text not in allowed:
        shown = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"the environment variable {name} must be one of {shown}, got "
                         f"{text!r}; set it to one of those, or unset it for the default "
                         f"({default!r})")
    return text


def count(name: str, default: int, what: str) -> int:
    """`name` as a whole number, 0 or more (`what` says what it counts); unset or empty
    `default`."""
    text = _text(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"the environment variable {name} must be a whole number, 0 or more "
                         f"({what}), got {text!r}; set it to e.g. {default}, or unset it for "
                         f"the default ({default})")
    return value
