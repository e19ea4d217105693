"""Capture, off the event loop: each camera reads its source on a thread of its own, reconnects on its own
with exponential backoff and jitter, and hands its frames to a bounded :class:`Outbox` that the gateway's
publisher drains.

- :class:`Backoff`: delays that double up to a cap, each drawn at random from its upper half.
- Readers (``read() -> (ok, frame)``, ``release()``): :class:`VideoReader` (``cv2.VideoCapture``: a file, a
  URL, a device), :class:`FolderReader` (images), :class:`MemoryReader` (frames already encoded).
- :class:`Capture`: one camera's loop: open, read, pace to ``fps``, reconnect. It logs once per change of
  state (capturing, lost with the reason, back after N attempts, ended), never once per attempt.
- :class:`Outbox`: frames waiting for the broker. A full outbox makes a camera that can wait (a file) wait,
  and drops its oldest frame (counted) for one that cannot (a live source) or while the broker is away.

Everything here is plain Python with threads; the clock and the waits can be injected, so the loop is
tested with fake readers and no real time (``tests/streams/test_capture.py``).
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import cv2

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
OPEN_TIMEOUT_MS = 10_000  # a URL that does not answer in this time counts as a failed attempt
READ_TIMEOUT_MS = 10_000  # a live source silent this long counts as lost


class Backoff:
    """Exponential backoff with jitter: the n-th delay is drawn from ``[d/2, d]``, ``d = initial * factor**n``
    capped at ``cap`` seconds. The jitter keeps cameras that dropped together from retrying in step.

    >>> b = Backoff(initial=0.5, cap=4.0, rng=lambda: 1.0)  # rng() == 1: the top of each range
    >>> [b.next() for _ in range(6)]
    [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    >>> b.reset(); b.next()
    0.5
    >>> Backoff(initial=2.0, rng=lambda: 0.0).next()  # rng() == 0: the bottom, half the delay
    1.0
    """

    def __init__(
        self,
        initial: float = 0.5,
        cap: float = 30.0,
        factor: float = 2.0,
        rng: Callable[[], float] = random.random,
    ):
        if not 0 < initial <= cap or factor < 1:
            raise ValueError(f"backoff needs 0 < initial <= cap and factor >= 1, got {initial}, {cap}, {factor}")
        self.initial, self.cap, self.factor, self.rng = initial, cap, factor, rng
        self.attempts = 0

    def next(self) -> float:
        top = min(self.cap, self.initial * self.factor ** min(self.attempts, 64))
        self.attempts += 1
        return top / 2 + top / 2 * self.rng()

    def reset(self) -> None:
        self.attempts = 0


class Reader(Protocol):
    """What :class:`Capture` reads: ``cv2.VideoCapture``'s two methods that it needs."""

    def read(self) -> tuple[bool, Any]: ...

    def release(self) -> None: ...


class VideoReader:
    """``cv2.VideoCapture`` on a file, a URL or a device index, opened or :class:`OSError`.

    URLs get open and read timeouts (``OPEN_TIMEOUT_MS``, ``READ_TIMEOUT_MS``), so that a camera that
    stops answering counts as lost instead of blocking its thread for good. ``skip`` frames are dropped
    at the start. ``declared`` is the frame count a file's header claims (None for live sources).
    """

    def __init__(self, source: str | int, skip: int = 0):
        if isinstance(source, str) and "://" in source:
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS]
            self.cap = cv2.VideoCapture(source, cv2.CAP_ANY, params)
        else:
            self.cap = cv2.VideoCapture(source)
        if not self.cap.isOpened():
            self.cap.release()
            raise OSError(f"cannot open video source {source!r}")
        count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT)) if isinstance(source, str) else 0
        self.declared = count if count > 0 and "://" not in str(source) else None
        for _ in range(skip):
            if not self.cap.grab():
                break

    def read(self) -> tuple[bool, Any]:
        return self.cap.read()

    def release(self) -> None:
        self.cap.release()


class FolderReader:
    """The images of a folder in name order, from the ``skip``-th on, then those before it. An image that
    cannot be read is skipped, with one warning per file."""

    def __init__(self, folder: Path, skip: int = 0, warned: set[Path] | None = None):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
        k = skip % len(files)
        self.files = iter(files[k:] + files[:k])
        self.declared = len(files)
        self.warned = warned if warned is not None else set()

    def read(self) -> tuple[bool, Any]:
        for f in self.files:
            image = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if image is not None:
                return True, image
            if f not in self.warned:
                self.warned.add(f)
                log.warning("skipping unreadable image %s", f)
        return False, None

    def release(self) -> None:
        self.files = iter(())


class MemoryReader:
    """Frames from an endless iterator (for example already encoded footage replayed from memory)."""

    declared = None

    def __init__(self, frames: Iterator[Any]):
        self.frames = frames

    def read(self) -> tuple[bool, Any]:
        item = next(self.frames, None)
        return item is not None, item

    def release(self) -> None:
        pass


class Outbox:
    """A bounded first-in first-out queue of frames between the cameras' threads and the publisher.

    When full, :meth:`put` with ``wait=True`` (a camera that can wait: a file) blocks until there is room,
    unless the outbox is :attr:`dropping` (the broker is away) or closed; otherwise the oldest frame is
    dropped and counted in :attr:`dropped`. ``on_put`` is called after each put (to wake the publisher).

    >>> box = Outbox(capacity=2)
    >>> for n in range(3):
    ...     _ = box.put(n, wait=False)
    >>> box.take(10), box.dropped
    ([1, 2], 1)
    >>> box.requeue([1, 2])  # not delivered: back in front
    >>> box.put(3, wait=False)  # full: the oldest goes
    True
    >>> box.take(10), box.dropped
    ([2, 3], 2)
    """

    def __init__(self, capacity: int, on_put: Callable[[], None] = lambda: None):
        if capacity < 1:
            raise ValueError(f"the outbox holds at least one frame, not {capacity}")
        self.capacity = capacity
        self.on_put = on_put
        self.dropped = 0
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._dropping = False
        self._closed = False

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    @property
    def dropping(self) -> bool:
        return self._dropping

    @dropping.setter
    def dropping(self, value: bool) -> None:
        with self._cond:
            self._dropping = value
            self._cond.notify_all()

    def put(self, item: Any, *, wait: bool) -> bool:
        """Add ``item``; False (and nothing added) once the outbox is closed."""
        with self._cond:
            while wait and not self._dropping and not self._closed and len(self._items) >= self.capacity:
                self._cond.wait()
            if self._closed:
                return False
            self._items.append(item)
            self._trim()
        self.on_put()
        return True

    def take(self, n: int) -> list:
        """Up to ``n`` items, oldest first, without waiting."""
        with self._cond:
            items = [self._items.popleft() for _ in range(min(n, len(self._items)))]
            if items:
                self._cond.notify_all()
        return items

    def requeue(self, items: list) -> None:
        """Put ``items`` (taken, not delivered) back in front, dropping the oldest beyond the capacity."""
        with self._cond:
            self._items.extendleft(reversed(items))
            self._trim()

    def close(self) -> None:
        """No more puts: waiting cameras wake up and what is left can still be taken."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _trim(self) -> None:
        while len(self._items) > self.capacity:
            self._items.popleft()
            self.dropped += 1


class Capture:
    """One camera's capture loop (:meth:`run`, on a thread of its own).

    ``open_reader(first)`` opens the source (``first`` is True until a frame has been read, for a start
    offset) or raises. ``deliver(frame)`` takes each frame kept. A ``live`` source (a URL, a device) is read
    as fast as it sends and a frame is kept when one is due at ``fps``; any other source is read at ``fps``.

    - A live source that fails to open, fails while read, or ends is reopened after a :class:`Backoff`
      delay; so is any source that opens but gives no frame, or raises while read. The backoff starts
      again from its first delay only after the source stayed up for ``backoff.cap`` seconds, so a source
      that drops right after each reconnection is not retried at a fast pace forever.
    - A file or folder that comes to its end after giving frames is rewound at once (``loop``) or ends the
      camera. A file that ends before the frame count its header declares (truncated) is warned about once.
    - ``max_frames`` ends the camera after that many frames delivered; ``stop`` ends it at once, waits
      included.

    Logs (one line per change of state, whatever the number of attempts): ``capturing``, ``lost ...
    (reason); reconnecting``, ``back after N attempts``, ``ended``.
    """

    def __init__(
        self,
        camera_id: str,
        open_reader: Callable[[bool], Reader],
        deliver: Callable[[Any], None],
        *,
        fps: float,
        live: bool,
        loop: bool = True,
        max_frames: int | None = None,
        stop: threading.Event | None = None,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], Any] | None = None,
        name: str = "source",
    ):
        self.camera_id = camera_id
        self.open_reader = open_reader
        self.deliver = deliver
        self.period = 1.0 / fps
        self.live = live
        self.loop = loop
        self.max_frames = max_frames
        self.stop = stop or threading.Event()
        self.backoff = backoff or Backoff()
        self.clock = clock
        self.wait = wait or self.stop.wait
        self.name = name
        self.state = "starting"  # capturing, down, ended
        self.delivered = 0
        self.failures = 0  # attempts since the source was last up
        self.reconnects = 0
        self._next_due: float | None = None
        self._up_since = 0.0
        self._down_since = 0.0
        self._short_warned = False
        self._rewinds = 0

    @property
    def finished(self) -> bool:
        return self.max_frames is not None and self.delivered >= self.max_frames

    def run(self) -> None:
        while not self.stop.is_set() and not self.finished:
            reason, produced, reader = None, 0, None
            try:
                reader = self.open_reader(self.state == "starting")
            except Exception as exc:
                reason = f"cannot open it ({_describe(exc)})"
            if reader is not None:
                try:
                    produced = self._read(reader)
                except Exception as exc:
                    reason = f"read failed ({_describe(exc)})"
                finally:
                    reader.release()
                if self.stop.is_set() or self.finished:
                    break
                if reason is None and produced and not self.live:
                    if not self.loop:
                        self._set_state("ended", f"{self.camera_id}: end of {self.name}")
                        return
                    declared = getattr(reader, "declared", None)
                    # the first pass may start at an offset: a later one, from the first frame, shows a short file
                    if self._rewinds and declared and produced < declared and not self._short_warned:
                        self._short_warned = True
                        log.warning(
                            "%s: %s ended after %d of the %d frames its header declares (truncated?); "
                            "replaying what can be read",
                            self.camera_id,
                            self.name,
                            produced,
                            declared,
                        )
                    self._rewinds += 1
                    continue  # rewind at once: this pass gave frames, so it cannot spin
                if reason is None:
                    reason = "no frame" if not produced else "the stream ended"
            self._lost(reason)
            self.wait(self.backoff.next())
        self.state = "ended"

    def _read(self, reader: Reader) -> int:
        produced = 0
        while not self.stop.is_set() and not self.finished:
            ok, frame = reader.read()
            if not ok:
                break
            produced += 1
            if self.state != "capturing":
                self._up()
            self._offer(frame)
        return produced

    def _offer(self, frame: Any) -> None:
        now = self.clock()
        if self._next_due is None:
            self._next_due = now
        if self.live:
            # keep a frame when one is due (a quarter period early is on time: sources jitter)
            if now < self._next_due - self.period / 4:
                return
        elif now < self._next_due:
            self.wait(self._next_due - now)
            if self.stop.is_set():
                return
        self.deliver(frame)
        self.delivered += 1
        self._next_due += self.period
        now = self.clock()
        if self._next_due < now - self.period:  # behind after a stall: no burst to catch up
            self._next_due = now

    def _up(self) -> None:
        now = self.clock()
        if self.state == "starting":
            self._set_state("capturing", f"{self.camera_id}: capturing from {self.name}")
        else:
            self.reconnects += 1
            self._set_state(
                "capturing",
                f"{self.camera_id}: {self.name} is back after {self.failures} attempts "
                f"({now - self._down_since:.0f} s without frames)",
            )
        self.failures = 0
        self._up_since = now
        self._next_due = None

    def _lost(self, reason: str) -> None:
        now = self.clock()
        self.failures += 1
        if self.state == "capturing" and now - self._up_since >= self.backoff.cap:
            self.backoff.reset()
        if self.state != "down":
            self._down_since = now
            what = "lost" if self.state == "capturing" else "cannot read"
            self._set_state(
                "down",
                f"{self.camera_id}: {what} {self.name}: {reason}; reconnecting with backoff "
                f"(at most {self.backoff.cap:g} s apart)",
                logging.WARNING,
            )

    def _set_state(self, state: str, message: str, level: int = logging.INFO) -> None:
        self.state = state
        log.log(level, message)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
