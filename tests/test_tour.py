"""`python -m unrolled tour` runs, checks its own equations, and writes its files."""

import subprocess
import sys

import numpy as np

from unrolled import tour
from unrolled.__main__ import main


def test_tour_equations_agree_and_files_are_written(tmp_path):
    printed = []
    diffs = tour.run(str(tmp_path), echo=printed.append, figures=False)
    assert set(diffs) == {"cell", "simple_rnn", "stacked", "rnn"}
    assert max(diffs.values()) < 1e-6
    text = (tmp_path / "tour.txt").read_text()
    for phrase in ("batch", "timestamp", "feature", "units", "SimpleRNNCell", "StackedRNNCells",
                   "RNN", "U  kernel", "max |diff|"):
        assert phrase in text
    arrays = np.load(tmp_path / "tour_arrays.npz")
    assert arrays["U"].shape == (tour.FEATURE, tour.UNITS)
    assert arrays["whole_sequence"].shape == (tour.BATCH, tour.TIMESTAMP, tour.UNITS)


def test_tour_is_reproducible(tmp_path):
    tour.run(str(tmp_path / "a"), echo=lambda s: None, figures=False)
    tour.run(str(tmp_path / "b"), echo=lambda s: None, figures=False)
    assert (tmp_path / "a" / "tour.txt").read_text() == (tmp_path / "b" / "tour.txt").read_text()


def test_cli(tmp_path, capsys):
    assert main(["tour", "--out", str(tmp_path)]) == 0
    assert "SimpleRNNCell" in capsys.readouterr().out
    result = subprocess.run([sys.executable, "-m", "unrolled", "--version"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "unrolled" in result.stdout
    result = subprocess.run([sys.executable, "-m", "unrolled", "nonsense"],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "invalid choice" in result.stderr
