"""Damaged and hostile files: each fails with a clear error, imports and runs nothing, allocates
nothing big, and writes nothing.

The base files are made by unrolled itself (a small LSTM model), then taken apart and rebuilt
with zipfile / h5py. No test needs Keras.
"""

from __future__ import annotations

import base64
import io
import json
import marshal
import os
import sys
import time
import tracemalloc
import zipfile

import h5py
import numpy as np
import pytest

import unrolled
from unrolled import layers
from unrolled.saving import ModelFileError


@pytest.fixture
def good(tmp_path):
    """A valid .keras file and the model it came from."""
    model = unrolled.Sequential([unrolled.Input((5, 3)), layers.LSTM(4), layers.Dense(2)])
    path = tmp_path / "good.keras"
    model.save(path)
    return path, model


def _members(path):
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def _write_zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _listing(folder):
    return sorted(os.listdir(folder))


def _fails(path, *patterns, loader=unrolled.load_model):
    """Loading `path` raises ModelFileError whose message holds every pattern; nothing written."""
    folder = os.path.dirname(path)
    before = _listing(folder)
    with pytest.raises(ModelFileError) as info:
        loader(path)
    message = str(info.value)
    for pattern in patterns:
        assert pattern in message, f"{pattern!r} not in error: {message}"
    assert _listing(folder) == before, "loading a bad file wrote files"
    return message


# ---- damaged files ------------------------------------------------------------------------------


def test_truncated_archive(good, tmp_path):
    path, _ = good
    data = path.read_bytes()
    cut = tmp_path / "cut.keras"
    cut.write_bytes(data[: len(data) // 2])
    _fails(cut, "truncated or damaged")


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.keras"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    _fails(path, "neither a .keras archive", "nor an HDF5")


def test_truncated_h5(good, tmp_path):
    path, model = good
    whole = tmp_path / "w.weights.h5"
    model.save_weights(whole)
    data = whole.read_bytes()
    cut = tmp_path / "cut.weights.h5"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelFileError, match="truncated or damaged"):
        model.load_weights(cut)


def test_missing_config(good, tmp_path):
    members = _members(good[0])
    del members["config.json"]
    _fails(_write_zip(tmp_path / "noconfig.keras", members), "has no 'config.json'")


def test_missing_weights(good, tmp_path):
    members = _members(good[0])
    del members["model.weights.h5"]
    _fails(_write_zip(tmp_path / "noweights.keras", members), "has no weights",
           "model.weights.h5")


def test_config_not_json(good, tmp_path):
    members = _members(good[0])
    members["config.json"] = b"{not json"
    _fails(_write_zip(tmp_path / "bad.keras", members), "config.json' is not valid JSON")


def test_npz_weights_are_refused_not_unpickled(good, tmp_path):
    members = _members(good[0])
    members["model.weights.npz"] = members.pop("model.weights.h5")
    _fails(_write_zip(tmp_path / "npz.keras", members), "never unpickles")


# ---- wrong weights -------------------------------------------------------------------------------


def _rewrite_weights(members, edit):
    buffer = io.BytesIO(members["model.weights.h5"])
    with h5py.File(buffer, "a") as f:
        edit(f)
    members["model.weights.h5"] = buffer.getvalue()
    return members


def test_wrong_dataset_shape(good, tmp_path):
    def edit(f):
        del f["layers/lstm/cell/vars/1"]
        f["layers/lstm/cell/vars"].create_dataset("1", data=np.zeros((4, 12), "float32"))

    members = _rewrite_weights(_members(good[0]), edit)
    _fails(_write_zip(tmp_path / "shape.keras", members),
           "recurrent_kernel", "(4, 16)", "declares (4, 12)", "lstm")


def test_wrong_dataset_dtype(good, tmp_path):
    def edit(f):
        del f["layers/dense/vars/1"]
        f["layers/dense/vars"].create_dataset("1", data=np.array([b"ab", b"cd"]))

    members = _rewrite_weights(_members(good[0]), edit)
    _fails(_write_zip(tmp_path / "dtype.keras", members), "expected floats")


def test_missing_layer_group(good, tmp_path):
    members = _rewrite_weights(_members(good[0]), lambda f: f.__delitem__("layers/dense"))
    _fails(_write_zip(tmp_path / "nogroup.keras", members),
           "no weights for layer", "'layers/dense/vars'")


def test_huge_declared_dataset_fails_fast_without_allocating(good, tmp_path):
    """CVE-2026-0897's shape: a tiny file declaring a 4 TB array. Only metadata is consulted."""
    def edit(f):
        del f["layers/lstm/cell/vars/0"]
        f["layers/lstm/cell/vars"].create_dataset(
            "0", shape=(2**20, 2**20), dtype="float32", chunks=(1, 1024), fillvalue=1.0)

    members = _rewrite_weights(_members(good[0]), edit)
    path = _write_zip(tmp_path / "huge.keras", members)
    assert path.stat().st_size < 200_000
    tracemalloc.start()
    start = time.perf_counter()
    try:
        _fails(path, "(1048576, 1048576)", "(3, 16)")
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 5.0
    assert peak < 50 * 2**20, f"loading allocated {peak / 2**20:.0f} MiB"


def test_huge_declared_dataset_in_legacy_h5(good, tmp_path):
    _, model = good
    path = tmp_path / "huge.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"lstm", b"dense"])
        for name, shapes in (("lstm", [(2**40,), (4, 16), (16,)]), ("dense", [(4, 2), (2,)])):
            group = f.create_group(name)
            names = [f"{name}/w{k}:0".encode() for k in range(len(shapes))]
            group.attrs["weight_names"] = np.array(names)
            for weight_name, shape in zip(names, shapes):
                group.create_dataset(weight_name.decode(), shape=shape, dtype="float32",
                                     chunks=(min(shape[0], 1024),) + shape[1:], fillvalue=0.5)
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match=r"declares \(1099511627776,\)"):
            model.load_weights(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20


def test_external_link_is_not_followed(good, tmp_path):
    secret = tmp_path / "secret.h5"
    with h5py.File(secret, "w") as f:
        f.create_dataset("k", data=np.ones((2,), "float32"))

    def edit(f):
        del f["layers/dense/vars/1"]
        f["layers/dense/vars/1"] = h5py.ExternalLink(str(secret), "/k")

    members = _rewrite_weights(_members(good[0]), edit)
    _fails(_write_zip(tmp_path / "link.keras", members), "ExternalLink", "reads only data")


# ---- archive tricks -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../evil", "/etc/evil", "assets/../../evil", "C:\\evil"])
def test_member_path_escaping_the_archive(good, tmp_path, name):
    members = _members(good[0])
    members[name] = b"payload"
    path = _write_zip(tmp_path / "escape.keras", members)
    _fails(path, "outside the archive", repr(name))
    assert not (tmp_path.parent / "evil").exists()


def test_duplicate_member(good, tmp_path):
    members = _members(good[0])
    path = tmp_path / "dup.keras"
    with pytest.warns(UserWarning, match="Duplicate name"):
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in members.items():
                zf.writestr(name, data)
            zf.writestr("config.json", b'{"class_name": "Sequential"}')
    _fails(path, "two members named 'config.json'")


def test_oversized_member_is_refused_before_reading(good, tmp_path, monkeypatch):
    from unrolled.saving import _archive

    monkeypatch.setattr(_archive, "MAX_JSON_BYTES", 100)
    _fails(good[0], "'config.json' declares", "more than the 100")


# ---- configs that would run or import code ------------------------------------------------------


def _with_config(good, tmp_path, name, edit):
    members = _members(good[0])
    config = json.loads(members["config.json"])
    edit(config)
    members["config.json"] = json.dumps(config).encode()
    return _write_zip(tmp_path / name, members)


def test_unknown_class_names_the_layer_and_what_is_supported(good, tmp_path):
    def edit(config):
        config["config"]["layers"][1]["class_name"] = "Conv9D"

    message = _fails(_with_config(good, tmp_path, "unknown.keras", edit),
                     "'Conv9D'", "lstm", "Supported:")
    assert "LSTM" in message and "Dense" in message


def test_keras_3_lambda_layer(good, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(marshal, "loads", lambda *a: calls.append(a))
    code = base64.b64encode(marshal.dumps(compile("1", "x", "eval"))).decode()

    def edit(config):
        config["config"]["layers"].insert(2, {
            "module": "keras.layers", "class_name": "Lambda", "registered_name": None,
            "config": {"name": "sneaky", "function": {
                "class_name": "__lambda__", "config": {"code": code, "defaults": None,
                                                       "closure": None}}}})

    _fails(_with_config(good, tmp_path, "lambda.keras", edit), "'sneaky'", "Lambda",
           "never runs code")
    assert calls == []


def test_keras_3_lambda_activation(good, tmp_path):
    def edit(config):
        config["config"]["layers"][2]["config"]["activation"] = {
            "class_name": "__lambda__", "config": {"code": "AAAA", "defaults": None}}

    _fails(_with_config(good, tmp_path, "lambda_act.keras", edit), "__lambda__",
           "never runs code")


def test_legacy_h5_lambda(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(marshal, "loads", lambda *a: calls.append(a))
    blob = base64.b64encode(marshal.dumps(compile("1", "x", "eval"))).decode()
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 3], "name": "i"}},
        {"class_name": "Lambda", "config": {"name": "old_lambda", "function": [blob, None, None],
                                            "function_type": "lambda"}}]}}
    path = tmp_path / "lambda.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
        f.attrs["keras_version"] = "2.15.0"
        f.create_group("model_weights").attrs["layer_names"] = np.array([b"old_lambda"])
    _fails(path, "'old_lambda'", "Lambda", "never runs code")
    assert calls == []


def test_module_os_class_system_is_neither_imported_nor_called(good, tmp_path, monkeypatch):
    called = []
    monkeypatch.setattr(os, "system", lambda *a: called.append(a))

    def edit(config):
        config["config"]["layers"][1] = {"module": "os", "class_name": "system",
                                         "config": {"command": "touch pwned"},
                                         "registered_name": None}

    _fails(_with_config(good, tmp_path, "os.keras", edit), "'os'", "'system'",
           "never imports")
    assert called == []
    assert not (tmp_path / "pwned").exists()


def test_unknown_module_is_not_imported(good, tmp_path):
    module = "unrolled_test_evil_module"
    (tmp_path / f"{module}.py").write_text("raise SystemExit('imported!')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        def edit(config):
            config["config"]["layers"][2] = {"module": module, "class_name": "Dense",
                                             "config": {"units": 2}, "registered_name": None}

        _fails(_with_config(good, tmp_path, "module.keras", edit), repr(module))
    finally:
        sys.path.remove(str(tmp_path))
    assert module not in sys.modules


def test_top_level_model_module_is_checked_too(good, tmp_path):
    def edit(config):
        config["module"] = "subprocess"
        config["class_name"] = "Popen"

    _fails(_with_config(good, tmp_path, "top.keras", edit), "'subprocess'")


def test_custom_registered_object(good, tmp_path):
    def edit(config):
        config["config"]["layers"][2]["registered_name"] = "evilpkg>Dense"

    _fails(_with_config(good, tmp_path, "custom.keras", edit), "evilpkg>Dense")


def test_weights_only_h5_through_load_model_says_what_to_do(good, tmp_path):
    _, model = good
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"lstm"])
    _fails(path, "weights only", "load_weights")


def test_folder_and_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="SavedModel"):
        unrolled.load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="No such file"):
        unrolled.load_model(tmp_path / "nope.keras")


def test_weights_the_walk_cannot_place_are_an_error_not_silence(good, tmp_path, monkeypatch):
    from unrolled.saving import _weights

    _, model = good
    model.save_weights(tmp_path / "w.weights.h5")
    # Pretend the walk does not know an RNN's `cell`: the LSTM's weights have no place.
    monkeypatch.setattr(_weights, "_SUB_ATTRS", ("backward_layer", "cells", "forward_layer",
                                                 "layer"))
    before = [w.numpy() for w in model.weights]
    with pytest.raises(ModelFileError, match="cannot tell where the file keeps 3"):
        model.load_weights(tmp_path / "w.weights.h5")
    for old, weight in zip(before, model.weights):
        np.testing.assert_array_equal(weight.value, old)
