"""The exactness guarantee, defined once (codescaler_cli/exactness.py), means what it says."""

from __future__ import annotations

import math

import pytest

from codescaler_cli import exactness


def test_bounds_per_dtype():
    assert exactness.bound("float32") == exactness.FLOAT32 == 1e-5
    assert exactness.bound("torch.float64") == exactness.FLOAT64 == 1e-9
    for low in ("bfloat16", "float16"):
        with pytest.raises(ValueError, match="no exactness bound"):
            exactness.bound(low)
    with pytest.raises(ValueError, match="unknown dtype"):
        exactness.bound("float8")


def test_the_bound_is_relative_above_one_and_absolute_below():
    assert exactness.tolerance(0.2) == pytest.approx(1e-5)
    assert exactness.tolerance(-300.0) == pytest.approx(3e-3)
    assert exactness.exact([300.002], [300.0])  # 6.7e-6 of the score
    assert not exactness.exact([0.50002], [0.5])  # 2e-5 absolute near zero
    assert not exactness.exact([1.0 + 2e-9], [1.0], "float64")


def test_a_missing_or_non_finite_score_is_never_close():
    assert exactness.error([None, 1.0], [None, 1.0]) == 0.0
    for got in ([None], [math.nan], [math.inf]):
        assert exactness.error(got, [1.0]) == math.inf, got
    assert exactness.error([1.0], [None]) == math.inf
    assert exactness.error([1.0], [1.0, 2.0]) == math.inf
