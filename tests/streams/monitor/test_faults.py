from __future__ import annotations

import pytest

from streams.monitor.faults import BLACK, CLOCK_SKEW, FROZEN, LOW_FPS, NO_FRAMES, OVER_EXPOSED, FeedHealth

from .conftest import through_json

T0 = 1_700_000_000.0


def steady(h: FeedHealth, n: int, fps: float = 5.0, start: float = T0, delay: float = 0.1, **signals) -> float:
    """n frames at fps from start; returns the capture time of the next one."""
    t = start
    for _ in range(n):
        h.update(captured_at=t, arrived_at=t + delay, frame_diff=signals.get("frame_diff", 3.0), **_rest(signals))
        t += 1 / fps
    return t


def _rest(signals: dict) -> dict:
    return {k: v for k, v in signals.items() if k != "frame_diff"}


def test_a_healthy_feed_has_no_faults():
    h = FeedHealth(expected_fps=5)
    steady(h, 100)
    assert h.faults == set() and not h.fault_detected
    assert h.fps == pytest.approx(5.0)
    assert h.skew == pytest.approx(0.1)


def test_no_frames_is_raised_by_the_clock_it_is_given_and_cleared_by_the_next_frame():
    h = FeedHealth(no_frames_s=10)
    t = steady(h, 10)
    last_arrival = t - 0.2 + 0.1
    assert h.check(now=last_arrival + 10.0).changes == []
    assert h.check(now=last_arrival + 10.5).changes == [(NO_FRAMES, "raised")]
    assert h.check(now=last_arrival + 20).changes == []  # raised once
    h.update(captured_at=t + 20, arrived_at=t + 20.1, frame_diff=3.0)
    assert h.changes == [(NO_FRAMES, "resolved")]


def test_a_feed_that_never_sent_a_frame_is_not_judged():
    assert FeedHealth().check(now=T0).faults == set()


def test_low_fps_is_raised_over_the_window_and_cleared_when_the_rate_recovers():
    h = FeedHealth(expected_fps=5, fps_tolerance=0.5, fps_window=10)
    t = steady(h, 20, fps=5)
    # after k frames at 2 fps the window of 10 spans (10 - k) x 0.2 + (k - 1) x 0.5 s for 9 intervals
    t = steady(h, 6, fps=2, start=t)
    assert LOW_FPS not in h.faults  # 3.3 s: 2.7 fps, not below 5 x (1 - 0.5)
    t = steady(h, 2, fps=2, start=t)
    assert LOW_FPS in h.faults  # 3.9 s: 2.3 fps
    steady(h, 10, fps=5, start=t)
    assert LOW_FPS not in h.faults


def test_frozen_black_and_over_exposed_need_a_run_of_frames():
    for fault, signals in [
        (FROZEN, {"frame_diff": 0.0}),
        (BLACK, {"black": True}),
        (OVER_EXPOSED, {"over_exposed": 0.8}),
    ]:
        h = FeedHealth(run_frames=5)
        t = steady(h, 10)
        t = steady(h, 4, start=t, **signals)
        assert fault not in h.faults
        t = steady(h, 1, start=t, **signals)
        assert h.changes == [(fault, "raised")]
        steady(h, 1, start=t)
        assert h.changes == [(fault, "resolved")]


def test_a_first_frame_without_a_diff_is_not_frozen():
    h = FeedHealth(run_frames=1)
    h.update(captured_at=T0, arrived_at=T0, frame_diff=None)
    assert FROZEN not in h.faults


def test_clock_skew_uses_the_median_so_one_late_frame_does_not_count():
    h = FeedHealth(skew_s=2.0, skew_window=5)
    t = steady(h, 5, delay=0.1)
    h.update(captured_at=t, arrived_at=t + 30, frame_diff=3.0)  # one frame stuck in a queue
    assert CLOCK_SKEW not in h.faults
    steady(h, 5, start=t, delay=-3.0)  # the camera's clock runs 3 s ahead
    assert CLOCK_SKEW in h.faults and h.skew == pytest.approx(-3.0)


def test_state_survives_a_json_round_trip_and_stays_bounded():
    a = FeedHealth(run_frames=3, fps_window=10, skew_window=10)
    t = steady(a, 1000)
    t = steady(a, 2, start=t, black=True)
    b = FeedHealth.from_dict(through_json(a.to_dict()))
    assert len(b.captured) == 10 and len(b.delays) == 10
    for h in (a, b):
        steady(h, 1, start=t, black=True)
    assert a.changes == b.changes == [(BLACK, "raised")]
    assert a.to_dict() == b.to_dict()
