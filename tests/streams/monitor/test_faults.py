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


def test_no_frames_is_raised_on_two_silent_checks_and_resolved_once_frames_flow_again():
    h = FeedHealth(no_frames_s=10)
    t = steady(h, 10)
    last_arrival = t - 0.2 + 0.1
    assert h.check(now=last_arrival + 10.0).changes == []
    assert h.check(now=last_arrival + 10.5).changes == []  # silent once: confirmed by the next check
    assert h.check(now=last_arrival + 11.0).changes == [(NO_FRAMES, "raised")]
    assert h.check(now=last_arrival + 20).changes == []  # raised once
    t = steady(h, 4, start=t + 20)
    assert NO_FRAMES in h.faults and h.changes == []  # frames again, not yet steadily
    steady(h, 1, start=t)
    assert h.changes == [(NO_FRAMES, "resolved")]


def test_a_silence_stays_one_alert_while_frames_only_trickle_in():
    h = FeedHealth(no_frames_s=4)
    t = steady(h, 10)
    changes = []
    for _ in range(10):  # one frame every 6 s: each ends a silence and the next one begins
        for dt in (5, 5.5, 6.0):
            changes += h.check(now=t + dt).changes
        h.update(captured_at=t + 6, arrived_at=t + 6.1, frame_diff=3.0)
        changes += h.changes
        t += 6
    assert changes == [(NO_FRAMES, "raised")]


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


def _worker(
    frames: list[tuple[str, float]], start: float, speed: float, chunk_s: float = 2.0, check_every: float = 1.0
):
    """A worker started at ``start`` (wall clock) that reads ``frames`` ((camera, broker time), sent 0.05 s
    after capture) ``speed`` times as fast as they came, a chunk of ``chunk_s`` broker seconds at a time and
    camera by camera within it, its timer checking every camera's silence every ``check_every`` s of the wall
    clock. Yields (wall time, camera, change) for every change."""
    feeds = {cam: FeedHealth(no_frames_s=4) for cam, _ in frames}
    order = sorted(frames, key=lambda f: (int((f[1] - T0) // chunk_s), f[0], f[1]))
    wall, next_check = start, start + check_every
    cost = (frames[-1][1] - frames[0][1]) / len(frames) / speed
    for cam, arrived in order:
        wall = max(wall + cost, arrived)
        while next_check <= wall:
            for c, h in feeds.items():
                yield from ((next_check, c, change) for change in h.check(now=next_check).changes)
            next_check += check_every
        feeds[cam].update(captured_at=arrived - 0.05, arrived_at=arrived, frame_diff=3.0)
        yield from ((wall, cam, change) for change in feeds[cam].changes)
    end = wall + 30
    while next_check <= end:  # the gateway stopped: every camera goes silent
        for c, h in feeds.items():
            yield from ((next_check, c, change) for change in h.check(now=next_check).changes)
        next_check += check_every


def _frames(cameras: dict[str, list[tuple[float, float]]], fps: float = 5.0) -> list[tuple[str, float]]:
    """Broker times of each camera's frames at ``fps`` over its (from, to) spans, s after T0."""
    out = []
    for cam, spans in cameras.items():
        for a, b in spans:
            out += [(cam, T0 + a + i / fps + 0.05) for i in range(int((b - a) * fps))]
    return sorted(out, key=lambda f: f[1])


def test_a_worker_catching_up_on_a_backlog_does_not_flap():
    # Three cameras sending for 120 s; the worker starts 13 s late and reads 1.5 times as fast as they send.
    frames = _frames({cam: [(0, 120)] for cam in ("a", "b", "c")})
    changes = list(_worker(frames, start=T0 + 13, speed=1.5))
    # Nothing while they send; once the gateway stops, each silent, once.
    assert [(cam, change) for _, cam, change in changes] == [(c, (NO_FRAMES, "raised")) for c in "abc"]
    assert all(wall > T0 + 120 + 4 for wall, _, _ in changes)


def test_a_silence_in_the_backlog_is_raised_and_resolved_once():
    # Camera b is silent from 30 s to 60 s of the feed, while the worker is still behind.
    frames = _frames({"a": [(0, 120)], "b": [(0, 30), (60, 120)], "c": [(0, 120)]})
    changes = list(_worker(frames, start=T0 + 13, speed=1.2))
    silences = [(cam, change) for wall, cam, change in changes if change[0] == NO_FRAMES and wall < T0 + 120]
    assert silences == [("b", (NO_FRAMES, "raised")), ("b", (NO_FRAMES, "resolved"))]  # (and low_fps on b)


def test_a_backlog_sent_in_a_burst_after_a_gap_resolves_once():
    # The gateway lost the broker for 20 s and sends what it kept at once: 100 frames with old capture times,
    # arriving within half a second, then live frames again. The worker keeps up.
    h = FeedHealth(no_frames_s=4)
    t = steady(h, 50)
    changes = []
    for k in range(1, 21):
        changes += h.check(now=t + k).changes
    burst_at = t + 20.5
    for i in range(100):
        h.update(captured_at=t + i / 5, arrived_at=burst_at + i / 200, frame_diff=3.0)
        changes += h.changes
    for k in range(21, 60):
        changes += h.check(now=t + k).changes
        steady(h, 5, start=t + k - 0.9, delay=0.05)
        changes += h.changes
    # (clock_skew is raised too, and resolves: the kept frames came 20 s after they were taken)
    assert [c for c in changes if c[0] == NO_FRAMES] == [(NO_FRAMES, "raised"), (NO_FRAMES, "resolved")]


def test_a_silence_half_confirmed_survives_a_restart_and_an_older_state_loads():
    a = FeedHealth(no_frames_s=4)
    t = steady(a, 10)
    a.check(now=t + 5)
    b = FeedHealth.from_dict(through_json(a.to_dict()))
    assert b.check(now=t + 6).changes == [(NO_FRAMES, "raised")]
    old = through_json(a.to_dict())  # as saved before the silence had hysteresis
    for key in ("last_check", "lead", "silent_checks", "resumed"):
        del old[key]
    for key in ("confirm_checks", "resume_frames"):
        del old["params"][key]
    c = FeedHealth.from_dict(old)
    assert (c.confirm_checks, c.resume_frames, c.lead, c.silent_checks) == (2, 5, 0.0, 0)
    assert c.check(now=t + 6).changes == [] and c.check(now=t + 7).changes == [(NO_FRAMES, "raised")]
