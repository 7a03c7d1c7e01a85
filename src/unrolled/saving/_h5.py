"""Careful HDF5 access: metadata first, data only after its shape and dtype were checked.

h5py reads a dataset's `.shape` and `.dtype` from the file's metadata; nothing is allocated until
the data itself is read. Every array is read through `read_dataset`, which compares both with the
weight it is meant for before reading a byte, so a file that declares a huge array fails at once.
Links to other files (external links, external storage, virtual datasets) are refused: a model
file must hold its own data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from unrolled import _checks
from unrolled.saving._errors import ModelFileError

# A JSON config in an attribute, or a list of layer or weight names: generous, but bounded.
MAX_ATTR_BYTES = 64 * 2**20
MAX_NAME_COUNT = 1_000_000


def h5py_module():
    """h5py, imported on first use so that `import unrolled` stays fast."""
    try:
        import h5py
    except ImportError as error:  # pragma: no cover - h5py is a declared dependency
        raise ImportError(
            "Reading and writing Keras files needs h5py: pip install h5py"
        ) from error
    return h5py


def child(group: Any, name: str, where: str) -> Any:
    """`group[name]` if it is a hard link inside this file, else None (absent)."""
    h5py = h5py_module()
    link = group.get(name, getlink=True)
    if link is None:
        return None
    if not isinstance(link, h5py.HardLink):
        raise ModelFileError(
            f"{where}: the entry '{group.name.rstrip('/')}/{name}' is a {type(link).__name__} "
            f"to another place or file. unrolled reads only data stored in the file itself; "
            f"re-save the model with Keras."
        )
    return group[name]


def get_path(root: Any, path: str, where: str) -> Any:
    """Follow `a/b/c` from `root`, one hard link at a time; None when a part is missing."""
    node = root
    for part in [p for p in path.split("/") if p]:
        h5py = h5py_module()
        if not isinstance(node, h5py.Group):
            return None
        node = child(node, part, where)
        if node is None:
            return None
    return node


def _attr_id(obj: Any, name: str):
    h5py = h5py_module()
    if name not in obj.attrs:
        return None
    return h5py.h5a.open(obj.id, name.encode("utf-8"))


def _storage_size(aid) -> int:
    try:
        return int(aid.get_storage_size())
    except RuntimeError:  # HDF5 reports an empty attribute's size as an error
        return 0


def attr_text(obj: Any, name: str, where: str) -> str | None:
    """A string attribute (bytes decoded as UTF-8); None when absent. Its size is checked first."""
    aid = _attr_id(obj, name)
    if aid is None:
        return None
    if _storage_size(aid) > MAX_ATTR_BYTES:
        raise ModelFileError(
            f"{where}: the attribute '{name}' declares {_storage_size(aid)} bytes, more than "
            f"the {MAX_ATTR_BYTES} a model file needs. The file is damaged or not a Keras file."
        )
    value = obj.attrs[name]
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if not isinstance(value, str):
        raise ModelFileError(
            f"{where}: the attribute '{name}' should be a string, found {type(value).__name__}."
        )
    return value


def attr_names(obj: Any, name: str, where: str) -> list[str] | None:
    """A list-of-strings attribute such as `layer_names`, joining Keras's chunks `name0, name1..`.

    Keras splits an attribute too big for one HDF5 header into `layer_names0`, `layer_names1`, ...
    Returns None when neither form is present.
    """
    if name in obj.attrs:
        chunks = [name]
    else:
        chunks = []
        while f"{name}{len(chunks)}" in obj.attrs:
            chunks.append(f"{name}{len(chunks)}")
        if not chunks:
            return None
    names: list[str] = []
    for chunk in chunks:
        aid = _attr_id(obj, chunk)
        count = int(np.prod(aid.shape)) if aid.shape else 1
        if count > MAX_NAME_COUNT or _storage_size(aid) > MAX_ATTR_BYTES:
            raise ModelFileError(
                f"{where}: the attribute '{chunk}' declares {count} entries; the file is damaged "
                f"or not a Keras file."
            )
        values = np.asarray(obj.attrs[chunk]).reshape(-1)
        for value in values:
            if isinstance(value, bytes):
                value = value.decode("utf-8")
            if not isinstance(value, str):
                if values.dtype.kind == "f" and values.size == 0:
                    continue
                raise ModelFileError(
                    f"{where}: the attribute '{chunk}' should list names, found {value!r}."
                )
            names.append(value)
    return names


def check_dataset(dataset: Any, shape: tuple, what: str, where: str) -> None:
    """Refuse a dataset unless it is plain floats of exactly `shape`, stored in this file.

    Only metadata is consulted: nothing is read or allocated here.
    """
    h5py = h5py_module()
    if not isinstance(dataset, h5py.Dataset):
        raise ModelFileError(
            f"{where}: expected an array for {what} at '{getattr(dataset, 'name', '?')}', found "
            f"a group. The file's layout does not match the model."
        )
    found = tuple(dataset.shape) if dataset.shape is not None else None
    if found != tuple(shape):
        raise ModelFileError(
            f"{where}: {what} needs an array of shape {_checks.shape_str(tuple(shape))}, but the "
            f"file declares {_checks.shape_str(found) if found is not None else 'no shape'} at "
            f"'{dataset.name}'. The file was saved from a different model (other units, input "
            f"size or layer order); build the model that matches it, or use load_model."
        )
    if dataset.dtype.kind != "f" or dataset.dtype.itemsize > 8:
        raise ModelFileError(
            f"{where}: {what} at '{dataset.name}' has dtype {dataset.dtype}; expected floats "
            f"(float16, float32 or float64)."
        )
    if dataset.is_virtual or dataset.external:
        raise ModelFileError(
            f"{where}: {what} at '{dataset.name}' keeps its data outside the file (external or "
            f"virtual storage), which unrolled does not follow. Re-save the model with Keras."
        )


def read_dataset(dataset: Any, shape: tuple, what: str, where: str) -> np.ndarray:
    """The array in `dataset`, after `check_dataset`."""
    check_dataset(dataset, shape, what, where)
    try:
        return np.asarray(dataset[()])
    except Exception as error:  # h5py raises OSError/KeyError/... for damaged data
        raise ModelFileError(
            f"{where}: could not read {what} at '{dataset.name}': {error}. The file is damaged."
        ) from error


def numbered_keys(group: Any, where: str) -> list[str]:
    """The keys `"0", "1", ...` of a Keras `vars` group, in numeric order (not "0, 1, 10, 2")."""
    keys = list(group.keys())
    bad = [k for k in keys if not k.isdigit()]
    if bad:
        raise ModelFileError(
            f"{where}: the weights group '{group.name}' holds entries {bad[:5]} where Keras writes "
            f"only numbered arrays '0', '1', ... The file is not a Keras weights file."
        )
    return sorted(keys, key=int)
