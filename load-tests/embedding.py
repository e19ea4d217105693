"""Embedding benchmark: what an image embedding for drift monitoring costs next to the detector, and whether
it sees what drift monitoring needs.

    ./dev bench embedding [--quick] [--batch 8] [--threads 0]

Cost, one run, same machine, same frames (real footage: ``fixed_cameras(None, 4, 80)``, JPEGs decoded with
OpenCV beforehand, so decoding, which every variant pays alike, is left out and reported apart):

- ``detector``: NanoDet-m alone (preprocess + inference + postprocess), batches of ``--batch`` frames;
- ``every_frame``: the same plus EfficientNet-Lite0 (preprocess + inference; its ``embedding`` output,
  1280-d) on every frame, one classifier batch per detector batch;
- ``1_in_k`` (k = 5, 10): the detector on every frame, the embedding on one frame in k; sampled frames
  wait until ``--batch`` of them are pending and are embedded as one batch (drift monitoring is not
  latency-bound, and a full batch is cheaper per frame than many batches of 1 or 2).

The variants are timed in interleaved rounds (detector, every frame, 1 in 5, 1 in 10, then backwards...)
and each one's fps is its median over the rounds, so a neighbour's load on shared cores hits all of them
alike; a 1-in-k round is a whole number of 10-batch cycles, so it embeds exactly 1/k of its frames.
``cost_*`` = detector_fps / variant_fps - 1: the extra time per frame the embedding adds. The same costs
are also derived from interleaved component medians (``cost_from_components``: embedding ms per batch / k
over detector ms per batch), which a busy neighbour disturbs less.

Quality, on embeddings of frames of the 4 cameras (each camera replays one shot of the footage):

- ``same_camera_cosine``: mean cosine similarity between two frames of one camera;
- ``other_camera_cosine``: mean cosine between frames of different cameras (lower = scenes separated);
  both also after centring on the fleet's mean embedding (``*_centred``: the raw 1280-d vectors are
  post-ReLU averages, all positive, so raw cosines sit high), and ``camera_accuracy``: nearest camera
  centroid (centroids from the first half of each camera's frames) for the second half;
- ``blur_cosine``, ``dark_cosine``: cosine between a frame and its blurred (Gaussian, sigma 6) or darkened
  (x0.25) copy, the gateway's simulated faults; an embedding that is useful for drift moves here, i.e.
  these sit well under ``same_camera_cosine``.

``*_shift`` puts these on one scale: (1 - cosine) over (1 - same_camera_cosine), how many times the usual
distance between two frames of one camera a fault or another camera moves a frame.

The alternative, ``backbone_alternative``: NanoDet-m's own stride-32 backbone features (ShuffleNetV2
stage 4, [N,512,13,13]) average-pooled into an extra ONNX output, so one detector run yields detections
and a 512-d embedding. It is built in memory with the ``onnx`` package when that is installed (the zoo's
file and manifest stay as they are) and measured the same way; without ``onnx`` it is skipped with a note.

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import load, load_detector, resolve
from streams.gateway import apply_fault, fixed_cameras

CAMERAS = 4


def decode_frames(per_camera: int) -> tuple[list[np.ndarray], list[int], float]:
    """Interleaved frames of the 4 cameras (cam0, cam1, cam2, cam3, cam0...), their camera, decode ms/frame."""
    cams = fixed_cameras(None, CAMERAS, 80)
    frames, camera, t = [], [], 0.0
    for _ in range(per_camera):
        for c in range(CAMERAS):
            data = next(cams[c]).data
            t0 = time.perf_counter()
            frames.append(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
            t += time.perf_counter() - t0
            camera.append(c)
    return frames, camera, 1e3 * t / len(frames)


class Variant:
    """Detector on every batch; the embedding on every frame (k=1), on one frame in k, or never (k=0)."""

    def __init__(self, name: str, detector, classifier, k: int, batch: int) -> None:
        self.name, self.detector, self.classifier, self.k, self.batch = name, detector, classifier, k, batch
        self.pending: list[np.ndarray] = []
        self.seen = 0
        self.embedded = 0

    def step(self, frames: list[np.ndarray]) -> None:
        self.detector.detect(frames)
        if self.k == 1:
            self._embed(frames)
        elif self.k > 1:
            for f in frames:
                if self.seen % self.k == 0:
                    self.pending.append(f)
                self.seen += 1
            if len(self.pending) >= self.batch:
                self._embed(self.pending[: self.batch])
                del self.pending[: self.batch]

    def _embed(self, frames: list[np.ndarray]) -> None:
        self.classifier.infer(self.classifier.preprocess(frames))["embedding"]
        self.embedded += len(frames)


BACKBONE_TENSOR = "Concat_88:0"  # NanoDet-m's ShuffleNetV2 stage-4 output, [N, 512, 13, 13] (stride 32)


class BackboneDetector:
    """The alternative: NanoDet-m with one more output, its stride-32 backbone features average-pooled
    ([N, 512]), built in memory with the ``onnx`` package (the zoo's file and manifest are untouched). One
    session run gives detections and the embedding."""

    def __init__(self, detector, path: Path, threads: int | None) -> None:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper

        model = onnx.load(str(path))
        names = {o for n in model.graph.node for o in n.output}
        if BACKBONE_TENSOR not in names:
            raise ValueError(f"{BACKBONE_TENSOR} is not a tensor of {path}")
        model.graph.node.extend(
            [
                helper.make_node("GlobalAveragePool", [BACKBONE_TENSOR], ["backbone_pooled"]),
                helper.make_node("Flatten", ["backbone_pooled"], ["backbone_embedding"], axis=1),
            ]
        )
        model.graph.output.append(helper.make_tensor_value_info("backbone_embedding", TensorProto.FLOAT, ["N", 512]))
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.detector = detector
        self.session = ort.InferenceSession(
            model.SerializeToString(), sess_options=options, providers=detector.session.get_providers()
        )
        self.outputs = [*detector.output_names, "backbone_embedding"]

    def run(self, frames: list[np.ndarray]) -> np.ndarray:
        outs = self.session.run(self.outputs, {self.detector.input_name: self.detector.preprocess(frames)})
        self.detector.postprocess(outs[:-1], [f.shape[:2] for f in frames])
        return outs[-1]

    detect = run


def timed_round(variant: Variant, batches: list[list[np.ndarray]], n_batches: int) -> float:
    """Frames per second of one variant over ``n_batches`` batches, from a clean state. For 1 in k,
    ``n_batches`` is a multiple of k, so each round embeds exactly len(frames)/k frames in full batches."""
    variant.pending.clear()
    variant.seen = 0
    done, start = 0, time.perf_counter()
    for i in range(n_batches):
        variant.step(batches[i % len(batches)])
        done += len(batches[i % len(batches)])
    return done / (time.perf_counter() - start)


def component_ms(detector, classifier, batches: list[list[np.ndarray]], repeats: int) -> tuple[float, float]:
    """Median ms of one detector batch and of one embedding batch, interleaved."""
    det, emb = [], []
    for i in range(repeats):
        frames = batches[i % len(batches)]
        t0 = time.perf_counter()
        detector.detect(frames)
        t1 = time.perf_counter()
        classifier.infer(classifier.preprocess(frames))
        t2 = time.perf_counter()
        det.append(t1 - t0)
        emb.append(t2 - t1)
    return 1e3 * float(np.median(det)), 1e3 * float(np.median(emb))


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def camera_similarity(emb: np.ndarray, camera: np.ndarray) -> tuple[float, float]:
    """Mean cosine of pairs of one camera (self-pairs left out), and of pairs of different cameras."""
    sim = cosine_matrix(emb, emb)
    same = camera[:, None] == camera[None, :]
    off_diagonal = ~np.eye(len(emb), dtype=bool)
    return float(sim[same & off_diagonal].mean()), float(sim[~same].mean())


def embed_all(embed, frames: list[np.ndarray], batch: int) -> np.ndarray:
    out = [embed(frames[i : i + batch]) for i in range(0, len(frames), batch)]
    return np.concatenate(out).astype(np.float64)


def quality(embed, frames: list[np.ndarray], camera: list[int], batch: int) -> dict:
    """Scene separation and fault sensitivity of ``embed`` (frames -> [N, D])."""
    cam = np.asarray(camera)
    emb = embed_all(embed, frames, batch)
    same, other = camera_similarity(emb, cam)
    centred = emb - emb.mean(axis=0)
    same_c, other_c = camera_similarity(centred, cam)
    # Nearest camera centroid: centroids from each camera's first half, tested on the second half.
    half = np.arange(len(frames)) < len(frames) // 2
    centroids = np.stack([emb[half & (cam == c)].mean(axis=0) for c in range(CAMERAS)])
    guess = np.argmax(cosine_matrix(emb[~half], centroids), axis=1)
    accuracy = float((guess == cam[~half]).mean())
    # Faults: one frame in two of each camera, blurred and darkened as the gateway simulates them.
    pick = list(range(0, len(frames), 2))
    originals = emb[pick]
    moved = {}
    for fault in ("blur", "dark"):
        faulty = embed_all(embed, [apply_fault(frames[i], fault) for i in pick], batch)
        cos = np.sum(originals * faulty, axis=1) / np.linalg.norm(originals, axis=1) / np.linalg.norm(faulty, axis=1)
        to_own = cosine_matrix(faulty, centroids)[np.arange(len(pick)), cam[pick]]
        moved[fault] = (float(cos.mean()), float(to_own.mean()))
    per_camera = [
        float(cosine_matrix(emb[cam == c], emb[cam == c])[~np.eye(int((cam == c).sum()), dtype=bool)].mean())
        for c in range(CAMERAS)
    ]
    return {
        "same_camera_cosine": round(same, 4),
        "other_camera_cosine": round(other, 4),
        "same_camera_cosine_centred": round(same_c, 4),
        "other_camera_cosine_centred": round(other_c, 4),
        "same_camera_cosine_per_camera": [round(v, 4) for v in per_camera],
        "camera_accuracy": round(accuracy, 3),
        "blur_cosine": round(moved["blur"][0], 4),
        "dark_cosine": round(moved["dark"][0], 4),
        # Scale-free: how far a fault (or another camera) moves a frame, in units of the usual distance
        # (1 - cosine) between two frames of one camera. Comparable across embeddings of any dimension.
        "blur_shift": round((1 - moved["blur"][0]) / (1 - same), 2),
        "dark_shift": round((1 - moved["dark"][0]) / (1 - same), 2),
        "other_camera_shift": round((1 - other) / (1 - same), 2),
        "blur_to_own_centroid": round(moved["blur"][1], 4),
        "dark_to_own_centroid": round(moved["dark"][1], 4),
        "quality_frames": len(frames),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter rounds: finishes in under a minute")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = one per core)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (default 2 quick, 3)")
    ap.add_argument("--cycles", type=int, default=None, help="10-batch cycles per variant per round (1 quick, 2)")
    args = ap.parse_args()
    rounds = args.rounds or (2 if args.quick else 3)
    cycles = args.cycles or (1 if args.quick else 2)
    per_camera = 16 if args.quick else 40
    t_start = time.monotonic()

    threads = args.threads or None
    detector = load_detector("nanodet-m", intra_op_threads=threads)
    classifier = load("efficientnet-lite0", intra_op_threads=threads)
    frames, camera, decode_ms = decode_frames(per_camera)
    print(
        f"{len(frames)} frames of {CAMERAS} cameras ({frames[0].shape[1]}x{frames[0].shape[0]}); "
        f"detector on {detector.providers[0]}, embedding on {classifier.providers[0]}",
        file=sys.stderr,
    )
    b = args.batch
    batches = [frames[i : i + b] for i in range(0, len(frames) - b + 1, b)]
    backbone, backbone_note = None, None
    try:
        backbone = BackboneDetector(detector, resolve("nanodet-m").path, threads)
    except ImportError:
        backbone_note = "not measured: the onnx package is not installed (pip install onnx==1.22.0)"
    except Exception as e:  # a model whose graph differs: say so, measure the rest
        backbone_note = f"not measured: {e}"
    variants = [
        Variant("detector", detector, classifier, 0, b),
        Variant("every_frame", detector, classifier, 1, b),
        Variant("1_in_5", detector, classifier, 5, b),
        Variant("1_in_10", detector, classifier, 10, b),
    ]
    if backbone is not None:
        variants.append(Variant("backbone", backbone, classifier, 0, b))
    for v in variants:  # warm-up: one batch each (the 1-in-k ones then start with frames pending: fine)
        v.step(batches[0])
    classifier.infer(classifier.preprocess(batches[0]))
    fps: dict[str, list[float]] = {v.name: [] for v in variants}
    for r in range(rounds):
        for v in variants if r % 2 == 0 else variants[::-1]:  # alternate the order: no variant always first
            # 10 batches = an exact cycle of both 1-in-5 and 1-in-10; detector and every-frame need no cycle.
            n = 10 * cycles if v.k > 1 else 5 * cycles
            fps[v.name].append(timed_round(v, batches, n))
    det_ms, emb_ms = component_ms(detector, classifier, batches, 4 if args.quick else 10)
    med = {name: float(np.median(values)) for name, values in fps.items()}
    embed = lambda f: classifier.infer(classifier.preprocess(f))["embedding"]  # noqa: E731
    q = quality(embed, frames, camera, b)
    qb = quality(backbone.run, frames, camera, b) if backbone is not None else {}

    result = {
        "benchmark": "embedding",
        "detector": f"{detector.name}@{detector.version}",
        "embedding": f"{classifier.name}@{classifier.version} (output 'embedding', 1280-d)",
        "providers": {"detector": detector.providers[0], "embedding": classifier.providers[0]},
        "batch": b,
        "threads": args.threads or os.cpu_count(),
        "frames": len(frames),
        "decode_ms_per_frame": round(decode_ms, 2),
        "detector_fps": round(med["detector"], 2),
        "with_embedding_every_frame_fps": round(med["every_frame"], 2),
        "with_embedding_1_in_5_fps": round(med["1_in_5"], 2),
        "with_embedding_1_in_10_fps": round(med["1_in_10"], 2),
        "cost_every_frame": round(med["detector"] / med["every_frame"] - 1, 3),
        "cost_1_in_5": round(med["detector"] / med["1_in_5"] - 1, 3),
        "cost_1_in_10": round(med["detector"] / med["1_in_10"] - 1, 3),
        "fps_rounds": {k: [round(x, 2) for x in v] for k, v in fps.items()},
        # The same costs from component medians (stabler under a noisy neighbour): emb_ms / k / det_ms.
        "detector_ms_per_batch": round(det_ms, 1),
        "embedding_ms_per_batch": round(emb_ms, 1),
        "cost_from_components": {f"1_in_{k}": round(emb_ms / k / det_ms, 3) for k in (1, 5, 10)},
        **q,
        "backbone_alternative": (
            {
                "what": f"NanoDet-m + GlobalAveragePool({BACKBONE_TENSOR}) as an extra output, 512-d",
                "fps": round(med["backbone"], 2),
                "cost": round(med["detector"] / med["backbone"] - 1, 3),
                **{k: v for k, v in qb.items() if k != "quality_frames"},
            }
            if backbone is not None
            else backbone_note
        ),
        "rounds": rounds,
        "cycles_per_round": cycles,
        "quick": args.quick,
        "elapsed_s": round(time.monotonic() - t_start, 1),
    }
    rows = [
        ("NanoDet-m alone", f"{result['detector_fps']} fps", "-"),
        ("+ embedding every frame", f"{result['with_embedding_every_frame_fps']} fps",
         f"{result['cost_every_frame']:+.0%}"),
        ("+ embedding 1 frame in 5", f"{result['with_embedding_1_in_5_fps']} fps", f"{result['cost_1_in_5']:+.0%}"),
        ("+ embedding 1 frame in 10", f"{result['with_embedding_1_in_10_fps']} fps",
         f"{result['cost_1_in_10']:+.0%}"),
        (f"components, ms per batch of {b}", f"det {det_ms:.0f} / emb {emb_ms:.0f}",
         f"1/k: {emb_ms / det_ms:+.0%} {emb_ms / 5 / det_ms:+.0%} {emb_ms / 10 / det_ms:+.0%}"),
        ("JPEG decode (all variants)", f"{result['decode_ms_per_frame']} ms/frame", ""),
        ("cosine same camera / other", f"{q['same_camera_cosine']} / {q['other_camera_cosine']}", "raw"),
        ("cosine same camera / other", f"{q['same_camera_cosine_centred']} / {q['other_camera_cosine_centred']}",
         "centred"),
        ("nearest camera centroid", f"{q['camera_accuracy']:.0%} right", ""),
        ("cosine to own: blurred / dark", f"{q['blur_cosine']} / {q['dark_cosine']}", ""),
        ("shift x same-camera: other/blur/dark", f"{q['other_camera_shift']} / {q['blur_shift']} / {q['dark_shift']}",
         ""),
    ]  # fmt: skip
    if backbone is not None:
        bb = result["backbone_alternative"]
        rows += [
            ("alt: NanoDet backbone pooled", f"{bb['fps']} fps", f"{bb['cost']:+.0%}"),
            ("alt: cosine same / other", f"{bb['same_camera_cosine']} / {bb['other_camera_cosine']}", "raw"),
            ("alt: cosine same / other", f"{bb['same_camera_cosine_centred']} / {bb['other_camera_cosine_centred']}",
             "centred"),
            ("alt: nearest camera centroid", f"{bb['camera_accuracy']:.0%} right", ""),
            ("alt: cosine blurred / dark", f"{bb['blur_cosine']} / {bb['dark_cosine']}", ""),
            ("alt: shift other/blur/dark", f"{bb['other_camera_shift']} / {bb['blur_shift']} / {bb['dark_shift']}", ""),
        ]  # fmt: skip
    else:
        rows.append(("alt: NanoDet backbone pooled", backbone_note, ""))
    width = max(len(r[0]) for r in rows)
    print(f"{'batch ' + str(b):<{width}}  {'throughput / value':<22}  cost")
    for name, value, cost in rows:
        print(f"{name:<{width}}  {value:<22}  {cost}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
