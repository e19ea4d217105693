"""The worker's stages, from frames taken to offsets released for commit, and what is in flight between them.

    take ─▶ prepare ─▶ infer ─▶ judge ─▶ publish ─▶ confirm

- **take** (:meth:`Stages.hold`, :meth:`Stages.take`): a chunk of frames from the stream; each message gets
  one extra reference, so that its offset is not committed before :meth:`Stages.confirm` lets it go.
- **prepare** (:meth:`Stages.prepare_next`): the chunk's frames grouped by the model their camera's frames go to
  (:meth:`~streams.process.FrameProcessor.route`), each group cut into batches of its own
  (:class:`~streams.batching.BatchPolicy`), each decoded and pre-processed for its model in the prepare thread.
- **infer** (:meth:`Stages.infer_next`): each batch started on the detector's lanes while the batch before it
  is still inferred; a chunk taken before a rebalance is dropped here, its frames coming again from the commit.
- **judge** (:meth:`Stages.judge_oldest`): the oldest batch post-processed, measured and judged in the inference
  thread (the only one that changes the cameras' monitors), and the camera states due saved.
- **publish** (:class:`Outputs`): its records sent; their acknowledgements are awaited later.
- **confirm** (:meth:`Stages.confirm`): once every record of a chunk is acknowledged and the table writes are
  flushed, its messages are acked, and faust may commit their offsets.

Everything that lives between stages (the queues, the batches on the lanes, frames in hand, the rebalance
epoch, the confirmations running) is in :class:`InFlight`. The stages know nothing of Kafka: they take
events, topics and tables as plain objects, and are tested with fakes (tests/streams/test_stages.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from core.contracts import DeadLetter, encode_record
from streams.batching import BatchPolicy
from streams.camera_states import CameraStates
from streams.process import BatchResult, FrameProcessor, Prepared, RawMessage, processing_failed

log = logging.getLogger("cvops.worker")
# With deadletters, what a batch sends: the topics, each from the BatchResult field of its name ("-" as "_").
OUTPUTS = ("predictions", "metrics", "alerts", "evidence", "views", "shadow-predictions")


@dataclass
class Chunk:
    """Frames taken together from the stream, on their way through the inference stage."""

    events: list  # faust events, each message holding one extra reference until the outputs are durable
    batches: deque  # futures of the Prepared batches not started yet
    left: int  # batches not finished yet
    states: dict  # camera id -> saved monitor state, read when the chunk came in
    sends: list = field(default_factory=list)  # futures of the output records sent


@dataclass
class Taken:
    epoch: int  # the rebalance epoch it was taken in
    events: list


@dataclass
class PreparedChunk:
    epoch: int
    events: list
    msgs: list[RawMessage]
    batches: list  # futures of Prepared, in order


class InFlight:
    """What the worker holds between taking frames and releasing their offsets: all of it, in one place."""

    def __init__(self, queue_limit: int):
        self.queue_limit = queue_limit  # frames in hand for two batches: enough to keep the lanes busy
        self.taken: asyncio.Queue[Taken] = asyncio.Queue(maxsize=1)
        self.prepared: asyncio.Queue[PreparedChunk] = asyncio.Queue(maxsize=1)
        self.in_hand = 0  # frames taken and not yet judged
        self.epoch = 0  # bumped when partitions are revoked: chunks taken before are dropped, and replayed
        self.starting: Chunk | None = None  # the chunk whose batches are being started
        self.window: deque[tuple[Chunk, Prepared, Future | None]] = deque()  # batches on the lanes, oldest first
        self.confirming: set[asyncio.Task] = set()  # chunks waiting for their outputs to be acknowledged

    def busy(self) -> bool:
        """Frames enough in hand: no need to fetch more yet (read from the consumer's thread: cheap)."""
        return self.in_hand >= self.queue_limit

    def processing(self) -> bool:
        """A batch taken and not yet finished."""
        return bool(self.window) or self.starting is not None

    def revoke(self) -> None:
        self.epoch += 1


@dataclass
class WorkerStats:
    """Counters for the worker's status, reset at each report, and the clocks of its silence check."""

    frames: int = 0
    dead_letters: int = 0
    alerts: int = 0
    batches: int = 0
    since: float = field(default_factory=time.monotonic)
    newest_arrival: float = 0.0  # the broker time of the newest frame taken
    last_batch: float = 0.0  # monotonic time a batch last started or finished
    batch_wall: float = 0.0  # wall time the last chunk started
    config_updated_at: float = 0.0

    def count(self, result: BatchResult) -> None:
        self.frames += len(result.predictions)
        self.dead_letters += len(result.dead_letters)
        self.alerts += len(result.alerts)
        self.batches += 1 if result.predictions else 0

    def reset(self) -> None:
        self.frames = self.dead_letters = self.alerts = self.batches = 0
        self.since = time.monotonic()


class Outputs:
    """Send a batch's records to their topics (objects with ``async send(key=, value=)`` returning a future of
    the acknowledgement, as faust topics do); the futures are returned, not awaited."""

    def __init__(self, topics: Mapping[str, object], deadletters):
        self.topics = [(topics[name], name) for name in OUTPUTS]
        self.deadletters = deadletters

    async def publish(self, result: BatchResult) -> list:
        sends = []
        for topic, name in self.topics:
            for r in getattr(result, name.replace("-", "_")):
                sends.append(await topic.send(key=r.camera_id.encode(), value=encode_record(r)))
        for d in result.dead_letters:
            log.warning("dead letter %s[%d]@%d: %s", d.source_topic, d.partition, d.offset, d.detail)
            key = d.key.encode() if d.key is not None else None
            sends.append(await self.deadletters.send(key=key, value=encode_record(d)))
        for a in result.alerts:
            log.info("alert %s %s: %s", a.type, a.status, a.message)
        return sends


def raw_message(message) -> RawMessage:
    """A faust message as the processor reads it."""
    m = message
    return RawMessage(m.topic, m.partition, m.offset, m.key, m.value, getattr(m, "timestamp", None))


def _key(m: RawMessage) -> bytes | None:
    return m.key


class Stages:
    """The worker's stages over one :class:`~streams.process.FrameProcessor`. ``drain()`` flushes the table
    writes; ``crash(exc)`` stops the worker; ``observe(result)`` counts a result for Prometheus."""

    def __init__(
        self,
        processor: FrameProcessor,
        policy: BatchPolicy,
        states: CameraStates,
        outputs: Outputs,
        *,
        drain: Callable[[], Awaitable[None]],
        crash: Callable[[BaseException], Awaitable[None]],
        observe: Callable[[BatchResult], None] = lambda result: None,
    ):
        self.processor = processor
        self.policy = policy
        self.states = states
        self.outputs = outputs
        self.drain = drain
        self.crash = crash
        self.observe = observe
        self.inflight = InFlight(policy.queue_limit)
        self.stats = WorkerStats()
        self.prepare_pool = ThreadPoolExecutor(1, thread_name_prefix="prepare")
        self.infer_pool = ThreadPoolExecutor(1, thread_name_prefix="infer")  # the only thread changing monitors

    # take

    def hold(self, events: list) -> None:
        """faust acks the events as soon as the next chunk is taken; one more reference on each message
        keeps its offset from being committed until :meth:`confirm` has seen its outputs durable."""
        for e in events:
            e.message.incref()

    async def take(self, events: list) -> None:
        await self.inflight.taken.put(Taken(self.inflight.epoch, events))
        self.inflight.in_hand += len(events)  # counted once queued: a put cancelled at shutdown holds nothing

    # prepare

    async def prepare_next(self) -> None:
        """Cut the next chunk taken into batches, each decoded in order in the prepare thread."""
        taken = await self.inflight.taken.get()
        msgs = [raw_message(e.message) for e in taken.events]
        self.stats.newest_arrival = max([m.timestamp or 0.0 for m in msgs] + [self.stats.newest_arrival])
        loop = asyncio.get_running_loop()
        batches = [
            loop.run_in_executor(self.prepare_pool, self.processor.prepare, b, model)
            for model, group in self.processor.route(msgs)  # each model its own batches
            for b in self.policy.batches(group, _key)
        ]
        await self.inflight.prepared.put(PreparedChunk(taken.epoch, taken.events, msgs, batches))

    # infer

    async def infer_next(self) -> None:
        """One step: start a batch on the lanes, judge the oldest one, or take the next prepared chunk."""
        f = self.inflight
        if f.starting is not None and f.starting.batches and len(f.window) < 2:
            # Start the next batch while the one before is still inferred: the lanes go on with it as
            # they free up, instead of idling while that one is post-processed and judged.
            prepared = await f.starting.batches.popleft()
            f.window.append((f.starting, prepared, self.processor.start_inference(prepared)))
            return
        if f.starting is not None and not f.starting.batches:
            f.starting = None
        if f.window and (f.starting is not None or f.prepared.empty()):
            await self.judge_oldest()
            return
        chunk = await f.prepared.get()
        if chunk.epoch != f.epoch:  # taken before a rebalance: its frames come again from the commit
            f.in_hand -= len(chunk.events)
            return
        states = self.states.restore(m.key for m in chunk.msgs)
        f.starting = Chunk(chunk.events, deque(chunk.batches), len(chunk.batches), states)
        self.stats.last_batch, self.stats.batch_wall = time.monotonic(), time.time()

    # judge and publish

    async def judge_oldest(self) -> None:
        """Post-process and judge the oldest batch on the lanes once inferred, save the states due and send
        its outputs; the chunk's last batch hands the chunk to :meth:`confirm`."""
        chunk, prepared, inferring = self.inflight.window.popleft()
        inferred = await asyncio.wrap_future(inferring) if inferring is not None else None
        loop = asyncio.get_running_loop()
        result, snapshots = await loop.run_in_executor(
            self.infer_pool, self._finish_and_snapshot, prepared, chunk.states, inferred
        )
        self.states.save(result, snapshots, chunk.states)
        self.observe(result)
        chunk.sends += await self.outputs.publish(result)
        self.stats.count(result)
        self.stats.last_batch = time.monotonic()
        chunk.left -= 1
        if chunk.left == 0:
            self.inflight.in_hand -= len(chunk.events)
            self.inflight.confirming.add(task := asyncio.create_task(self.confirm(chunk.events, chunk.sends)))
            task.add_done_callback(self.inflight.confirming.discard)

    def _finish_and_snapshot(self, prepared, states, inferred=None) -> tuple[BatchResult, dict[str, dict]]:
        result = self.processor.finish(prepared, states, inferred)
        return result, self.states.snapshot(result)

    # confirm

    async def confirm(self, events: list, sends: list) -> None:
        """Release a chunk's messages for commit once every output record is acknowledged by the broker
        and the camera-state writes are flushed."""
        try:
            await asyncio.gather(*sends)
            await self.drain()
        except Exception as exc:
            # The chunk stays uncommitted and is processed again after a restart: stop rather than go on
            # with outputs missing.
            log.error("outputs could not be sent (%s: %s); stopping the worker", type(exc).__name__, exc)
            await self.crash(exc)
            return
        for e in events:
            e.ack()

    # beside the frames: labels, settings, silence, rebalances

    async def feedback(self, events: list) -> BatchResult:
        """Labels for frames: scored against this worker's predictions, for each camera's concept drift."""
        msgs = [raw_message(e.message) for e in events]
        try:
            states = self.states.restore(m.key for m in msgs)
            result, snapshots = await self._on_infer_thread(self.processor.feedback, msgs, states)
            self.states.save(result, snapshots, states)
        except Exception as exc:  # the processor dead-letters a message that fails; this is a failure around it
            log.warning("a batch of %d labels failed (%s: %s): dead-lettered", len(msgs), type(exc).__name__, exc)
            failed = processing_failed(exc)
            result = BatchResult(
                dead_letters=[DeadLetter.of(m.topic, m.partition, m.offset, m.key, m.value, failed) for m in msgs]
            )
        self.observe(result)
        await asyncio.gather(*await self.outputs.publish(result))
        self.stats.dead_letters += len(result.dead_letters)
        self.stats.alerts += len(result.alerts)
        await self.drain()
        return result

    async def configure(self, scope: str, record) -> BatchResult:
        """A fleet or camera setting changed (``record`` None: removed)."""
        result, snapshots = await self._on_infer_thread(self.processor.configure, scope, record)
        self.states.save(result, snapshots, {})
        await asyncio.gather(*await self.outputs.publish(result))
        self.stats.config_updated_at = max(self.stats.config_updated_at, record.updated_at if record else time.time())
        return result

    async def check_silence(self, now: float) -> None:
        silent = await asyncio.get_running_loop().run_in_executor(self.infer_pool, self.processor.check_silence, now)
        await asyncio.gather(*await self.outputs.publish(BatchResult(alerts=silent)))

    async def _on_infer_thread(self, step, *args) -> tuple[BatchResult, dict[str, dict]]:
        def run():
            result = step(*args)
            return result, self.states.snapshot(result)

        return await asyncio.get_running_loop().run_in_executor(self.infer_pool, run)

    def revoke(self) -> None:
        """Partitions revoked: chunks taken before are dropped; the cameras may come back later with states
        written by another worker."""
        self.inflight.revoke()
        self.processor.forget()
        self.states.forget()
