"""The capture loop, the backoff and the outbox on fake sources and a fake clock: no thread, no real time."""

from __future__ import annotations

import doctest
import logging
import re
import threading

import cv2
import numpy as np
import pytest

from streams import capture as capture_module
from streams import gateway
from streams.capture import Backoff, Capture, Outbox, VideoReader


class FakeClock:
    """Time that moves only when the loop waits (or a read takes ``read_s``)."""

    def __init__(self):
        self.now = 1000.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += max(0.0, seconds)
        return False


class FakeCapture:
    """A source that gives ``frames`` frames, then fails as told: ``"raise"`` (a driver error), ``"end"``
    (read returns False), or never (``None``: endless)."""

    def __init__(self, clock: FakeClock, frames: int | None, then: str | None = "end", read_s: float = 0.0):
        self.clock, self.left, self.then, self.read_s = clock, frames, then, read_s
        self.released = False

    def read(self):
        self.clock.now += self.read_s
        if self.left is not None:
            if self.left == 0:
                if self.then == "raise":
                    raise cv2.error("demux: connection reset by peer")
                return False, None
            self.left -= 1
        return True, np.zeros((2, 2, 3), np.uint8)

    def release(self):
        self.released = True


def scripted(clock: FakeClock, script: list, opened: list | None = None, read_s: float = 0.0):
    """An ``open_reader`` that plays ``script``: an exception instance is raised, a tuple makes a
    FakeCapture(clock, *tuple, read_s=read_s)."""
    steps = iter(script)

    def open_reader(first: bool):
        step = next(steps)
        if isinstance(step, Exception):
            raise step
        reader = FakeCapture(clock, *step, read_s=read_s)
        if opened is not None:
            opened.append(reader)
        return reader

    return open_reader


def capture(clock, script, *, live, max_frames=None, cap=30.0, loop=True, opened=None, fps=10.0, stop=None):
    frames = []
    cam = Capture(
        "cam-1",
        scripted(clock, script, opened, read_s=1 / fps if live else 0.0),  # a live source sends at fps
        frames.append,
        fps=fps,
        live=live,
        loop=loop,
        max_frames=max_frames,
        backoff=Backoff(initial=0.5, cap=cap, rng=lambda: 1.0),
        clock=clock,
        wait=clock.wait,
        stop=stop,
        name="rtsp://camera/1",
    )
    return cam, frames


def messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "streams.capture"]


def test_backoff_doubles_to_its_cap_with_jitter_in_the_upper_half():
    b = Backoff(initial=0.5, cap=30.0)
    delays = [b.next() for _ in range(40)]
    tops = [min(30.0, 0.5 * 2**n) for n in range(40)]
    assert all(top / 2 <= d <= top for d, top in zip(delays, tops, strict=True))
    assert max(delays) <= 30.0 and sum(delays[-10:]) >= 150.0  # capped, and not stuck low
    assert len({round(d, 6) for d in delays[-10:]}) > 1  # jittered: capped delays differ
    with pytest.raises(ValueError):
        Backoff(initial=0.0)


def test_a_live_source_that_drops_is_reopened_with_growing_delays_and_logged_once_per_change(caplog):
    clock = FakeClock()
    # up for 5 frames, then the connection resets; 6 refused attempts; back for 3 frames and ended by max_frames
    script = [(5, "raise")] + [OSError("cannot open video source")] * 6 + [(None, None)]
    cam, frames = capture(clock, script, live=True, max_frames=8)
    with caplog.at_level(logging.INFO, logger="streams.capture"):
        cam.run()
    assert len(frames) == 8
    assert clock.waits == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]  # one per failed attempt, capped
    log = messages(caplog)
    assert len(log) == 3, log  # capturing, lost (with the reason), back: not one line per attempt
    assert log[0] == "cam-1: capturing from rtsp://camera/1"
    assert "lost rtsp://camera/1: read failed (error: " in log[1] and "connection reset by peer" in log[1]
    assert "reconnecting with backoff (at most 30 s apart)" in log[1]
    assert re.fullmatch(r"cam-1: rtsp://camera/1 is back after 7 attempts \(6[12] s without frames\)", log[2])
    assert cam.reconnects == 1 and cam.state == "ended"


def test_a_source_that_opens_but_gives_nothing_is_not_reopened_at_once():
    # The old gateway reopened a URL at once when a read failed: millions of attempts a second.
    clock = FakeClock()
    cam, frames = capture(clock, [(0, "end")] * 5 + [(2, "end")], live=True, max_frames=2)
    cam.run()
    assert frames and clock.waits[:5] == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_a_file_is_rewound_at_once_after_its_last_frame_and_warned_about_once_when_short(caplog):
    clock = FakeClock()
    opened = []
    cam, frames = capture(clock, [(4, "end")] * 10, live=False, max_frames=30, opened=opened)

    class Short(FakeCapture):
        declared = 10  # the header claims 10 frames, 4 are there

    cam.open_reader = lambda first: opened.append(Short(clock, 4, "end")) or opened[-1]
    with caplog.at_level(logging.INFO, logger="streams.capture"):
        cam.run()
    assert len(frames) == 30 and len(opened) == 8 and all(r.released for r in opened)
    assert all(abs(w - 0.1) < 1e-9 for w in clock.waits)  # paced at 10 fps, no backoff
    warned = [m for m in messages(caplog) if "truncated" in m]
    assert warned == [
        "cam-1: rtsp://camera/1 ended after 4 of the 10 frames its header declares (truncated?); "
        "replaying what can be read"
    ]


def test_a_file_that_fails_mid_stream_is_retried_with_backoff_and_comes_back(caplog):
    clock = FakeClock()
    script = [(3, "raise"), OSError("no such file"), OSError("no such file"), (None, None)]
    cam, frames = capture(clock, script, live=False, max_frames=6, fps=1000.0)
    with caplog.at_level(logging.INFO, logger="streams.capture"):
        cam.run()
    assert len(frames) == 6
    assert [w for w in clock.waits if w >= 0.5] == [0.5, 1.0, 2.0]
    assert sum("lost" in m for m in messages(caplog)) == 1
    assert sum("is back after 3 attempts" in m for m in messages(caplog)) == 1


def test_once_ends_a_file_at_its_end_and_a_live_source_keeps_one_frame_per_period():
    clock = FakeClock()
    cam, frames = capture(clock, [(7, "end")], live=False, loop=False)
    cam.run()
    assert len(frames) == 7 and cam.state == "ended"

    # a live source sending 25 frames a second, kept at 5 a second
    clock = FakeClock()
    script = [(None, None)]
    cam, frames = capture(clock, script, live=True, fps=5.0, max_frames=10)
    cam.open_reader = lambda first: FakeCapture(clock, None, None, read_s=0.04)
    cam.run()
    assert len(frames) == 10 and 1.7 <= clock.now - 1000.0 <= 2.1  # 10 frames in about 2 s of source time


def test_the_backoff_starts_over_only_after_the_source_stayed_up():
    clock = FakeClock()
    # each connection gives 2 frames and drops: the delays keep growing (no fast flapping)
    cam, frames = capture(clock, [(2, "raise")] * 5 + [(None, None)], live=True, fps=1000.0, max_frames=11)
    cam.run()
    assert clock.waits[:5] == [0.5, 1.0, 2.0, 4.0, 8.0] and len(frames) == 11
    # up for longer than the cap (40 s), then lost: the next attempt comes after the first delay again
    clock = FakeClock()
    script = [OSError("down")] * 3 + [(400, "raise"), OSError("down"), (None, None)]
    cam, _ = capture(clock, script, live=False, fps=10.0, cap=4.0, max_frames=405)
    cam.run()
    assert [w for w in clock.waits if w > 0.2] == [0.5, 1.0, 2.0, 0.5, 1.0]


def test_stop_ends_the_loop_during_a_backoff_wait():
    stop = threading.Event()
    clock = FakeClock()
    cam, _ = capture(clock, [OSError("down")] * 1000, live=True, stop=stop)
    cam.wait = lambda s: (clock.waits.append(s), len(clock.waits) == 3 and stop.set())
    cam.run()
    assert len(clock.waits) == 3 and cam.state == "ended"


def test_outbox_waits_for_room_for_a_file_and_drops_the_oldest_for_a_live_source_or_an_outage():
    box = Outbox(capacity=3)
    for n in range(3):
        box.put(n, wait=True)
    blocked = threading.Thread(target=box.put, args=(3,), kwargs={"wait": True})
    blocked.start()
    blocked.join(0.2)
    assert blocked.is_alive() and box.dropped == 0  # a file waits while the broker takes its time
    box.dropping = True  # the broker is away: nothing waits any more
    blocked.join(5)
    assert not blocked.is_alive()
    assert box.take(10) == [1, 2, 3] and box.dropped == 1
    for n in range(5):
        box.put(n, wait=False)
    assert box.take(10) == [2, 3, 4] and box.dropped == 3
    box.close()
    assert box.put(9, wait=True) is False and len(box) == 0


def test_video_reader_reads_a_real_file_and_refuses_a_missing_one(tmp_path, street_frames):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 272))
    for f in street_frames[:12]:
        writer.write(f)
    writer.release()
    reader = VideoReader(str(path), skip=2)
    got = 0
    while reader.read()[0]:
        got += 1
    reader.release()
    assert (got, reader.declared) == (10, 12)
    with pytest.raises(OSError, match="cannot open"):
        VideoReader(str(tmp_path / "missing.avi"))


@pytest.mark.parametrize("module", [capture_module, gateway])
def test_docstring_examples_pass(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
