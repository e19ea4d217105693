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
    config (fleet and camera settings, compacted; read whole by every worker) ──▶ FrameProcessor.configure

Delivery: the agent takes chunks of frames and hands them on to stages (decode; infer; judge and send),
so that decoding, inference and the broker's acknowledgements overlap. Each message carries one extra
reference from the moment it is taken until every output record of its chunk is acknowledged by the
broker and the camera-state writes are flushed; only then is it acked, and faust commits only offsets
below the first message not yet acked. So a crash replays frames whose outputs may already be out
(at-least-once); the store absorbs the duplicates by frame id. Chunks taken before a rebalance and not
yet inferred are dropped, not acked: they come again from the committed offset.

Flow: while frames for two batches are in hand (taken and not yet judged), the frames consumer fetches no
more (:func:`streams.fetch_pacing.hold`), so that it fetches in fewer, larger fetches; outputs linger
``OUTPUT_LINGER_MS`` in the producer, so that a batch's records share a produce request.

Liveness: a worker whose frames partitions have had frames waiting for ``CVOPS_WORKER_STALL_S`` with no
offset committed stops and exits with status 3, for its supervisor to start it again (:mod:`streams.liveness`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import faust

from core.contracts import DeadLetter, WorkerStatus, encode_record
from core.kafka import faust_credentials
from core.settings import Settings
from core.supervise import keep_running
from streams import faust_fixes, fetch_pacing, liveness
from streams.batching import BatchPolicy
from streams.fleetconfig import ConfigFollower
from streams.monitor.camera import REFERENCE_ELSEWHERE, join_reference, split_reference
from streams.peers import PeerWatch, WorkerDirectory
from streams.process import BatchResult, FrameProcessor, Prepared, RawMessage, processing_failed, silence_clock
from streams.prometheus import WorkerMetrics
from streams.purge import FramesPurge

log = logging.getLogger("cvops.worker")
OUTPUT_LINGER_MS = 5  # how long an output record may wait for others to share its produce request


@dataclass
class Chunk:
    """Frames taken together from the stream, on their way through the inference stage."""

    events: list  # faust events, each message holding one extra reference until the outputs are durable
    batches: deque  # futures of the Prepared batches not started yet
    left: int  # batches not finished yet
    states: dict  # camera id -> saved monitor state, read when the chunk came in
    sends: list = field(default_factory=list)  # futures of the output records sent


def state_bytes(value) -> bytes:
    """A camera-table value as its changelog record: JSON."""
    return json.dumps(value).encode()


def state_value(raw: bytes | None, camera_id: str, what: str):
    """A camera-table value from its changelog record; None (learned again, logged) if it is not JSON.

    >>> state_value(b'{"frames": 3}', "cam-1", "state")
    {'frames': 3}
    >>> state_value(b"\\x80\\x04 not JSON", "cam-1", "state") is None
    True
    """
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except Exception as exc:  # not UTF-8, not JSON, nested too deep: whatever it is, it is not run
        log.warning("camera %s: its saved %s is not JSON (%s); it is learned again", camera_id, what, exc)
        return None


def _key(m: RawMessage) -> bytes | None:
    return m.key


def load_detector(settings: Settings):
    from models import load_detector as _load

    return _load(
        settings.model,
        extra_dirs=settings.model_dirs,
        providers=settings.providers,
        intra_op_threads=settings.intra_op_threads or None,
        lanes=settings.inference_lanes,
        score_threshold=settings.score_threshold,
    )


def load_embedder(settings: Settings):
    if not settings.embedding_model:
        return None
    from models import load

    return load(
        settings.embedding_model,
        extra_dirs=settings.model_dirs,
        providers=settings.providers,
        intra_op_threads=settings.intra_op_threads or None,
    )


def build_app(settings: Settings, detector=None) -> faust.App:
    faust_fixes.install()  # before any rebalance: see the module
    detector = detector or load_detector(settings)
    n = settings.frames_partitions
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{h.strip()}" for h in settings.kafka_bootstrap.split(",")],
        broker_credentials=faust_credentials(settings),
        broker_session_timeout=settings.kafka_session_timeout_s,
        consumer_group_instance_id=settings.worker_id or None,
        broker_heartbeat_interval=settings.kafka_session_timeout_s / 4,
        store="memory://",
        web_enabled=False,
        topic_disable_leader=True,
        topic_partitions=n,
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

    def topic(name: str) -> faust.TopicT:
        return app.topic(settings.topic(name), partitions=n, key_serializer="raw", value_serializer="raw")

    frames, predictions, metrics, alerts, evidence, views, dead, feedback = (
        topic(t) for t in ("frames", "predictions", "metrics", "alerts", "evidence", "views", "deadletters", "feedback")
    )
    workers = app.topic(settings.topic("workers"), partitions=1, key_serializer="raw", value_serializer="raw")
    worker_id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"

    # Keyed by camera id with the producer's partitioner, like the frames topic: a camera's state lives in
    # the changelog partition with the frames topic's partition number, and moves with it on a rebalance.
    def camera_table(name: str):
        return app.Table(
            name,
            default=None,
            partitions=n,
            use_partitioner=True,
            # Raw bytes keys, the camera id as the gateway sends it: the changelog record lands in the same
            # partition number as the camera's frames, and recovery gives back the same keys.
            key_type=bytes,
            # Raw values, JSON written and read here (state_bytes, state_value): a changelog record that is not
            # JSON is then one camera's state learned again, where faust's own decoding stalls the recovery.
            value_type=bytes,  # faust takes a table's value codec from its type: bytes is "raw"
            schema=faust.Schema(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"),
        )

    health = camera_table("camera-health")
    # The moved-camera check's reference view (half a state's bytes), saved only when a new one is learned.
    references = camera_table("camera-reference")
    processor = FrameProcessor(
        settings, detector, decode_threads=settings.decode_workers, embedder=load_embedder(settings)
    )
    policy = BatchPolicy(settings.batch_max_size, settings.batch_max_wait_ms, settings.preferred_sizes)
    prepare_pool = ThreadPoolExecutor(1, thread_name_prefix="prepare")
    saved_essential: dict[str, dict] = {}  # camera id -> the essential state last saved
    saved_reference: dict[str, str] = {}  # camera id -> the reference view last saved or restored
    saved_at: dict[str, int] = {}  # camera id -> its frame count when its state was last saved
    checkpoint = settings.state_checkpoint_frames
    infer_pool = ThreadPoolExecutor(1, thread_name_prefix="infer")
    stats = {"frames": 0, "dead_letters": 0, "alerts": 0, "batches": 0, "since": time.monotonic()}
    stats |= {"newest_arrival": 0.0, "last_batch": 0.0, "batch_wall": 0.0, "config_updated_at": 0.0}
    stats["processing"] = False  # a batch taken and not yet finished
    log.info(
        "model %s@%s on %s; batches of up to %d frames, waiting at most %d ms",
        detector.name,
        detector.version,
        ",".join(getattr(detector, "providers", ["?"])),
        settings.batch_max_size,
        settings.batch_max_wait_ms,
    )

    # The stages overlap, so that inference never waits for the broker or for decoding: the agent takes
    # chunks of frames; `prepare_chunks` has their batches decoded in the prepare thread; `infer_chunks`
    # starts each batch on the detector's lanes before the one before is post-processed and judged (in the
    # inference thread) and its outputs sent; `confirm` waits until those are durable and only then
    # releases the chunk's messages for commit.
    taken: asyncio.Queue = asyncio.Queue(maxsize=1)  # chunks of events, with the rebalance epoch they came in
    prepared_chunks: asyncio.Queue = asyncio.Queue(maxsize=1)
    in_hand = [0]  # frames taken and not yet judged
    epoch = [0]  # bumped when partitions are revoked: chunks taken before were not processed, and are replayed

    @app.agent(frames, name="infer")
    async def infer(stream):
        # The fleet's and cameras' settings before the first frame (a restarted worker must not judge with
        # defaults); a config topic that cannot be read within 30 s is logged and followed later.
        if not await config.wait_loaded(30.0):
            log.warning("the config topic was not read within 30 s: starting with the CVOPS_ settings")
        async for events in stream.take_events(policy.queue_limit, within=policy.max_queue_delay_ms / 1000):
            # faust acks the events as soon as the next chunk is taken; one more reference on each message
            # keeps its offset from being committed until `confirm` has seen its outputs durable.
            for e in events:
                e.message.incref()
            if settings.debug_stall_file and liveness.take_stall_file(settings.debug_stall_file):
                log.warning("test hook CVOPS_DEBUG_STALL_FILE: taking no more frames")
                await asyncio.Event().wait()  # this chunk's messages stay held: replayed after a restart
            await taken.put((epoch[0], events))
            in_hand[0] += len(events)  # counted once queued: a put cancelled at shutdown holds nothing

    @app.task
    async def prepare_chunks():
        loop = asyncio.get_running_loop()
        while True:
            chunk_epoch, events = await taken.get()
            msgs = [
                RawMessage(
                    e.message.topic,
                    e.message.partition,
                    e.message.offset,
                    e.message.key,
                    e.message.value,
                    e.message.timestamp,
                )
                for e in events
            ]
            stats["newest_arrival"] = max([m.timestamp or 0.0 for m in msgs] + [stats["newest_arrival"]])
            # Decoded in order in the prepare thread, while the inference thread works on earlier batches.
            batches = [loop.run_in_executor(prepare_pool, processor.prepare, b) for b in policy.batches(msgs, _key)]
            await prepared_chunks.put((chunk_epoch, events, msgs, batches))

    @app.task
    async def infer_chunks():
        loop = asyncio.get_running_loop()
        window: deque[tuple[Chunk, Prepared, Future | None]] = deque()  # batches on the lanes, oldest first
        chunk: Chunk | None = None  # the chunk whose batches are being started
        while True:
            stats["processing"] = bool(window) or chunk is not None
            if chunk is not None and chunk.batches and len(window) < 2:
                # Start the next batch while the one before is still inferred: the lanes go on with it as
                # they free up, instead of idling while that one is post-processed and judged.
                prepared = await chunk.batches.popleft()
                window.append((chunk, prepared, processor.start_inference(prepared)))
                continue
            if chunk is not None and not chunk.batches:
                chunk = None
            if window and (chunk is not None or prepared_chunks.empty()):
                await finish_oldest(loop, window)
                continue
            chunk_epoch, events, msgs, batches = await prepared_chunks.get()
            if chunk_epoch != epoch[0]:  # taken before a rebalance: its frames come again from the commit
                in_hand[0] -= len(events)
                continue
            states = restore(m.key for m in msgs)
            chunk = Chunk(events, deque(batches), len(batches), states)
            stats["last_batch"], stats["batch_wall"] = time.monotonic(), time.time()

    async def finish_oldest(loop, window: deque) -> None:
        """Post-process and judge the oldest batch on the lanes once inferred (in the inference thread, the
        only one that changes the cameras' monitors) and send its outputs; the chunk's last batch hands
        the chunk to `confirm`."""
        chunk, prepared, inferring = window.popleft()
        inferred = await asyncio.wrap_future(inferring) if inferring is not None else None
        result, snapshots = await loop.run_in_executor(
            infer_pool, finish_and_snapshot, prepared, chunk.states, inferred
        )
        save(result, snapshots, chunk.states)
        prometheus.observe(result)
        chunk.sends += await _publish(result)
        stats["frames"] += len(result.predictions)
        stats["dead_letters"] += len(result.dead_letters)
        stats["alerts"] += len(result.alerts)
        stats["batches"] += 1 if result.predictions else 0
        stats["last_batch"] = time.monotonic()
        chunk.left -= 1
        if chunk.left == 0:
            in_hand[0] -= len(chunk.events)
            confirming.add(task := asyncio.create_task(confirm(chunk.events, chunk.sends)))
            task.add_done_callback(confirming.discard)

    confirming: set[asyncio.Task] = set()

    async def confirm(events, sends: list) -> None:
        """Release a chunk's messages for commit once every output record is acknowledged by the broker
        and the camera-state writes are flushed."""
        try:
            await asyncio.gather(*sends)
            await drain_table_writes()
        except Exception as exc:
            # The chunk stays uncommitted and is processed again after a restart: stop rather than go on
            # with outputs missing.
            log.error("outputs could not be sent (%s: %s); stopping the worker", type(exc).__name__, exc)
            await app.crash(exc)
            return
        for e in events:
            e.ack()

    def snapshot(result: BatchResult) -> dict[str, dict]:
        """The states to save now: a camera's events (a reference learned, an alert) at once, its windows
        every ``checkpoint`` frames. Runs on the inference thread, the only one that changes monitors."""
        out = {}
        for camera_id, essential in result.essential.items():
            stale = result.frames_seen[camera_id] - saved_at.get(camera_id, 0) >= checkpoint
            if essential != saved_essential.get(camera_id) or stale:
                out[camera_id] = result.states[camera_id]  # written out only now
        return out

    def finish_and_snapshot(prepared, states, inferred=None) -> tuple[BatchResult, dict[str, dict]]:
        result = processor.finish(prepared, states, inferred)
        return result, snapshot(result)

    def feedback_and_snapshot(msgs, states) -> tuple[BatchResult, dict[str, dict]]:
        result = processor.feedback(msgs, states)
        return result, snapshot(result)

    def save(result: BatchResult, snapshots: dict[str, dict], states: dict) -> None:
        for camera_id, state in snapshots.items():
            key = camera_id.encode()
            slim, view = split_reference(state)
            if view is not None and saved_reference.get(camera_id) != view:
                references[key] = state_bytes(view)  # before the state that refers to it
                saved_reference[camera_id] = view
            health[key] = state_bytes(slim)
            states[camera_id] = state
            saved_essential[camera_id] = result.essential[camera_id]
            saved_at[camera_id] = result.frames_seen[camera_id]

    def restore(keys) -> dict[str, dict | None]:
        """The saved states of these cameras (message keys), whole again with their reference views."""
        out = {}
        for key in {k for k in keys if k}:
            # Table keys are bytes: what the changelog gives back on recovery is bytes too.
            camera_id = key.decode("utf-8", "replace")
            state = state_value(health.get(key), camera_id, "state")
            view = state_value(references.get(key), camera_id, "reference view")
            if state and state.get(REFERENCE_ELSEWHERE) and view is None:
                log.warning(
                    "camera %s: its reference view was not found; the moved-camera check learns a new one", camera_id
                )
            if view is not None:
                saved_reference[camera_id] = view
            out[camera_id] = join_reference(state, view)
        return out

    async def drain_table_writes() -> None:
        # Table writes wait in faust's producer buffer, whose flush at commit time gives up after 0.1 s
        # without progress: drain it here, so that no offset is committed ahead of the camera state
        # it produced (measured: a SIGKILL otherwise lost state that the committed offsets covered).
        deadline = time.monotonic() + 30.0
        while app.producer.buffer.size and time.monotonic() < deadline:
            await app.producer.buffer.flush()
        if app.producer.buffer.size:
            log.warning("%d camera state writes still pending after 30 s", app.producer.buffer.size)

    @app.agent(feedback, name="feedback")
    async def on_feedback(stream):
        """Labels for frames: scored against this worker's predictions, for each camera's concept drift."""
        loop = asyncio.get_running_loop()
        async for events in stream.take_events(200, within=1.0):
            msgs = [
                RawMessage(e.message.topic, e.message.partition, e.message.offset, e.message.key, e.message.value)
                for e in events
            ]
            try:
                states = restore(m.key for m in msgs)
                result, snapshots = await loop.run_in_executor(infer_pool, feedback_and_snapshot, msgs, states)
                save(result, snapshots, states)
            except Exception as exc:  # the processor dead-letters a message that fails; this is a failure around it
                log.warning("a batch of %d labels failed (%s: %s): dead-lettered", len(msgs), type(exc).__name__, exc)
                failed = processing_failed(exc)
                result = BatchResult(
                    dead_letters=[DeadLetter.of(m.topic, m.partition, m.offset, m.key, m.value, failed) for m in msgs]
                )
            prometheus.observe(result)
            await asyncio.gather(*await _publish(result))
            stats["dead_letters"] += len(result.dead_letters)
            stats["alerts"] += len(result.alerts)
            await drain_table_writes()

    async def _publish(result) -> list:
        sends = []
        for out_topic, records in (
            (predictions, result.predictions),
            (metrics, result.metrics),
            (alerts, result.alerts),
            (evidence, result.evidence),
            (views, result.views),
        ):
            for r in records:
                sends.append(await out_topic.send(key=r.camera_id.encode(), value=encode_record(r)))
        for d in result.dead_letters:
            log.warning("dead letter %s[%d]@%d: %s", d.source_topic, d.partition, d.offset, d.detail)
            key = d.key.encode() if d.key is not None else None
            sends.append(await dead.send(key=key, value=encode_record(d)))
        for a in result.alerts:
            log.info("alert %s %s: %s", a.type, a.status, a.message)
        return sends

    @app.on_partitions_assigned.connect
    async def hold_fetches(sender, assigned, **kwargs):
        # Frames in hand enough for two batches keep the lanes busy until more arrive: fetch more (frames and
        # feedback, one consumer) only then, or after a second at most.
        try:
            fetch_pacing.hold(kafka_consumer(), lambda: in_hand[0] >= policy.queue_limit, most_ms=1000)
        except Exception as exc:  # faust changed: fetches are not held back, which costs CPU, not frames
            log.warning("the consumer's fetches are not held back while busy (%s: %s)", type(exc).__name__, exc)

    @app.on_partitions_revoked.connect
    async def forget_cameras(sender, revoked, **kwargs):
        epoch[0] += 1
        processor.forget()  # cameras may come back later with states written by another worker
        saved_essential.clear()
        saved_reference.clear()
        saved_at.clear()

    @app.timer(max(1.0, settings.monitor_no_frames_s / 4))
    async def watch_silence():
        since_batch = 0.0 if stats["processing"] else time.monotonic() - stats["last_batch"]
        now = silence_clock(time.time(), stats["newest_arrival"], since_batch, settings.monitor_no_frames_s)
        # On the inference thread, the only one that changes the cameras' monitors.
        silent = await asyncio.get_running_loop().run_in_executor(infer_pool, processor.check_silence, now)
        await asyncio.gather(*await _publish(BatchResult(alerts=silent)))

    def configure_and_snapshot(scope, record) -> tuple[BatchResult, dict[str, dict]]:
        result = processor.configure(scope, record)
        return result, snapshot(result)

    async def apply_config(scope: str, record) -> None:
        loop = asyncio.get_running_loop()
        result, snapshots = await loop.run_in_executor(infer_pool, configure_and_snapshot, scope, record)
        save(result, snapshots, {})
        await asyncio.gather(*await _publish(result))
        stats["config_updated_at"] = max(stats["config_updated_at"], record.updated_at if record else time.time())
        log.info("config %s %s", scope, record.overrides.model_dump(exclude_none=True) if record else "removed")

    config = ConfigFollower(settings, apply_config)
    prometheus = WorkerMetrics()  # not "metrics": that is the metrics topic
    if settings.metrics_port:
        prometheus.serve(settings.metrics_port, settings.metrics_host)

    @app.task
    async def follow_config():
        # The broker gone for a while must not stop the worker: read the topic again later.
        await keep_running(config.run, "config follower")

    def kafka_consumer():
        # faust keeps its aiokafka consumer private; its own rebalance logging reaches it this way.
        return app.consumer._thread._ensure_consumer()

    def my_member_id() -> str:
        try:
            return kafka_consumer()._coordinator.member_id or ""
        except Exception:
            return ""

    peers = WorkerDirectory(settings)

    if settings.peer_timeout_s:

        @app.task
        async def follow_peers():
            watch = PeerWatch(settings, peers, my_member_id)
            await asyncio.gather(keep_running(peers.run, "worker directory"), keep_running(watch.run, "peer watch"))

    if settings.frames_purge_every_s:

        @app.task
        async def purge_frames():
            purge = FramesPurge(settings, frames_partitions)
            await keep_running(purge.run, "frames purge")

    stalled = threading.Event()  # set once the worker stops for a stall: run_worker's exit status
    app.cvops_stalled = stalled

    if settings.worker_stall_s:

        @app.task
        async def watch_liveness():
            done = asyncio.Event()

            async def stop(partitions: list[liveness.Stalled]) -> None:
                done.set()
                stalled.set()
                log.error(
                    "stalled: frames waiting and no offset committed for %.0f s (CVOPS_WORKER_STALL_S) on %s %s; "
                    "exiting with status %d so that the supervisor starts the worker again",
                    settings.worker_stall_s,
                    frames.get_topic_name(),
                    liveness.describe(partitions),
                    liveness.EXIT_STALLED,
                )
                await app.crash(liveness.WorkerStalled(liveness.describe(partitions)))

            watch = liveness.LivenessWatch(settings, held_frames_partitions, stop)
            await keep_running(watch.run, "liveness watch", done)

    def held_frames_partitions() -> list[int] | None:
        """The frames partitions held now; None while rebalancing (a table's recovery included)."""
        if app.rebalancing:
            return None
        try:
            return frames_partitions()
        except Exception:  # the consumer not started yet
            return None

    def frames_partitions() -> list[int]:
        return sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == frames.get_topic_name())

    @app.timer(10.0)
    async def report():
        elapsed = time.monotonic() - stats["since"]
        lag_s = max(0.0, stats["batch_wall"] - stats["newest_arrival"]) if stats["newest_arrival"] else 0.0
        prometheus.lag_s.set(lag_s)
        prometheus.cameras.set(len(processor.cameras))
        if lag_s > settings.frames_retention_ms / 2000:
            log.warning(
                "%.0f s behind: frames older than the frames topic's retention (%.0f s) expire unprocessed; "
                "add workers (up to the partition count) or raise CVOPS_FRAMES_RETENTION_MS",
                lag_s,
                settings.frames_retention_ms / 1000,
            )
        assigned = frames_partitions()
        status = WorkerStatus(
            worker_id=worker_id,
            model_name=detector.name,
            model_version=detector.version,
            providers=list(getattr(detector, "providers", [])),
            batch_max_size=settings.batch_max_size,
            partitions=assigned,
            frames_per_s=round(stats["frames"] / elapsed, 2),
            mean_batch=round(stats["frames"] / stats["batches"], 2) if stats["batches"] else 0.0,
            dead_letters=stats["dead_letters"],
            alerts=stats["alerts"],
            lag_s=round(lag_s, 2),
            config_updated_at=stats["config_updated_at"],
            member_id=my_member_id(),
            sent_at=time.time(),
        )
        await workers.send(key=worker_id.encode(), value=encode_record(status))
        if stats["batches"] or assigned:
            log.info(
                "%.1f frames/s over %.0f s, mean batch %.1f, %d alerts, %d dead letters",
                stats["frames"] / elapsed,
                elapsed,
                status.mean_batch,
                stats["alerts"],
                stats["dead_letters"],
            )
        stats.update(frames=0, dead_letters=0, alerts=0, batches=0, since=time.monotonic())

    app.cvops_processor = processor  # for tests and introspection
    return app


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
