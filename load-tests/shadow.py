"""What a challenger in shadow costs: the worker's throughput with YOLOv4-tiny on 10% of the frames beside
NanoDet-m, as a ratio to NanoDet-m alone, measured side by side in one run.

    ./dev bench shadow [--quick] [--share 0.1] [--challenger yolov4-tiny] [--rounds 3] [--seconds 8]

Both configurations run the worker's processing path without a broker (``load-tests/processor.py``'s loop:
prepare batch k+1 while batch k is inferred, inference started before the batch before is judged), on the same
frames (8 cameras of the demo footage at 1280x720, JPEG), with the same champion session; the challenger is
assigned as the config topic would (``FrameProcessor.configure``), and sees the frames the hash of their id
picks. They take turns, round after round, so that a machine whose speed drifts (2 shared cores here) slows
both alike, and the ratio is the median of the rounds' ratios.

The target: a shadow should cost no more than the inference it adds. With ``t`` the bare inference time per
frame at the batch size (each model on its own batch: the challenger's are ``share`` of the champion's), it
adds ``share * t_challenger / t_champion`` of the champion's inference, so the throughput ratio should be at
least ``1 / (1 + share * t_challenger / t_champion)`` where inference bounds the worker. Prints a table, then
one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from processor import bare, camera_messages, footage, through_processor  # noqa: E402  (load-tests/processor.py)

from core.contracts import CameraConfig, ModelAssignment, unpack_frame  # noqa: E402
from core.settings import Settings  # noqa: E402
from models import load_detector  # noqa: E402
from streams.process import FrameProcessor  # noqa: E402


def counting(processor: FrameProcessor) -> dict:
    """Count the shadow predictions ``processor.finish`` gives (the frames the challenger saw)."""
    seen = {"shadow": 0}
    finish = processor.finish

    def counted(*args, **kwargs):
        result = finish(*args, **kwargs)
        seen["shadow"] += len(result.shadow_predictions)
        return result

    processor.finish = counted
    return seen


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 rounds of 3 s each")
    ap.add_argument("--share", type=float, default=0.1)
    ap.add_argument("--challenger", default="yolov4-tiny")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8.0, help="timed seconds per configuration and round")
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--size", default="1280x720", help="frame size the cameras send, WxH")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.seconds = 2, 3.0
    settings = Settings(embedding_model="")
    w, h = (int(v) for v in args.size.lower().split("x"))
    msgs = camera_messages(footage(None), args.cameras, (w, h), args.batch * 24, 80)
    images = [cv2.imdecode(np.frombuffer(unpack_frame(m.value).image, np.uint8), cv2.IMREAD_COLOR) for m in msgs]
    from streams.modelpool import load_options

    champion = load_detector(settings.model, **load_options(settings))
    challenger = load_detector(args.challenger, **load_options(settings))
    about = f"{champion.name} alone against {champion.name} with {challenger.name} on {args.share:.0%} of the frames"
    print(f"{about}; batch {args.batch}, {args.cameras} cameras at {w}x{h}; {os.cpu_count()} cores", file=sys.stderr)

    runs: dict[str, list[dict]] = {"off": [], "shadow": []}
    bare_ms: dict[str, list[float]] = {"champion": [], "challenger": []}
    # each model at the batch size it runs at: the challenger's batches hold the champion's frames it sees
    shadow_batch = max(1, round(args.share * args.batch))
    for r in range(args.rounds):
        for name, model, b in (("champion", champion, args.batch), ("challenger", challenger, shadow_batch)):
            bare_ms[name].append(1e3 / bare(model, images, b, args.seconds / 4))
        for config in ("off", "shadow") if r % 2 == 0 else ("shadow", "off"):
            p = FrameProcessor(settings, champion, decode_threads=settings.decode_workers,
                               load=lambda ref: challenger)  # fmt: skip
            seen = counting(p)
            if config == "shadow":
                p.configure("fleet", CameraConfig(scope="fleet", models=ModelAssignment(challenger=args.challenger,
                                                                                       share=args.share)))  # fmt: skip
            try:
                run = through_processor(p, msgs, args.batch, args.seconds)
            finally:
                p.close()
            run["shadow_frames"] = seen["shadow"]
            runs[config].append(run)
            print(f"  round {r + 1} {config}: {run['fps']:.1f} frames/s", file=sys.stderr)

    ratios = [s["fps"] / o["fps"] for s, o in zip(runs["shadow"], runs["off"], strict=True)]
    t_champion, t_challenger = (statistics.median(bare_ms[k]) for k in ("champion", "challenger"))
    seen_share = sum(r["shadow_frames"] for r in runs["shadow"]) / max(1, sum(r["frames"] for r in runs["shadow"]))
    added = seen_share * t_challenger / t_champion  # of the champion's inference
    row = {
        "fps_off": round(statistics.median(r["fps"] for r in runs["off"]), 2),
        "fps_shadow": round(statistics.median(r["fps"] for r in runs["shadow"]), 2),
        "ratio": round(statistics.median(ratios), 3),
        "ratios": [round(x, 3) for x in ratios],
        "target_ratio": round(1 / (1 + added), 3),
        "share_seen": round(seen_share, 3),
        "bare_ms_per_frame": {"champion": round(t_champion, 1), "challenger": round(t_challenger, 1)},
        "batches": {"champion": args.batch, "challenger": shadow_batch},
        "inference_added": round(added, 3),
    }
    print()
    print(f"{'config':>10}{'frames/s':>12}{'ratio':>10}{'target':>10}{'share seen':>12}")
    print(f"{'off':>10}{row['fps_off']:>12}{1.0:>10}{'':>10}{'':>12}")
    print(f"{'shadow':>10}{row['fps_shadow']:>12}{row['ratio']:>10}{row['target_ratio']:>10}{row['share_seen']:>12}")
    ms = row["bare_ms_per_frame"]
    print(f"(bare inference per frame: {champion.name} {ms['champion']} ms at batch {args.batch}, {challenger.name} "
          f"{ms['challenger']} ms at batch {shadow_batch}; the frames seen in shadow add {added:.1%} of the "
          f"champion's inference; load average {os.getloadavg()[0]:.1f})")  # fmt: skip
    print(json.dumps({"benchmark": "shadow", "champion": f"{champion.name}@{champion.version}",
                      "challenger": f"{challenger.name}@{challenger.version}", "share": args.share,
                      "batch": args.batch, "rounds": args.rounds, "seconds": args.seconds, **row,
                      "load_average": round(os.getloadavg()[0], 1), "cores": os.cpu_count()}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
