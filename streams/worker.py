"""The stream worker: a faust app that reads the frames topic and writes predictions, metrics,
alerts and dead letters. Thin wiring around :class:`streams.process.FrameProcessor`.

Dataflow, top to bottom::

    frames ──take_events(2 x batch_max_size, batch_max_wait)──▶ BatchPolicy: fair order, batch sizes
        ──▶ FrameProcessor.prepare (decode, pre-process; thread)
        ──▶ FrameProcessor.start_inference (the detector's lanes: the next batch starts before this one is judged)
        ──▶ FrameProcessor.finish (post-process, measure, judge; thread)
        ├──▶ predictions    one per decoded frame
        ├──▶ metrics        one per decoded frame
        ├──▶ alerts         when one of a camera's detectors raises or clears
        ├──▶ evidence       thumbnails of the frames that prove each raised alert
        ├──▶ views          each camera's latest view every CVOPS_VIEW_EVERY_S, and its reference view
        ├──▶ deadletters    one per frame that cannot be decoded, with the reason and the payload
        ├──▶ camera-health  per-camera monitor state (a faust Table, changelog in Kafka)
        └──▶ camera-reference  the moved-camera check's reference view, when a new one is learned (a Table)
        (a chunk's offsets are released for commit once all of these are acknowledged; see Delivery)

    feedback (labels for frames) ──▶ FrameProcessor.feedback (score; same thread) ──▶ alerts (concept_drift)
    config (fleet, site and camera settings and models, compacted; read whole by every worker)
        ──▶ FrameProcessor.configure (a record it refuses ──▶ deadletters)
    cameras (the inventory: each camera's site, compacted; read whole) ──▶ FrameProcessor.inventory

Models: a camera's frames go to its champion, and a share to its challenger in shadow (``shadow-predictions``),
as the config assigns them (:mod:`core.assignment`); the worker loads each model it is assigned once, and each
model has its own batches (:meth:`streams.process.FrameProcessor.route`).

Delivery: the agent takes chunks of frames and hands them on to stages (decode; infer; judge and send),
so that decoding, inference and the broker's acknowledgements overlap. Each message carries one extra
reference from the moment it is taken until every output record of its chunk is acknowledged by the
broker and the camera-state writes are flushed; only then is it acked, and faust commits only offsets
below the first message not yet acked. So a crash replays frames whose outputs may already be out
(at-least-once); the store absorbs the duplicates by frame id. Chunks taken before a rebalance and not
yet inferred are dropped, not acked: they come again from the committed offset.

Flow: outputs linger ``OUTPUT_LINGER_MS`` in the producer, so that a batch's records share a produce request.
On the embedded development broker, while frames for two batches are in hand (taken and not yet judged), the
frames consumer fetches no more (:func:`streams.devbroker.fetch_pacing.hold`), so that it fetches in fewer,
larger fetches (:mod:`streams.devbroker`, with the broker's other workarounds).

Stages: :mod:`streams.stages` holds the stages (take, prepare, infer, judge, publish, confirm) and what is in
flight between them; this module only wires them to faust.

Liveness: a worker whose frames partitions have had frames waiting for ``CVOPS_WORKER_STALL_S`` with no
offset committed stops and exits with status 3, for its supervisor to start it again (:mod:`streams.liveness`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import faust

from core.compacted import CompactedReader
from core.contracts import ContractError, DeadLetter, WorkerStatus, encode_record
from core.fleetconfig import ConfigFollower
from core.kafka import faust_credentials
from core.settings import Settings
from core.supervise import keep_running
from streams import devbroker, faust_fixes, liveness
from streams.batching import BatchPolicy
from streams.camera_states import CameraStates
from streams.devbroker import fetch_pacing
from streams.modelpool import gpu_options, loader
from streams.process import BatchResult, FrameProcessor, processing_failed, silence_clock
from streams.prometheus import WorkerMetrics
from streams.stages import OUTPUTS, Outputs, Stages

log = logging.getLogger("cvops.worker")
OUTPUT_LINGER_MS = 5  # how long an output record may wait for others to share its produce request


def load_detector(settings: Settings):
    """The worker's default detector, ``CVOPS_MODEL``: the champion of every camera the config assigns none."""
    return loader(settings)(settings.model)


def load_embedder(settings: Settings):
    if not settings.embedding_model:
        return None
    from models import load

    return load(
        settings.embedding_model,
        extra_dirs=settings.model_dirs,
        providers=settings.providers,
        intra_op_threads=settings.intra_op_threads or None,
        gpu=gpu_options(settings),
    )


def faust_app(settings: Settings) -> faust.App:
    return faust.App(
        settings.app_id,
        broker=[f"kafka://{h.strip()}" for h in settings.kafka_bootstrap.split(",")],
        broker_credentials=faust_credentials(settings),
        broker_session_timeout=settings.kafka_session_timeout_s,
        consumer_group_instance_id=settings.worker_id or None,
        broker_heartbeat_interval=settings.kafka_session_timeout_s / 4,
        store="memory://",
        # faust makes this folder at start, even with in-memory tables (restored from their changelogs):
        # nothing lasting is in it, so it goes to the temporary folder, not the working directory.
        datadir=str(Path(tempfile.gettempdir()) / f"{settings.app_id}-faust"),
        web_enabled=False,
        topic_disable_leader=True,
        topic_partitions=settings.frames_partitions,
        topic_replication_factor=settings.replication_factor,
        producer_acks=-1,
        # A batch's outputs (a prediction and a metrics record per frame, over several partitions) leave in
        # one or two produce requests instead of one each: measured, 9 requests per batch of 8 without it.
        producer_linger=OUTPUT_LINGER_MS / 1000,
        producer_max_request_size=settings.max_message_bytes * 2,
        consumer_max_fetch_size=settings.max_message_bytes * 2,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        stream_wait_empty=False,
        key_serializer="raw",
        value_serializer="raw",
    )


def camera_table(app: faust.App, name: str, partitions: int):
    """Keyed by camera id with the producer's partitioner, like the frames topic: a camera's state lives in
    the changelog partition with the frames topic's partition number, and moves with it on a rebalance."""
    return app.Table(
        name,
        default=None,
        partitions=partitions,
        use_partitioner=True,
        # Raw bytes keys, the camera id as the gateway sends it: the changelog record lands in the same
        # partition number as the camera's frames, and recovery gives back the same keys.
        key_type=bytes,
        # Raw values, JSON written and read by streams.camera_states: a changelog record that is not JSON is
        # then one camera's state learned again, where faust's own decoding stalls the recovery.
        value_type=bytes,  # faust takes a table's value codec from its type: bytes is "raw"
        schema=faust.Schema(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"),
    )


def draining(app: faust.App):
    """Flush the table writes: they wait in faust's producer buffer, whose flush at commit time gives up after
    0.1 s without progress, so that no offset is committed ahead of the camera state it produced (measured:
    a SIGKILL otherwise lost state that the committed offsets covered)."""

    async def drain_table_writes() -> None:
        deadline = time.monotonic() + 30.0
        while app.producer.buffer.size and time.monotonic() < deadline:
            await app.producer.buffer.flush()
        if app.producer.buffer.size:
            log.warning("%d camera state writes still pending after 30 s", app.producer.buffer.size)

    return drain_table_writes


def build_app(settings: Settings, detector=None) -> faust.App:
    faust_fixes.install()  # before any rebalance: see the module
    detector = detector or load_detector(settings)
    n = settings.frames_partitions
    app = faust_app(settings)

    def topic(name: str, partitions: int = n) -> faust.TopicT:
        return app.topic(settings.topic(name), partitions=partitions, key_serializer="raw", value_serializer="raw")

    frames, feedback = topic("frames"), topic("feedback")
    checkpoint = settings.state_checkpoint_frames
    states = CameraStates(camera_table(app, "camera-health", n), camera_table(app, "camera-reference", n), checkpoint)
    processor = FrameProcessor(
        settings, detector, decode_threads=settings.decode_workers, embedder=load_embedder(settings)
    )
    prometheus = WorkerMetrics()  # not "metrics": that is the metrics topic
    stages = Stages(
        processor,
        BatchPolicy(settings.batch_max_size, settings.batch_max_wait_ms, settings.preferred_sizes),
        states,
        Outputs({name: topic(name) for name in OUTPUTS}, topic("deadletters")),
        drain=draining(app),
        crash=app.crash,
        observe=prometheus.observe,
    )
    settings_read = follow_settings(app, settings, stages)
    log.info(
        "model %s@%s on %s, frames on %s; batches of up to %d frames, waiting at most %d ms",
        detector.name,
        detector.version,
        ",".join(detector.providers),
        processor.frames.name,
        settings.batch_max_size,
        settings.batch_max_wait_ms,
    )

    # The dataflow: frames ─▶ take ─▶ prepare ─▶ infer ─▶ judge, publish ─▶ confirm (streams.stages).
    @app.agent(frames, name="infer")
    async def take(stream):
        await settings_read()
        policy = stages.policy
        async for events in stream.take_events(policy.queue_limit, within=policy.max_queue_delay_ms / 1000):
            stages.hold(events)
            if settings.debug_stall_file and liveness.take_stall_file(settings.debug_stall_file):
                log.warning("test hook CVOPS_DEBUG_STALL_FILE: taking no more frames")
                await asyncio.Event().wait()  # this chunk's messages stay held: replayed after a restart
            await stages.take(events)

    @app.task
    async def prepare_chunks():
        while True:
            await stages.prepare_next()

    @app.task
    async def infer_chunks():  # and judge, publish, confirm
        while True:
            await stages.infer_next()

    @app.agent(feedback, name="feedback")
    async def on_feedback(stream):
        async for events in stream.take_events(200, within=1.0):
            await stages.feedback(events)

    @app.on_partitions_revoked.connect
    async def forget_cameras(sender, revoked, **kwargs):
        stages.revoke()

    @app.timer(max(1.0, settings.monitor_no_frames_s / 4))
    async def watch_silence():
        since_batch = 0.0 if stages.inflight.processing() else time.monotonic() - stages.stats.last_batch
        arrival = stages.stats.newest_arrival
        await stages.check_silence(silence_clock(time.time(), arrival, since_batch, settings.monitor_no_frames_s))

    consumer = WorkerConsumer(app, frames.get_topic_name())
    devbroker.attach_to_worker(
        app,
        settings,
        busy=stages.inflight.busy,
        kafka_consumer=consumer.kafka_consumer,
        member_id=consumer.member_id,
        frames_partitions=consumer.frames_partitions,
    )
    app.cvops_stalled = watch_liveness(app, settings, consumer)
    reporter = StatusReport(settings, detector, stages, prometheus, topic("workers", 1), consumer)
    app.timer(10.0)(reporter.send)
    if settings.metrics_port:
        prometheus.serve(settings.metrics_port, settings.metrics_host)
    app.cvops_processor = processor  # for tests and introspection
    return app


def follow_settings(app: faust.App, settings: Settings, stages: Stages) -> Callable[[], Awaitable[None]]:
    """Follow the config topic (the fleet's, sites' and cameras' settings and models) and the inventory (the
    cameras' sites) for as long as the worker runs; the function returned waits until both have been read whole,
    30 s at most each, before the first frame (a restarted worker must not judge with defaults): a topic that
    cannot be read by then is logged and followed later."""
    config = ConfigFollower(
        settings,
        lambda scope, record: apply_config(stages, scope, record),
        started=fetch_pacing.pace_slow_topic,
        refuse=lambda record, exc: refuse_config(stages, record, exc),
    )
    inventory = CompactedReader(
        settings, ["cameras"], stages.processor.inventory_record, started=fetch_pacing.pace_slow_topic
    )
    inventory_read = asyncio.Event()

    @app.task
    async def follow_config():
        # The broker gone for a while must not stop the worker: read the topic again later.
        await keep_running(config.run, "config follower")

    @app.task
    async def follow_inventory():
        await keep_running(lambda: inventory.follow(asyncio.Event(), inventory_read), "inventory follower")

    async def read() -> None:
        if not await config.wait_loaded(30.0):
            log.warning("the config topic was not read within 30 s: starting with the CVOPS_ settings")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(inventory_read.wait(), 30.0)

    return read


async def apply_config(stages: Stages, scope: str, record) -> None:
    await stages.configure(scope, record)
    log.info("config %s %s", scope, record.overrides.model_dump(exclude_none=True) if record else "removed")
    if record is not None and record.models is not None:
        log.info("config %s models %s", scope, record.models.model_dump(exclude_none=True))


async def refuse_config(stages: Stages, record, exc: Exception) -> None:
    """A config record the worker cannot apply (a model its registry does not have...): a dead letter."""
    err = exc if isinstance(exc, ContractError) else processing_failed(exc)
    letter = DeadLetter.of(record.topic, record.partition, record.offset, record.key, record.value, err)
    await asyncio.gather(*await stages.outputs.publish(BatchResult(dead_letters=[letter])))
    stages.stats.dead_letters += 1


class WorkerConsumer:
    """What the worker reads of faust's consumer: its frames partitions, its aiokafka consumer, its member id."""

    def __init__(self, app: faust.App, frames_topic: str):
        self.app = app
        self.frames_topic = frames_topic

    def kafka_consumer(self):
        # faust keeps its aiokafka consumer private; its own rebalance logging reaches it this way.
        return self.app.consumer._thread._ensure_consumer()

    def member_id(self) -> str:
        try:
            return self.kafka_consumer()._coordinator.member_id or ""
        except Exception:
            return ""

    def frames_partitions(self) -> list[int]:
        return sorted(tp.partition for tp in self.app.consumer.assignment() if tp.topic == self.frames_topic)

    def held_frames_partitions(self) -> list[int] | None:
        """The frames partitions held now; None while rebalancing (a table's recovery included)."""
        if self.app.rebalancing:
            return None
        try:
            return self.frames_partitions()
        except Exception:  # the consumer not started yet
            return None


def watch_liveness(app: faust.App, settings: Settings, consumer: WorkerConsumer) -> threading.Event:
    """Stop the worker once its frames partitions stall (:mod:`streams.liveness`); the event returned is set
    then: :func:`run_worker`'s exit status."""
    stalled = threading.Event()
    if not settings.worker_stall_s:
        return stalled

    @app.task
    async def watch():
        done = asyncio.Event()

        async def stop(partitions: list[liveness.Stalled]) -> None:
            done.set()
            stalled.set()
            log.error(
                "stalled: frames waiting and no offset committed for %.0f s (CVOPS_WORKER_STALL_S) on %s %s; "
                "exiting with status %d so that the supervisor starts the worker again",
                settings.worker_stall_s,
                consumer.frames_topic,
                liveness.describe(partitions),
                liveness.EXIT_STALLED,
            )
            await app.crash(liveness.WorkerStalled(liveness.describe(partitions)))

        watch = liveness.LivenessWatch(settings, consumer.held_frames_partitions, stop)
        await keep_running(watch.run, "liveness watch", done)

    return stalled


class StatusReport:
    """Every 10 s: the worker's status on the workers topic, its lag and cameras for Prometheus, and a log line."""

    def __init__(self, settings: Settings, detector, stages: Stages, prometheus, workers, consumer: WorkerConsumer):
        self.settings = settings
        self.detector = detector
        self.stages = stages
        self.prometheus = prometheus
        self.workers = workers
        self.consumer = consumer
        self.worker_id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"

    async def send(self) -> None:
        stats, settings = self.stages.stats, self.settings
        elapsed = time.monotonic() - stats.since
        lag_s = max(0.0, stats.batch_wall - stats.newest_arrival) if stats.newest_arrival else 0.0
        self.prometheus.lag_s.set(lag_s)
        self.prometheus.cameras.set(len(self.stages.processor.cameras))
        if lag_s > settings.frames_retention_ms / 2000:
            log.warning(
                "%.0f s behind: frames older than the frames topic's retention (%.0f s) expire unprocessed; "
                "add workers (up to the partition count) or raise CVOPS_FRAMES_RETENTION_MS",
                lag_s,
                settings.frames_retention_ms / 1000,
            )
        assigned = self.consumer.frames_partitions()
        status = WorkerStatus(
            worker_id=self.worker_id,
            model_name=self.detector.name,
            model_version=self.detector.version,
            models=self.stages.processor.pool.refs,
            providers=list(getattr(self.detector, "providers", [])),
            decoder=self.stages.processor.frames.name,
            batch_max_size=settings.batch_max_size,
            partitions=assigned,
            frames_per_s=round(stats.frames / elapsed, 2),
            mean_batch=round(stats.frames / stats.batches, 2) if stats.batches else 0.0,
            dead_letters=stats.dead_letters,
            alerts=stats.alerts,
            lag_s=round(lag_s, 2),
            config_updated_at=stats.config_updated_at,
            member_id=self.consumer.member_id(),
            sent_at=time.time(),
        )
        await self.workers.send(key=self.worker_id.encode(), value=encode_record(status))
        if stats.batches or assigned:
            log.info(
                "%.1f frames/s over %.0f s, mean batch %.1f, %d alerts, %d dead letters",
                stats.frames / elapsed,
                elapsed,
                status.mean_batch,
                stats.alerts,
                stats.dead_letters,
            )
        stats.reset()


def run_worker(settings: Settings) -> None:
    """Run the worker in the foreground until SIGINT/SIGTERM."""
    from core.topology import create_topics

    asyncio.run(create_topics(settings))
    app = build_app(settings)
    # A stall may be a thread that never returns: end the process if stopping takes longer than this.
    liveness.exit_if_still_running(app.cvops_stalled, grace_s=30.0)
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit:
        if app.cvops_stalled.is_set():
            raise SystemExit(liveness.EXIT_STALLED) from None
        raise
