"""unrolled.activations against keras.activations (JAX backend), plus get/serialize and errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import assert_close

from unrolled import activations

# (name, extra keyword arguments). Every Keras name appears at least once; the ones that take
# arguments appear again with non-default values.
CASES = [
    ("relu", {}),
    ("relu", {"negative_slope": 0.1}),
    ("relu", {"negative_slope": 2.0}),
    ("relu", {"max_value": 6.0}),
    ("relu", {"max_value": 2.5}),
    ("relu", {"threshold": 0.5}),
    ("relu", {"threshold": -0.5, "max_value": 6}),
    ("relu", {"negative_slope": 0.3, "threshold": -0.5}),
    ("relu", {"negative_slope": 0.1, "max_value": 3.0, "threshold": 0.5}),
    ("leaky_relu", {}),
    ("leaky_relu", {"negative_slope": 0.01}),
    ("relu6", {}),
    ("softmax", {}),
    ("softmax", {"axis": 1}),
    ("softmax", {"axis": (1, 2)}),
    ("celu", {}),
    ("celu", {"alpha": 0.5}),
    ("elu", {}),
    ("elu", {"alpha": 2.0}),
    ("selu", {}),
    ("softplus", {}),
    ("softsign", {}),
    ("squareplus", {}),
    ("squareplus", {"b": 1.0}),
    ("soft_shrink", {}),
    ("soft_shrink", {"threshold": 1.0}),
    ("sparse_plus", {}),
    ("silu", {}),
    ("swish", {}),
    ("gelu", {}),
    ("gelu", {"approximate": True}),
    ("glu", {}),
    ("glu", {"axis": 1}),
    ("tanh", {}),
    ("tanh_shrink", {}),
    ("threshold", {"threshold": 0.3, "default_value": -1.0}),
    ("threshold", {"threshold": -1.0, "default_value": 0.0}),
    ("sigmoid", {}),
    ("sparse_sigmoid", {}),
    ("exponential", {}),
    ("hard_sigmoid", {}),
    ("hard_silu", {}),
    ("hard_swish", {}),
    ("hard_tanh", {}),
    ("hard_shrink", {}),
    ("hard_shrink", {"threshold": 1.0}),
    ("linear", {}),
    ("mish", {}),
    ("log_softmax", {}),
    ("log_softmax", {"axis": 0}),
    ("log_sigmoid", {}),
    ("sparsemax", {}),
    ("sparsemax", {"axis": 1}),
]

# Points where the piecewise definitions switch branch, and values far out in the tails.
SPECIAL = [0.0, 1.0, -1.0, 0.5, -0.5, 3.0, -3.0, 6.0, -6.0, 20.0, -20.0, 1e-4, -1e-4, 0.3, 2.5]


def _input(rng, shape=(3, 4, 6)):
    x = (rng.normal(size=shape) * 3).astype(np.float32)
    x.reshape(-1)[: len(SPECIAL)] = SPECIAL
    return x


def _case_id(case):
    name, kwargs = case
    return name + "".join(f"-{k}={v}" for k, v in kwargs.items())


def test_every_keras_name_is_provided_and_covered(keras):
    from keras.src.activations import ALL_OBJECTS_DICT

    keras_names = set(ALL_OBJECTS_DICT)
    assert set(activations._BY_NAME) == keras_names
    assert {name for name, _ in CASES} == keras_names
    assert keras_names <= set(activations.__all__)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_matches_keras(keras, rng, case):
    name, kwargs = case
    x = _input(rng)
    expected = np.asarray(getattr(keras.activations, name)(x, **kwargs))
    actual = getattr(activations, name)(x, **kwargs)
    assert actual.dtype == np.float32
    assert_close(actual, expected, atol=1e-6, rtol=1e-6, what=_case_id(case))


@pytest.mark.parametrize("name", sorted(activations._BY_NAME))
def test_name_and_docstring_match_keras(keras, name):
    ours = activations.get(name)
    assert ours.__name__ == keras.activations.get(name).__name__
    assert ours.__doc__ and "\n" not in ours.__doc__.strip()
    assert "=" in ours.__doc__ or name == "linear"


def _call(name, x):
    kwargs = {"threshold": 0.2, "default_value": 0.0} if name == "threshold" else {}
    return activations.get(name)(x, **kwargs)


@pytest.mark.parametrize("name", sorted(activations._BY_NAME))
def test_dtype_is_preserved(rng, name):
    x64 = _input(rng).astype(np.float64)
    out64 = _call(name, x64)
    out32 = _call(name, x64.astype(np.float32))
    assert out64.dtype == np.float64
    assert out32.dtype == np.float32
    assert out64.shape == x64.shape or name == "glu"
    assert_close(out32, out64, atol=1e-5, rtol=1e-5, what=f"{name} float32 vs float64")
    if name != "linear":  # linear returns its input untouched, as Keras's does
        assert _call(name, np.arange(-3, 3).reshape(3, 2)).dtype == np.float32
        assert _call(name, x64.astype(np.float16)).dtype == np.float16


def test_float64_keeps_double_precision():
    x = np.array([1e-9, 0.5, 2.0])
    np.testing.assert_allclose(activations.sigmoid(x), 1 / (1 + np.exp(-x)), rtol=1e-15)
    np.testing.assert_allclose(activations.tanh(x), np.tanh(x), rtol=1e-15)
    np.testing.assert_allclose(activations.gelu(x)[0], 0.5e-9, rtol=1e-8)


def test_sigmoid_and_friends_are_stable_for_large_inputs():
    x = np.array([-1000.0, -100.0, 0.0, 100.0, 1000.0], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = activations.sigmoid(x)
        ls = activations.log_sigmoid(x)
        sm = activations.softmax(x)
        sp = activations.softplus(x)
    np.testing.assert_allclose(s, [0.0, 3.7835e-44, 0.5, 1.0, 1.0], rtol=1e-4, atol=0)
    assert np.isfinite(ls[1:]).all() and ls[1] == np.float32(-100.0)
    np.testing.assert_array_equal(sm, [0, 0, 0, 0, 1])
    np.testing.assert_array_equal(sp[3:], [100.0, 1000.0])


def test_hard_sigmoid_is_the_keras3_formula():
    x = np.array([-4.0, -3.0, -1.2, 0.0, 1.2, 3.0, 4.0], dtype=np.float32)
    expected = np.clip(x / 6 + 0.5, 0, 1)
    np.testing.assert_allclose(activations.hard_sigmoid(x), expected, rtol=1e-7)
    # Keras 2's 0.2 * x + 0.5 would give 0.26 at -1.2, not 0.3.
    assert activations.hard_sigmoid(np.float32(-1.2)) == pytest.approx(0.3, abs=1e-6)


def test_aliases_are_the_same_functions():
    assert activations.get("swish") is activations.silu
    assert activations.get("hard_swish") is activations.hard_silu
    assert activations.swish.__name__ == "silu"


# ---- get / serialize --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(activations._BY_NAME))
def test_get_serialize_round_trip(keras, name):
    fn = activations.get(name)
    assert activations.serialize(fn) == keras.activations.serialize(keras.activations.get(name))
    assert activations.get(activations.serialize(fn)) is fn


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "hard_sigmoid", "relu", "linear", "swish"])
def test_get_reads_dicts_written_by_keras(keras, name):
    config = keras.saving.serialize_keras_object(keras.activations.get(name))
    assert isinstance(config, dict)
    assert activations.get(config) is activations.get(name)


def test_get_accepts_every_form():
    assert activations.get(None) is activations.linear
    assert activations.get("linear") is activations.linear
    assert activations.get("tanh") is activations.tanh

    def custom(x):
        return 2 * x

    assert activations.get(custom) is custom
    assert activations.get(np.tanh) is np.tanh
    keras_dict = {
        "module": "keras.activations",
        "class_name": "function",
        "config": "tanh",
        "registered_name": "function",
    }
    assert activations.get(keras_dict) is activations.tanh
    # The module named in the dict is never imported.
    keras_dict["module"] = "surely.not.a.module"
    assert activations.get(keras_dict) is activations.tanh
    assert activations.get({"class_name": "sigmoid", "config": None}) is activations.sigmoid


def test_serialize_custom_callable_gives_its_name():
    def my_act(x):
        return x

    assert activations.serialize(my_act) == "my_act"
    assert activations.serialize(activations.hard_swish) == "hard_silu"


# ---- errors -----------------------------------------------------------------------------------


def test_unknown_name_suggests_closest_and_lists_names():
    with pytest.raises(ValueError, match=r"Unknown activation 'tanhh'") as info:
        activations.get("tanhh")
    message = str(info.value)
    assert 'Did you mean "tanh"?' in message
    assert "`activation`" in message
    assert "Available activations:" in message and "hard_sigmoid" in message


def test_unknown_name_names_the_calling_argument():
    with pytest.raises(ValueError, match=r"`recurrent_activation`.*Did you mean \"hard_sigmoid\""):
        activations.get("hard_sigmoud", argument="recurrent_activation")


def test_names_are_case_sensitive_like_keras():
    with pytest.raises(ValueError, match=r'Did you mean "tanh"'):
        activations.get("Tanh")


@pytest.mark.parametrize("bad", [3, 2.5, ["tanh"], object()])
def test_get_rejects_other_types(bad):
    with pytest.raises(TypeError, match=r"`activation` must be an activation name.*got"):
        activations.get(bad)


def test_get_rejects_custom_function_dicts():
    config = {"module": "my.module", "class_name": "function", "config": "my_fn",
              "registered_name": "my_fn"}
    with pytest.raises(ValueError, match=r"'my_fn', which is not a Keras built-in.*pass the"):
        activations.get(config)


def test_get_rejects_other_dicts():
    with pytest.raises(ValueError, match=r"does not name a built-in activation"):
        activations.get({"class_name": "ReLU", "config": {"max_value": 6}})


def test_glu_needs_an_even_axis():
    with pytest.raises(ValueError, match=r"glu: the size of `axis` \(-1\) must be even"):
        activations.glu(np.ones((2, 3), dtype=np.float32))


def test_non_numeric_input_is_refused():
    with pytest.raises(TypeError, match=r"tanh: `x` must be a numeric array"):
        activations.tanh(np.array(["a", "b"]))


def test_serialize_rejects_non_callables():
    with pytest.raises(TypeError, match=r"expected an activation function, got 'tanh'"):
        activations.serialize("tanh")
