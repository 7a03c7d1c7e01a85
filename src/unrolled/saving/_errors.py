"""The one error type every reader and writer in unrolled.saving raises for a bad file."""

from __future__ import annotations

__all__ = ["ModelFileError"]


class ModelFileError(ValueError):
    """A model or weights file that unrolled cannot (or will not) read or write.

    A subclass of ValueError, so `except ValueError` also catches it. The message names the file,
    what was found, what was expected, and what to do about it.
    """
