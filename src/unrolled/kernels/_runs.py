"""Padded batches: running only the steps a mask leaves valid, where it leaves them in one run.

A batch of sequences of different lengths is padded to one length and masked (`Embedding(...,
mask_zero=True)`, `Masking`). A masked step keeps each state as it was, so the padded steps of a
sample change nothing but cost as much as valid ones: with lengths spread evenly over 20-200
of 200 steps, nearly half the call. When every sample's valid steps form one run, and the runs
all start at the first processed step (padding after the data, processed forwards; padding
before it, processed backwards) or all end at the last (the other two cases), the samples can
be sorted so that the valid ones at any step are the first few rows. `plan` cuts the sequence
into at most MAX_SEGMENTS spans of steps; each span runs the kernel on only the rows valid at
some step of it, with the mask for the rows that start or stop inside it.

The kernels compute each row from its own input and states, so a row gives the same numbers in
a span of fewer rows, up to the product's rounding where BLAS blocks the rows otherwise; the
rows left out of a span keep their states, and their outputs for its steps are what the masked
kernel writes for them (the state carried: the last valid step's h after a run, the initial h
before one).
"""

from __future__ import annotations

import numpy as np

__all__ = ["Segments", "plan", "MAX_SEGMENTS"]

# At most this many spans a call. Each span is a kernel call of its own (the weights packed
# again where they are packed, the blocks of rows handed to the pool's threads), and the rows of
# a span that end (or begin) inside it run its steps masked: more spans run fewer wasted steps
# and pay more calls. `plan` weighs the two by these figures, measured on the benchmark machine
# (round 18): a span costs about SPAN_SECONDS beyond its steps, and a row's step runs at about
# RATE multiply-adds a second (35-85G from LSTM (32, 100, 16, 64) to (128, 200, 64, 256)).
MAX_SEGMENTS = 8
SPAN_COUNTS = (2, 3, 4, 6, MAX_SEGMENTS)  # the counts of spans weighed
SPAN_SECONDS = 1.5e-4
RATE = 50e9
# Spans are run only when they save at least this fraction of the call's estimated time.
MIN_GAIN = 0.15


class Segments:
    """How to run a masked call in spans: `order` (batch,) the rows sorted so that the valid
    rows of any step come first; `spans` a list of `(start, stop, rows)`: steps start..stop-1
    (processing order) run on the rows `order[:rows]` (none: no kernel runs)."""

    __slots__ = ("order", "spans")

    def __init__(self, order: np.ndarray, spans: list):
        self.order, self.spans = order, spans


def plan(valid: np.ndarray, row_work: int) -> Segments | None:
    """Spans for a call whose mask is `valid` (timesteps, batch) in processing order and whose
    steps do `row_work` multiply-adds a row (projection and recurrent product); None when the
    mask is not one run a row, all starting at the first step or all ending at the last, or
    when the spans would not save MIN_GAIN of the call's time by the estimate above."""
    T, B = valid.shape
    if B < 2 or T < 2:
        return None
    # The most spans could gain, every masked step left out in two calls: when that is not
    # twice the least gain taken, the mask is not read further (reading it takes 40-80 us, 3-6%
    # of an LSTM (32, 100, 16, 64) call, which spans did not make faster).
    threshold = MIN_GAIN * T * B * row_work / RATE
    masked = T * B - np.count_nonzero(valid)
    if masked * row_work / RATE - 2 * SPAN_SECONDS <= 2 * threshold:
        return None
    count = valid.sum(axis=0)                                        # (batch,) valid steps
    any_valid = count > 0
    first = np.where(any_valid, valid.argmax(axis=0), 0)
    last = np.where(any_valid, T - valid[::-1].argmax(axis=0), 0)   # one past the last valid
    if not np.array_equal(last - first, count):                     # some run has a gap
        return None
    if not first[any_valid].any():                                  # every run starts at 0
        prefix, ends = True, np.where(any_valid, last, 0)
        order = np.argsort(-ends, kind="stable")                     # longest first
        alive = ends[order]                                          # steps each row runs
    elif (last[any_valid] == T).all():                              # every run ends at T
        prefix, starts = False, np.where(any_valid, first, T)
        order = np.argsort(starts, kind="stable")                    # earliest start first
        alive = T - starts[order]
    else:
        return None
    # running[k]: how many runs are longer than k steps: the rows running at step k (prefix),
    # or the rows begun before step T - k (else)
    running = np.cumsum(np.bincount(alive, minlength=T + 1)[::-1])[::-1][1:].tolist()
    alive_at = alive.tolist()
    best, best_gain = None, threshold
    for n in SPAN_COUNTS:
        spans = _spans(alive_at, running, T, prefix, n)
        area = sum(rows * (stop - start) for start, stop, rows in spans)
        calls = sum(1 for *_, rows in spans if rows)
        gain = (T * B - area) * row_work / RATE - calls * SPAN_SECONDS
        if gain > best_gain:
            best, best_gain = spans, gain
    return None if best is None else Segments(order, best)


def _spans(alive: list, running: list, T: int, prefix: bool, n: int) -> list:
    """At most `n` spans, bounded at the run lengths of rows at evenly spaced ranks of
    `alive` (each row's run length, longest first): each span holds about as many rows' ends
    (or starts). `running[k]`: how many runs are longer than k."""
    B = len(alive)
    lengths = {alive[round(j * (B - 1) / n)] for j in range(1, n)} - {0, T}
    inner = sorted(lengths) if prefix else sorted(T - k for k in lengths)
    bounds = [0, *inner, T]
    # prefix: the rows still running at `start`; else: the rows whose run began before `stop`
    return [(start, stop, running[start] if prefix else running[T - stop])
            for start, stop in zip(bounds[:-1], bounds[1:])]
