"""Reading a `.keras` zip archive without extracting it.

Only the known members are read: `config.json`, `metadata.json` and the weights
`model.weights.h5`. Nothing is extracted to disk. An archive whose member
names could escape a directory (`../x`, `/etc/x`, `C:\\x`), that repeats a name, or that encrypts a
member is refused as a whole, and every member's declared size is checked before it is read.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from typing import Any

from unrolled.saving._errors import ModelFileError

CONFIG = "config.json"
METADATA = "metadata.json"
WEIGHTS_H5 = "model.weights.h5"
WEIGHTS_NPZ = "model.weights.npz"

MAX_JSON_BYTES = 64 * 2**20
# A compressed weights member is inflated in memory; Keras itself stores it uncompressed, which
# is read in place.
MAX_INFLATED_WEIGHTS_BYTES = 2**30


def _unsafe_name(name: str) -> bool:
    if not name or "\x00" in name or "\\" in name or name.startswith("/"):
        return True
    if len(name) >= 2 and name[1] == ":":  # C:...
        return True
    return any(part == ".." for part in name.split("/"))


class KerasArchive:
    """An open `.keras` file: `config`, `metadata`, and `open_weights()` for the HDF5 member."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.where = f"'{self.path}'"
        try:
            self._zip = zipfile.ZipFile(self.path, "r")
        except zipfile.BadZipFile as error:
            raise ModelFileError(
                f"{self.where} is not a readable .keras archive ({error}). The file is truncated "
                f"or damaged; save the model again."
            ) from error
        try:
            self._members = self._check_members()
        except BaseException:
            self._zip.close()
            raise

    def _check_members(self) -> dict[str, zipfile.ZipInfo]:
        members: dict[str, zipfile.ZipInfo] = {}
        for info in self._zip.infolist():
            name = info.filename
            if _unsafe_name(name):
                raise ModelFileError(
                    f"{self.where}: the archive holds a member named {name!r}, a path that "
                    f"points outside the archive's folder. A Keras file never does; this one was "
                    f"made to attack a loader and is refused."
                )
            if name in members:
                raise ModelFileError(
                    f"{self.where}: the archive holds two members named {name!r}; a Keras file "
                    f"has each once. The file is refused."
                )
            members[name] = info
        return members

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> "KerasArchive":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def names(self) -> list[str]:
        return list(self._members)

    def has(self, name: str) -> bool:
        return name in self._members

    def _info(self, name: str) -> zipfile.ZipInfo:
        info = self._members.get(name)
        if info is None:
            raise ModelFileError(
                f"{self.where} has no '{name}'. A .keras file holds config.json, metadata.json "
                f"and model.weights.h5; found {sorted(self._members) or 'nothing'}. The file is "
                f"incomplete or not a Keras model."
            )
        if info.flag_bits & 0x1:
            raise ModelFileError(f"{self.where}: the member '{name}' is encrypted.")
        return info

    def read_bytes(self, name: str, limit: int) -> bytes:
        info = self._info(name)
        if info.file_size > limit:
            raise ModelFileError(
                f"{self.where}: the member '{name}' declares {info.file_size} bytes, more than "
                f"the {limit} allowed for it. The file is damaged or not a Keras model."
            )
        try:
            with self._zip.open(info) as f:
                data = f.read(limit + 1)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
            raise ModelFileError(
                f"{self.where}: could not read '{name}' from the archive ({error}). The file is "
                f"truncated or damaged."
            ) from error
        if len(data) > limit:
            raise ModelFileError(f"{self.where}: the member '{name}' is larger than it declares.")
        return data

    def read_json(self, name: str) -> Any:
        raw = self.read_bytes(name, MAX_JSON_BYTES)
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ModelFileError(
                f"{self.where}: '{name}' is not valid JSON ({error})."
            ) from error

    @property
    def config(self) -> dict:
        config = self.read_json(CONFIG)
        if not isinstance(config, dict):
            raise ModelFileError(
                f"{self.where}: config.json should hold a JSON object, found "
                f"{type(config).__name__}."
            )
        return config

    @property
    def metadata(self) -> dict:
        if not self.has(METADATA):
            return {}
        metadata = self.read_json(METADATA)
        return metadata if isinstance(metadata, dict) else {}

    def weights_member(self) -> str:
        if self.has(WEIGHTS_H5):
            return WEIGHTS_H5
        if self.has(WEIGHTS_NPZ):
            raise ModelFileError(
                f"{self.where} stores its weights as {WEIGHTS_NPZ}, Keras's internal npz format, "
                f"which keeps each layer's arrays in pickled objects; unrolled never unpickles "
                f"data from a file. Re-save the model with Keras's default (HDF5) weights."
            )
        if self.has("model.weights.json"):
            raise ModelFileError(
                f"{self.where} stores its weights in shards (model.weights.json), which unrolled "
                f"does not read. Re-save the model in Keras with model.save('model.keras')."
            )
        raise ModelFileError(
            f"{self.where} has no weights: expected '{WEIGHTS_H5}' in the "
            f"archive, found {sorted(self._members)}. The file is incomplete."
        )

    def open_weights_h5(self):
        """The weights member as an open read-only h5py.File (close it when done)."""
        from unrolled.saving._h5 import h5py_module

        h5py = h5py_module()
        info = self._info(WEIGHTS_H5)
        try:
            if info.compress_type == zipfile.ZIP_STORED:
                # Stored members seek cheaply: h5py reads only the parts it needs.
                handle = self._zip.open(info)
            else:
                handle = io.BytesIO(self.read_bytes(WEIGHTS_H5, MAX_INFLATED_WEIGHTS_BYTES))
            return h5py.File(handle, "r")
        except ModelFileError:
            raise
        except Exception as error:
            raise ModelFileError(
                f"{self.where}: '{WEIGHTS_H5}' is not a readable HDF5 file ({error}). The "
                f"archive is truncated or damaged."
            ) from error
