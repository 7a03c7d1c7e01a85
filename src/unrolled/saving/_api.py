"""load_model, save_model, save_weights, load_weights: Keras files in and out, no TensorFlow.

Formats read:
    .keras       Keras 3's zip archive (config.json, metadata.json, model.weights.h5), also as
                 written by tf.keras 2.13+.
    .h5 / .hdf5  legacy HDF5 with a `model_config` attribute, written by tf.keras 2.x, standalone
                 Keras 2 or Keras 3 (`model.save("m.h5")`).
    .weights.h5  weights only, Keras 3 layout (`load_weights`); legacy weights-only .h5 as well.

Formats written: `.keras` (save_model) and `.weights.h5` (save_weights), in Keras 3's layout, so
that Keras 3 loads them. A write goes to a temporary file in the same folder that replaces the
target only when complete: a failed save leaves no file behind and the old file untouched.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from unrolled.saving._errors import ModelFileError

# zipfile, json, tempfile, h5py and the readers below are imported when first used, so that
# `import unrolled` stays fast.

__all__ = ["load_model", "save_model", "save_weights", "load_weights", "SavingMixin"]

# The Keras release whose file layout unrolled writes (and checks against in its tests).
KERAS_FORMAT_VERSION = "3.15.1"

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


# ---- helpers -------------------------------------------------------------------------------------


def _fspath(path: Any, argument: str) -> str:
    try:
        return os.fspath(path)
    except TypeError:
        raise TypeError(
            f"`{argument}` must be a file path (str or pathlib.Path), got "
            f"{type(path).__name__}."
        ) from None


def _sniff(path: str) -> str:
    """'zip' or 'hdf5', from the file's first bytes (not its name)."""
    from unrolled.saving import _h5

    if os.path.isdir(path):
        raise ModelFileError(
            f"'{path}' is a folder. A TensorFlow SavedModel folder cannot be read without "
            f"TensorFlow; in Keras, save the model as 'model.keras' and load that file."
        )
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such file: '{path}'.")
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:4] in _ZIP_MAGIC:
        return "zip"
    if head == _HDF5_MAGIC:
        return "hdf5"
    if _h5.h5py_module().is_hdf5(path):  # a user block before the HDF5 signature
        return "hdf5"
    raise ModelFileError(
        f"'{path}' is neither a .keras archive (zip) nor an HDF5 (.h5) file: it starts with "
        f"{head!r}. The file is damaged or in another format."
    )


def _open_h5(path: str):
    from unrolled.saving import _h5

    h5py = _h5.h5py_module()
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise ModelFileError(
            f"'{path}' could not be opened as HDF5 ({error}). The file is truncated or damaged."
        ) from error


def _build(config: dict, where: str, custom_objects: dict | None) -> Any:
    """The model `config` describes, through unrolled's registry of classes."""
    try:
        from unrolled.layers import deserialize
    except ImportError:  # pragma: no cover - the models package provides it
        from unrolled.layers._serialization import deserialize_layer as deserialize
    try:
        if custom_objects:
            return deserialize(config, custom_objects=custom_objects)
        return deserialize(config)
    except ModelFileError:
        raise
    except (ValueError, TypeError, KeyError, IndexError) as error:
        raise ModelFileError(f"{where}: cannot rebuild the model from its config: {error}") from error


def _atomic_write(path: str, write: Callable[[str], None], overwrite: bool) -> None:
    """Call write(tmp_path), then move tmp_path onto `path`; remove it on any failure."""
    import tempfile

    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"'{path}' exists; pass overwrite=True to replace it.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Cannot save to '{path}': the folder '{folder}' does not exist.")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.",
                               suffix=".partial")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def _check_allowed(config: dict, where: str, custom_objects: dict | None) -> None:
    from unrolled.saving import _config

    _config.check_config(config, where, allowed=set(custom_objects or ()))


# ---- load_model ----------------------------------------------------------------------------------


def load_model(filepath: Any, custom_objects: dict | None = None, compile: bool = True,
               safe_mode: bool = True) -> Any:
    """Load a model saved by Keras (3, or tf.keras 2.x) or by unrolled, without TensorFlow.

    Nothing in the file is executed: classes are looked up by name in unrolled's own registry,
    a `module` the file names is never imported, Lambda layers are refused, and every array's
    shape and dtype is checked against the layer before it is read.

    Args:
        filepath: a `.keras` archive or a legacy `.h5` / `.hdf5` file (the format is recognised
            from the content, not the name).
        custom_objects: optional `{class_name: class}` for your own layer classes.
        compile: accepted for Keras compatibility; the training configuration in the file is not
            restored.
        safe_mode: accepted for Keras compatibility. unrolled is always safe: there is no way to
            load a Lambda's code.

    Returns:
        The model (Sequential or functional Model), with its weights loaded.

    Raises:
        ModelFileError (a ValueError) for a damaged, hostile or unsupported file, naming what
        was found and what to do; FileNotFoundError when there is no such file.
    """
    path = _fspath(filepath, "filepath")
    kind = _sniff(path)
    if kind == "zip":
        return _load_keras_archive(path, custom_objects)
    return _load_legacy_h5(path, custom_objects)


def _load_keras_archive(path: str, custom_objects: dict | None) -> Any:
    from unrolled.saving import _archive, _config, _weights

    where = f"'{path}'"
    with _archive.KerasArchive(path) as archive:
        config = archive.config
        version = archive.metadata.get("keras_version")
        _check_allowed(config, where, custom_objects)
        archive.weights_member()  # fail on missing weights before building anything
        if (_config.keras_major(version) or 3) < 3:
            config = _config.normalize_legacy(config, version, where)
        model = _build(config, where, custom_objects)
        h5file = archive.open_weights_h5()
        try:
            plan = _weights.plan_keras3(model, h5file, where)
        finally:
            h5file.close()
    _weights.apply(plan)
    return model


def _load_legacy_h5(path: str, custom_objects: dict | None) -> Any:
    import json

    from unrolled.saving import _config, _h5, _weights

    where = f"'{path}'"
    with _open_h5(path) as h5file:
        text = _h5.attr_text(h5file, "model_config", where)
        if text is None:
            raise ModelFileError(
                f"{where} holds weights only (no 'model_config' attribute), so the model cannot "
                f"be rebuilt from it. Build the model in code, then call "
                f"model.load_weights('{path}')."
            )
        try:
            config = json.loads(text)
        except json.JSONDecodeError as error:
            raise ModelFileError(f"{where}: 'model_config' is not valid JSON ({error}).") from error
        _check_allowed(config, where, custom_objects)
        group = _h5.child(h5file, "model_weights", where)
        if group is None:
            raise ModelFileError(
                f"{where} has a model config but no 'model_weights' group: the file was saved "
                f"without weights or is damaged."
            )
        version = (_h5.attr_text(h5file, "keras_version", where)
                   or _h5.attr_text(group, "keras_version", where))
        config = _config.normalize_legacy(config, version, where)
        model = _build(config, where, custom_objects)
        plan = _weights.plan_legacy(model, group, where)
    _weights.apply(plan)
    return model


# ---- weights -------------------------------------------------------------------------------------


def load_weights(model: Any, filepath: Any) -> None:
    """Load weights into a built model from `.weights.h5`, legacy `.h5`, or a `.keras` archive.

    Keras 3 files are matched by structure (layer class and position), legacy .h5 files by the
    order of the layers that have weights, as Keras does. All arrays are read and checked first;
    the model changes only if every one of them fits.
    """
    from unrolled.saving import _archive, _h5, _weights

    path = _fspath(filepath, "filepath")
    where = f"'{path}'"
    _require_weights(model, "load_weights")
    if _sniff(path) == "zip":
        with _archive.KerasArchive(path) as archive:
            archive.weights_member()
            h5file = archive.open_weights_h5()
            try:
                plan = _weights.plan_keras3(model, h5file, where)
            finally:
                h5file.close()
    else:
        with _open_h5(path) as h5file:
            legacy = _h5.child(h5file, "model_weights", where)
            if legacy is not None:
                plan = _weights.plan_legacy(model, legacy, where)
            elif _h5.attr_names(h5file, "layer_names", where) is not None:
                plan = _weights.plan_legacy(model, h5file, where)
            elif any(k in h5file for k in ("layers", "vars", "_layer_checkpoint_dependencies")):
                plan = _weights.plan_keras3(model, h5file, where)
            else:
                raise ModelFileError(
                    f"{where} is an HDF5 file but not a Keras weights file: it has neither a "
                    f"'layers' group (Keras 3) nor a 'layer_names' attribute (legacy .h5)."
                )
    _weights.apply(plan)


def _require_weights(model: Any, what: str) -> None:
    if not hasattr(model, "weights"):
        raise TypeError(f"{what} needs an unrolled model or layer, got {type(model).__name__}.")
    if not model.weights:
        raise ValueError(
            f"{what}: the model has no weights yet. Build it first (give it an Input with a "
            f"shape, or call it on data once), then {what}."
        )


def save_weights(model: Any, filepath: Any, overwrite: bool = True) -> None:
    """Write the model's weights to `filepath` (ending in `.weights.h5`) in Keras 3's layout."""
    from unrolled.saving import _h5, _weights

    path = _fspath(filepath, "filepath")
    if not path.endswith(".weights.h5"):
        raise ValueError(
            f"save_weights: the file name must end in '.weights.h5' (as in Keras 3), got "
            f"'{path}'. For a whole model use model.save('name.keras')."
        )
    _require_weights(model, "save_weights")
    h5py = _h5.h5py_module()

    def write(tmp: str) -> None:
        with h5py.File(tmp, "w") as h5file:
            _weights.write_keras3(model, h5file)

    _atomic_write(path, write, overwrite)


# ---- save_model ----------------------------------------------------------------------------------


def _serialize(model: Any) -> dict:
    try:
        from unrolled.layers import serialize
    except ImportError:  # pragma: no cover - the models package provides it
        from unrolled.layers._serialization import serialize_layer as serialize
    return serialize(model)


def save_model(model: Any, filepath: Any, overwrite: bool = True) -> None:
    """Save `model` as a `.keras` archive that Keras 3 loads (`keras.saving.load_model`).

    The archive holds config.json (Keras 3's config format), metadata.json and model.weights.h5
    (Keras 3's weight layout). Written to a temporary file first: on failure nothing is left.
    """
    import datetime
    import io
    import json
    import warnings
    import zipfile

    from unrolled.saving import _archive, _config, _h5, _weights

    path = _fspath(filepath, "filepath")
    if not path.endswith(".keras"):
        raise ValueError(
            f"save: unrolled writes Keras 3's '.keras' format; the file name must end in "
            f"'.keras', got '{path}'. (Legacy .h5 is read but not written; for weights only "
            f"use save_weights('name.weights.h5').)"
        )
    _require_weights(model, "save")
    config = _serialize(model)
    if _config.KERAS2_HARD_SIGMOID in json.dumps(config):
        warnings.warn(
            f"save: the model uses Keras 2's hard_sigmoid ('{_config.KERAS2_HARD_SIGMOID}', "
            f"0.2x + 0.5), which Keras 3 does not have: unrolled will load '{path}', Keras 3 "
            f"will not.", UserWarning, stacklevel=3)
    config_json = json.dumps(config)
    metadata_json = json.dumps({
        "keras_version": KERAS_FORMAT_VERSION,
        "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
    })
    h5py = _h5.h5py_module()
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5file:
        _weights.write_keras3(model, h5file)

    def write(tmp: str) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr(_archive.METADATA, metadata_json)
            zf.writestr(_archive.CONFIG, config_json)
            zf.writestr(_archive.WEIGHTS_H5, buffer.getvalue())

    _atomic_write(path, write, overwrite)


class SavingMixin:
    """`save`, `save_weights` and `load_weights` methods for models (Keras's names and files)."""

    def save(self, filepath: Any, overwrite: bool = True, **kwargs: Any) -> None:
        """Save the whole model as a `.keras` archive that Keras 3 can load."""
        if kwargs:
            raise TypeError(f"save got unexpected keyword argument(s) {sorted(kwargs)}.")
        save_model(self, filepath, overwrite=overwrite)

    def save_weights(self, filepath: Any, overwrite: bool = True) -> None:
        """Save the weights as a Keras 3 `.weights.h5` file."""
        save_weights(self, filepath, overwrite=overwrite)

    def load_weights(self, filepath: Any) -> None:
        """Load weights from `.weights.h5`, a legacy `.h5`, or a `.keras` archive."""
        load_weights(self, filepath)
