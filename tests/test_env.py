"""The UNROLLED_* environment variables: known values read, anything else a clear error."""

import os
import subprocess
import sys

import pytest

from unrolled import _env


@pytest.mark.parametrize("text, expected", [("1", True), ("0", False), (" 0 ", False),
                                            ("", True)])
def test_a_flag_reads_1_0_and_empty_as_unset(monkeypatch, text, expected):
    monkeypatch.setenv("UNROLLED_TEST_FLAG", text)
    assert _env.flag("UNROLLED_TEST_FLAG") is expected


def test_an_unset_flag_is_its_default(monkeypatch):
    monkeypatch.delenv("UNROLLED_TEST_FLAG", raising=False)
    assert _env.flag("UNROLLED_TEST_FLAG") is True
    assert _env.flag("UNROLLED_TEST_FLAG", default=False) is False


@pytest.mark.parametrize("text", ["false", "off", "yes", "2", "True"])
def test_a_flag_set_to_anything_else_names_the_variable_and_the_values(monkeypatch, text):
    monkeypatch.setenv("UNROLLED_TEST_FLAG", text)
    with pytest.raises(ValueError, match=rf"UNROLLED_TEST_FLAG must be 1 \(on\) or 0 \(off\), "
                                         rf"got '{text}'; set it to 1 or 0"):
        _env.flag("UNROLLED_TEST_FLAG")


def test_a_choice_takes_its_values_and_refuses_others(monkeypatch):
    allowed = ("auto", "1", "0")
    monkeypatch.setenv("UNROLLED_TEST_CHOICE", "1")
    assert _env.choice("UNROLLED_TEST_CHOICE", allowed, "auto") == "1"
    monkeypatch.setenv("UNROLLED_TEST_CHOICE", "")
    assert _env.choice("UNROLLED_TEST_CHOICE", allowed, "auto") == "auto"
    monkeypatch.setenv("UNROLLED_TEST_CHOICE", "Auto")
    with pytest.raises(ValueError, match=r"UNROLLED_TEST_CHOICE must be one of 'auto', '1', "
                                         r"'0', got 'Auto'"):
        _env.choice("UNROLLED_TEST_CHOICE", allowed, "auto")


@pytest.mark.parametrize("text, expected", [("0", 0), ("7", 7), ("", 4)])
def test_a_count_reads_whole_numbers(monkeypatch, text, expected):
    monkeypatch.setenv("UNROLLED_TEST_COUNT", text)
    assert _env.count("UNROLLED_TEST_COUNT", 4, "things") == expected


@pytest.mark.parametrize("text", ["many", "-1", "2.5"])
def test_a_count_refuses_anything_else(monkeypatch, text):
    monkeypatch.setenv("UNROLLED_TEST_COUNT", text)
    with pytest.raises(ValueError, match=r"UNROLLED_TEST_COUNT must be a whole number, 0 or "
                                         r"more \(things\), got"):
        _env.count("UNROLLED_TEST_COUNT", 4, "things")


_CALL = ("import numpy as np; from unrolled import layers; "
         "print(layers.SimpleRNN(3)(np.ones((2, 4, 1), 'float32')).shape)")


@pytest.mark.parametrize("name, text", [("UNROLLED_STEP_THREADS", "2"),
                                        ("UNROLLED_NUMBA", "false"),
                                        ("UNROLLED_KEEP_OUTPUTS", "all")])
def test_a_layer_call_with_a_misspelt_setting_says_which(name, text):
    # before, UNROLLED_STEP_THREADS=2 quietly turned row blocks off, and UNROLLED_NUMBA=false
    # left the compiled loops on
    env = {**os.environ, name: text}
    done = subprocess.run([sys.executable, "-c", _CALL], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode != 0
    assert f"ValueError: the environment variable {name} must be" in done.stderr
    assert f"got {text!r}" in done.stderr


def test_a_layer_call_with_every_setting_empty_runs_as_with_none():
    names = ["UNROLLED_STEP_THREADS", "UNROLLED_NUMBA", "UNROLLED_KEEP_OUTPUTS",
             "UNROLLED_NATIVE_BLOCKS", "UNROLLED_NUMPY_BLAS", "UNROLLED_TRAIN_KERNEL"]
    env = {**os.environ, **dict.fromkeys(names, "")}
    done = subprocess.run([sys.executable, "-c", _CALL], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str((2, 3))
