"""benchmarks/floor.py: its arithmetic, a run at a tiny point, and its argument errors.

No time is checked: the run's figures are only required to be measured (positive) and to agree
with each other as the script defines them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from unrolled.kernels._threads import cores

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def floor(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.delitem(sys.modules, "floor", raising=False)
    import floor

    return floor


def test_floor_shares_the_product_and_the_arithmetic_between_the_cores(floor):
    # 1 GFLOP at 100 GFLOP/s on one core is 10 ms, 1e6 units at 1 ns each 1 ms: 5.5 ms on two
    assert floor.floor_seconds(1e9, 10**6, 1e11, 1e-9, 2) == pytest.approx(5.5e-3)
    assert floor.floor_seconds(1e9, 0, 1e11, 1e-9, 1) == pytest.approx(1e-2)
    # 32 FLOP a cycle at 3 GHz on two cores: 192 GFLOP/s
    assert floor.peak_seconds(192e9, 3e9, 2) == pytest.approx(1.0)
    assert floor.peak_seconds(192e9, 3e9, 2, per_cycle=64) == pytest.approx(0.5)


def test_a_product_takes_the_batch_shared_between_the_cores_in_blocks_of_fused_rows(floor):
    from unrolled.kernels._numba_loops import FUSED_ROWS

    assert floor.product_rows(4, 2) == 2 and floor.product_rows(5, 2) == 3
    assert floor.product_rows(32, 1) == FUSED_ROWS == floor.product_rows(256, 2)


def test_a_run_measures_each_part_and_prints_one_row_a_point(floor):
    lines: list[str] = []
    rows = floor.run(["lstm", "simple_rnn"], [(4, 5, 1, 2)], reps=1, peer_ms=[0.02, 0.01],
                     out=lines.append)
    assert [r["cell"] for r in rows] == ["lstm", "simple_rnn"]
    for r in rows:
        assert r["rows"] == floor.product_rows(4, cores())
        for key in ("rate", "per_unit", "floor", "peak", "unrolled"):
            assert r[key] > 0, (key, r)
        flops = floor.forward_flops(r["cell"], r["shape"])
        assert r["floor"] == pytest.approx(floor.floor_seconds(
            flops, 4 * 5 * 2, r["rate"], r["per_unit"], cores()))
        assert r["peak"] < flops / r["rate"] * 10  # the same multiply-adds, at a clock's rate
    assert rows[0]["peer"] == pytest.approx(2e-5) and rows[1]["peer"] == pytest.approx(1e-5)
    assert lines[0].startswith("cores: ")
    table = [line for line in lines if line.startswith("| ")]
    assert len(table) == 3 and all(line.count("|") == 14 for line in table)


def test_peer_times_must_be_one_a_point_and_positive(floor):
    with pytest.raises(SystemExit, match="expected 2 times"):
        floor.run(["lstm", "gru"], [(4, 5, 1, 2)], reps=1, peer_ms=[1.0])
    with pytest.raises(SystemExit, match="expected milliseconds separated by commas"):
        floor.main(["--peer-ms", "fast"])
    with pytest.raises(SystemExit, match="expected positive milliseconds"):
        floor.main(["--peer-ms", "1,-2,3"])
    with pytest.raises(SystemExit, match="--reps"):
        floor.main(["--reps", "0"])
    with pytest.raises(SystemExit, match="--flop-per-cycle: expected a positive number"):
        floor.main(["--flop-per-cycle", "0"])
