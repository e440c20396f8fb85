"""The vectorised percentile of every point (``history.quantiles``) gives exactly the floats of the
per-histogram ``history.quantile`` it replaced on the query path: same buckets, same interpolation,
same order of arithmetic, so answers did not change when the loop went."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from trellis.metrics.catalog import BY_NAME
from trellis.metrics.history import quantile, quantiles

BOUNDS = tuple(BY_NAME["http.latency"].buckets)


def histograms(rng: random.Random, rows: int, size: int) -> list[list[float]]:
    out: list[list[float]] = [[0.0] * size, [0.0] * (size - 1) + [7.0], [3.0] + [0.0] * (size - 1)]
    for _ in range(rows):
        row = [float(rng.choice((0, 0, 0, 1, 2, 5, 40, 1000))) for _ in range(size)]
        out.append(row)
    return out


@pytest.mark.parametrize("q", [0.5, 0.9, 0.95, 0.99])
def test_every_point_gets_the_same_float_as_the_loop(q: float) -> None:
    rng = random.Random(16)
    rows = histograms(rng, 500, len(BOUNDS) + 1)
    got = quantiles(BOUNDS, np.asarray(rows, dtype=np.float64), q).tolist()
    for row, value in zip(rows, got, strict=True):
        expected = quantile(BOUNDS, row, q)
        if expected is None:
            assert math.isnan(value), row
        else:
            assert value == expected, (row, value, expected)


def test_the_inf_bucket_and_no_buckets() -> None:
    counts = np.asarray([[0.0, 0.0, 4.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert quantiles((0.1, 0.2), counts, 0.95).tolist()[:2] == [0.2, 0.095]
    assert math.isnan(quantiles((0.1, 0.2), counts, 0.95).tolist()[2])
    assert all(math.isnan(v) for v in quantiles((), np.asarray([[3.0]]), 0.5).tolist())
    assert quantiles(BOUNDS, np.zeros((0, len(BOUNDS) + 1)), 0.5).shape == (0,)
