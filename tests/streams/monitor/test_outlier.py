from __future__ import annotations

import base64

import numpy as np
import pytest

from streams.monitor.outlier import AutoencoderOutlier, _conformal_threshold
from streams.monitor.state import StateError

from .conftest import through_json

TARGET = 0.05


def cluster(dim: int, seed: int = 0):
    """A camera's embeddings: a Gaussian cluster around a centre, mostly along 8 directions."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(8, dim)) / np.sqrt(8)
    centre = rng.normal(size=dim)

    def draw(n: int) -> np.ndarray:
        return centre + rng.normal(size=(n, 8)) @ basis + 0.3 * rng.normal(size=(n, dim))

    return rng, centre, draw


def test_conformal_threshold_is_the_right_order_statistic():
    scores = np.arange(1.0, 100.0)  # n = 99
    assert _conformal_threshold(scores, 0.1) == 90.0  # ceil(100 x 0.9) = 90th smallest
    assert _conformal_threshold(scores, 0.001) == 99.0  # too few scores for the rate: the largest


@pytest.mark.parametrize("dim", [64, 1280])
def test_autoencoder_flags_far_vectors_and_few_normal_ones(dim):
    rng, centre, draw = cluster(dim)
    d = AutoencoderOutlier(bottleneck=16, false_alarm_rate=TARGET, max_iter=150).fit(draw(600))
    false_alarms = float(np.mean(d.score_many(draw(2000)) > d.threshold))
    assert 0.005 <= false_alarms <= 2 * TARGET
    # off the camera's usual directions, though as far from the centre as its own frames
    other_basis = rng.normal(size=(8, dim)) / np.sqrt(8)
    off = centre + rng.normal(size=(200, 8)) @ other_basis + 0.3 * rng.normal(size=(200, dim))
    assert np.mean(d.score_many(off) > d.threshold) > 0.95
    assert d.update(centre + 5 * rng.normal(size=dim)).is_outlier
    assert not d.update(centre).is_outlier


def test_autoencoder_state_survives_a_json_round_trip_with_equal_scores():
    _, _, draw = cluster(64, seed=1)
    a = AutoencoderOutlier(bottleneck=8, max_iter=50).fit(draw(200))
    b = AutoencoderOutlier.from_dict(through_json(a.to_dict()))
    x = draw(50)
    np.testing.assert_allclose(a.score_many(x), b.score_many(x), rtol=1e-12)
    assert b.threshold == a.threshold


def test_autoencoder_unfitted_state_round_trips_and_refuses_to_score():
    d = AutoencoderOutlier.from_dict(through_json(AutoencoderOutlier(hidden=(32,)).to_dict()))
    assert d.hidden == (32,) and not d.fitted
    with pytest.raises(RuntimeError):
        d.score(np.zeros(4))


def test_too_small_a_reference_is_refused():
    with pytest.raises(ValueError):
        AutoencoderOutlier().fit(np.zeros((5, 8)))


def test_autoencoder_state_with_a_wrong_version_shape_or_value_is_refused():
    _, _, draw = cluster(16, seed=5)
    state = through_json(AutoencoderOutlier(bottleneck=4, max_iter=20).fit(draw(100)).to_dict())
    w0_shape, w0 = state["weights"][0]
    for bad in (
        {**state, "version": None},
        {**state, "kind": "half_space_trees"},
        {**state, "dim": 17},  # the arrays hold 16 values
        {**state, "weights": [[[16, 5], w0], *state["weights"][1:]]},  # a shape the layers do not chain
        {**state, "weights": state["weights"][:1]},  # a layer missing
        {**state, "mean": base64.b64encode(np.full(16, np.nan, np.float32).tobytes()).decode()},
        {**state, "mean": "not base64!" * 8},
        {**state, "threshold": "1e3"},
    ):
        with pytest.raises(StateError):
            AutoencoderOutlier.from_dict(bad)
    assert w0_shape == [16, 4]
