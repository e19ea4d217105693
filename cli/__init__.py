"""The ``cvops`` command. Every subcommand reads the same ``CVOPS_*`` settings (see core.settings)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time

from core.settings import Settings
from streams import devbroker


def _setup_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _cmd_broker(args, settings: Settings) -> int:
    from streams.localbroker import EmbeddedBroker

    broker = EmbeddedBroker(args.data_dir, args.port).start()
    print(f"broker at {broker.bootstrap}; Ctrl-C stops it", flush=True)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    try:
        while not stop["now"] and broker.proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    broker.stop()
    return 0


def _cmd_topics(args, settings: Settings) -> int:
    from core.topology import create_topics, topology

    created = asyncio.run(create_topics(settings))
    print(f"{'topic':<28} {'partitions':>10} {'retention':>12}  contract")
    for t in topology(settings):
        mark = " (created)" if settings.topic(t.name) in created else ""
        keep = "compacted" if t.compact else f"{t.retention_ms / 1000:.0f} s"
        print(f"{settings.topic(t.name):<28} {t.partitions:>10} {keep:>12}  {t.label}{mark}")
    return 0


def _tag(text: str) -> tuple[str, str]:
    key, eq, value = text.partition("=")
    if not eq:
        raise ValueError(f"a tag is KEY=VALUE, not {text!r}")
    return key, value


def _cmd_gateway(args, settings: Settings) -> int:
    from core.contracts import CameraInfo
    from core.topology import create_topics
    from streams.gateway import Fault, declare_cameras, publish

    faults = tuple(Fault.parse(f) for f in args.fault)
    try:
        tags = dict(_tag(t) for t in args.tag)
        CameraInfo(camera_id="x", source="gateway", site=args.site, tags=tags, gateway=args.gateway_id)
    except ValueError as exc:
        print(f"cvops gateway: --site, --tag or --gateway-id: {exc}", file=sys.stderr)
        return 2
    count = args.cameras or max(1, len(args.source or ()))

    async def main() -> int:
        await create_topics(settings)
        ids = [f"{args.camera_prefix}{i + 1}" for i in range(count)]
        await declare_cameras(settings, ids, args.site, tags, args.gateway_id)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await publish(
            settings,
            source=args.source or None,
            cameras=args.cameras,
            camera_prefix=args.camera_prefix,
            fps=args.fps,
            max_frames=args.frames,
            duration_s=args.duration,
            faults=faults,
            loop=not args.once,
            replay=args.replay,
            stop=stop,
            buffer_frames=args.buffer_frames,
            reconnect_max_s=args.reconnect_max,
        )

    sent = asyncio.run(main())
    print(json.dumps({"frames_published": sent}))
    return 0


def _cmd_feedback(args, settings: Settings) -> int:
    """Publish labels (Feedback records, one JSON object per line) on the feedback topic, keyed by camera."""
    from aiokafka import AIOKafkaProducer

    from core.contracts import ContractError, Feedback, decode_record, encode_record, load_json
    from core.kafka import client_options

    records, bad = [], 0
    with open(args.file) if args.file != "-" else sys.stdin as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                raw = load_json(line)
                if isinstance(raw, dict):
                    raw.setdefault("schema_version", 1)
                records.append(decode_record(Feedback, json.dumps(raw)))
            except ContractError as exc:
                bad += 1
                print(f"line {n}: {exc}", file=sys.stderr)
    if bad:
        print(f"{bad} line(s) are not Feedback records: nothing sent", file=sys.stderr)
        return 2

    async def main() -> None:
        producer = AIOKafkaProducer(**client_options(settings), acks="all")
        await producer.start()
        try:
            for r in records:
                await producer.send_and_wait(settings.topic("feedback"), encode_record(r), key=r.camera_id.encode())
        finally:
            await producer.stop()

    asyncio.run(main())
    print(json.dumps({"feedback_published": len(records)}))
    return 0


def _cmd_worker(args, settings: Settings) -> int:
    from streams.worker import run_worker

    run_worker(settings)
    return 0


def _cmd_api(args, settings: Settings) -> int:
    from api.app import run_api
    from streams.devbroker import fetch_pacing

    # The API imports nothing of the worker's: the development broker's pacing of slow topics is handed in here.
    run_api(settings, slow_consumer_started=fetch_pacing.pace_slow_topic)
    return 0


def _cmd_store_writer(args, settings: Settings) -> int:
    from store import connect
    from store.schema import migrate
    from store.writer import StoreWriter

    async def main() -> None:
        store = connect(settings.store_dsn)
        migrate(store, settings.ttl_days)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await StoreWriter(settings, store).run(stop)
        store.close()

    asyncio.run(main())
    return 0


def _cmd_incidents(args, settings: Settings) -> int:
    from core.topology import create_topics
    from streams.incident_stream import IncidentProcessor, Notifier, parse_routes

    try:
        routes = parse_routes(settings.notify_routes.get_secret_value())
    except ValueError as exc:
        print(f"cvops incidents: {exc}", file=sys.stderr)
        return 2

    async def main() -> None:
        await create_topics(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        tasks = [IncidentProcessor(settings).run(stop)] + ([Notifier(settings, routes).run(stop)] if routes else [])
        await asyncio.gather(*tasks)

    asyncio.run(main())
    return 0


def _cmd_models(args, settings: Settings) -> int:
    from models import discover

    specs = discover(settings.model_dirs)
    if args.json:
        print(json.dumps([s.summary() for s in specs], indent=2))
        return 0
    print(f"{'model':<28} {'task':<15} {'family':<20} {'input':<18} licence")
    for s in specs:
        shape = "x".join(str(d) for d in s.manifest["input"]["shape"][1:])
        print(f"{s.ref:<28} {s.task:<15} {s.family:<20} {shape:<18} {s.manifest['licence']}")
    return 0


def _cmd_demo(args, settings: Settings) -> int:
    from streams.demo import run_demo

    return run_demo(settings, duration_s=args.duration, cameras=args.cameras, fps=args.fps, source=args.source)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cvops", description="Streaming inference and monitoring for camera fleets.")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("broker", help="run the embedded Kafka-protocol broker (development only)")
    b.add_argument("--port", type=int, default=9092)
    b.add_argument("--data-dir", default=".cvops/broker")
    b.set_defaults(func=_cmd_broker)

    sub.add_parser("topics", help="create the topics (idempotent) and list them").set_defaults(func=_cmd_topics)

    g = sub.add_parser("gateway", help="publish frames from a video, a folder, a device or a URL")
    g.add_argument(
        "--source",
        action="append",
        help="video file, image folder, device index or URL (default: bikes.mp4); repeat it for several "
        "sources: camera i reads source i modulo their number",
    )
    g.add_argument("--cameras", type=int, help="cameras fed from the sources (default: one per source)")
    g.add_argument("--camera-prefix", default="cam-", help="camera ids are PREFIX1, PREFIX2, ...")
    g.add_argument("--fps", type=float, help="frames per second per camera (default CVOPS_GATEWAY_FPS)")
    g.add_argument("--frames", type=int, help="stop after this many frames per camera")
    g.add_argument("--duration", type=float, help="stop after this many seconds")
    g.add_argument("--once", action="store_true", help="play a file once instead of looping it")
    g.add_argument("--fault", action="append", default=[], help="CAMERA:KIND:SECONDS, KIND blur or dark")
    g.add_argument("--site", help="the site of these cameras (incidents group a site's cameras)")
    g.add_argument("--tag", action="append", default=[], help="KEY=VALUE label of these cameras; repeatable")
    g.add_argument("--gateway-id", help="this gateway's id (incidents group the cameras behind one gateway)")
    g.add_argument(
        "--replay",
        choices=["auto", "shots", "stream"],
        default="auto",
        help="shots: each camera replays one shot of edited footage back and forth, like a fixed camera; "
        "stream: frames as they play. auto: shots for video files, stream for folders, devices and URLs",
    )
    g.add_argument(
        "--buffer-frames",
        type=int,
        default=1000,
        help="frames held while the broker is away or slow, all cameras together; the oldest are dropped",
    )
    g.add_argument(
        "--reconnect-max", type=float, default=30.0, help="seconds at most between attempts to reopen a camera"
    )
    g.set_defaults(func=_cmd_gateway)

    fb = sub.add_parser("feedback", help="publish labels for frames (JSON lines: frame_id, camera_id, objects)")
    fb.add_argument("file", help="JSON-lines file of Feedback records, or - for standard input")
    fb.set_defaults(func=_cmd_feedback)
    sub.add_parser("worker", help="run the stream worker (inference, metrics, alerts)").set_defaults(func=_cmd_worker)
    sub.add_parser("api", help="run the HTTP API (and the store writer)").set_defaults(func=_cmd_api)
    sub.add_parser("store-writer", help="run the store writer on its own").set_defaults(func=_cmd_store_writer)
    sub.add_parser(
        "incidents", help="group alerts across cameras into incidents and send them on CVOPS_NOTIFY_ROUTES"
    ).set_defaults(func=_cmd_incidents)

    m = sub.add_parser("models", help="list the models in the registry")
    m.add_argument("--json", action="store_true", help="full manifests' summaries as JSON")
    m.set_defaults(func=_cmd_models)

    d = sub.add_parser("demo", help="broker, worker, API and 4 cameras of real footage on this machine")
    d.add_argument("--duration", type=float, help="seconds to run, then print a JSON summary (default: until Ctrl-C)")
    d.add_argument("--cameras", type=int, default=4)
    d.add_argument("--fps", type=float, default=5.0, help="frames per second per camera")
    d.add_argument("--source", help="footage to replay (default: bikes.mp4)")
    d.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
    except Exception as exc:
        print(f"cvops: bad configuration: {exc}", file=sys.stderr)
        return 2
    _setup_logging(settings)
    if args.command not in ("broker", "models", "demo"):  # these talk to a broker: its profile, its workarounds
        devbroker.install(settings)
    try:
        return args.func(args, settings)
    except KeyboardInterrupt:
        return 130
    except (FileNotFoundError, RuntimeError, ValueError, OSError) as exc:
        print(f"cvops {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
