"""benchmarks/models.py runs, and its models agree with Keras's before anything is timed.

The script checks each peer's forward output (to 1e-4) and first training step's loss (to 1e-4
relative) against unrolled's, and reports a peer that disagrees as skipped. Here Keras is the
peer (torch is a benchmark dependency, not a test one), so this is a model-level parity test as
well: a padded batch through Embedding(mask_zero) and Bidirectional(LSTM), an LSTM language
model with a sparse cross-entropy from logits, two stacked GRUs, each with Adam. The timing is
the script's shortest (one sample a peer); no time is checked.
"""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_every_model_matches_keras_and_is_timed(keras, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.delitem(sys.modules, "models", raising=False)
    import models

    lines: list[str] = []
    rows = models.run(list(models.MODELS), ["unrolled", "keras-jax"], quick=True, reps=1,
                      out=lines.append)
    assert not [line for line in lines if line.startswith("skipped")], lines
    assert [(r["model"], r["mode"]) for r in rows] == [
        (name, mode) for name in models.MODELS for mode in ("forward", "train")]
    for r in rows:
        assert set(r["medians"]) == {"unrolled", "keras-jax"}
        assert all(t > 0 for t in r["medians"].values())
        assert float(r["notes"]["keras-jax max|diff|"]) <= 1e-4
    table: list[str] = []
    models.report_table(rows, out=table.append)
    assert len([line for line in table if line.startswith("| sentiment |")]) == 2
