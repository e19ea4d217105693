"""Inference lanes: several single-thread CPU sessions sharing each batch give the one session's answer."""

from __future__ import annotations

import numpy as np
import pytest

from models.classifier import ImageNetClassifier
from models.nanodet import NanoDet
from models.session import Lanes, auto_lanes


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 255, (272, 640, 3), np.uint8) for _ in range(7)]


@pytest.mark.parametrize("lanes", [2, 3, 5])
@pytest.mark.parametrize("n", [1, 2, 7])
def test_a_batch_cut_between_lanes_gives_the_single_sessions_outputs(images, lanes, n):
    one, many = NanoDet(intra_op_threads=1), NanoDet(lanes=lanes)
    assert isinstance(many.session, Lanes) and len(many.session) == lanes
    x = one.preprocess(images[:n])
    for a, b in zip(one.infer(x), many.infer(x), strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_a_classifier_runs_on_lanes_too(images):
    one, many = ImageNetClassifier(intra_op_threads=1), ImageNetClassifier(lanes=2)
    x = one.preprocess(images[:5])
    for a, b in zip(one.infer(x).values(), many.infer(x).values(), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_one_lane_is_a_plain_session_and_auto_follows_the_threads_setting():
    assert not isinstance(NanoDet(lanes=1).session, Lanes)
    assert auto_lanes(intra_op_threads=4) == 1  # threads set by hand: one session with them
    assert auto_lanes(intra_op_threads=None) >= 1
    assert NanoDet(lanes=0, intra_op_threads=2).session.get_providers() == ["CPUExecutionProvider"]


def test_batches_submitted_back_to_back_share_the_lanes_and_each_gets_its_own_outputs(images):
    one, many = NanoDet(intra_op_threads=1), NanoDet(lanes=2)
    first, second = one.preprocess(images[:5]), one.preprocess(images[2:7])
    # The second batch is queued while the first is running: the lanes take its frames as they free up.
    futures = [many.submit(first), many.submit(second)]
    for x, future in zip((first, second), futures, strict=True):
        inferred = future.result(timeout=60)
        assert inferred.seconds > 0
        for a, b in zip(one.infer(x), inferred.outputs, strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_a_frame_that_fails_fails_its_batch_and_the_lanes_go_on(images):
    many = NanoDet(lanes=2)
    bad = np.zeros((3, 3, 64, 64), np.float32)  # not the model's input size
    with pytest.raises(Exception, match=r"[Dd]imension|[Ss]hape|[Ii]nvalid"):
        many.submit(bad).result(timeout=60)
    good = many.preprocess(images[:3])
    assert len(many.submit(good).result(timeout=60).outputs[0]) == 3


def test_a_single_session_submits_in_a_thread_of_its_own(images):
    single = NanoDet(lanes=1, intra_op_threads=1)
    x = single.preprocess(images[:2])
    inferred = single.submit(x).result(timeout=60)
    for a, b in zip(single.infer(x), inferred.outputs, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
