import math

import pytest

from codescaler_cli.shaping import shape_reward, sigmoid, softplus


@pytest.mark.parametrize("x", [-50.0, -3.2, -0.47, 0.0, 1e-8, 2.5, 12.51, 40.0])
def test_softplus_matches_definition(x):
    assert softplus(x) == pytest.approx(math.log1p(math.exp(x)), rel=1e-12)


def test_softplus_large_values_do_not_overflow():
    assert softplus(1000.0) == 1000.0
    assert 0.0 < softplus(-1000.0) < 1e-300 or softplus(-1000.0) == 0.0


def test_validity_preserving():
    # Any valid program outranks any invalid one, however low its raw score.
    assert shape_reward(-30.0, True) > shape_reward(30.0, False) == 0.0
    assert shape_reward(None, True) == 0.0
    assert shape_reward(float("nan"), True) == 0.0


def test_other_shapings():
    assert shape_reward(-2.0, True, "raw") == -2.0
    assert shape_reward(0.0, True, "sigmoid") == 0.5
    assert sigmoid(-800.0) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="unknown shaping"):
        shape_reward(1.0, True, "exp")
