"""The worker's stages without Kafka: plain fakes of faust's events and messages, of the topics and of the
processor. What is checked is the delivery contract (docs/delivery.md): a chunk's messages are acked (their
offsets may be committed) only once every output is acknowledged and the table writes are drained; a chunk
taken before a rebalance and not yet inferred is dropped, not acked; a failed send stops the worker."""

from __future__ import annotations

import asyncio
import json

from core.contracts import DeadLetter
from streams.batching import BatchPolicy
from streams.camera_states import CameraStates, state_bytes
from streams.process import BatchResult, Prepared
from streams.stages import Outputs, Stages


class Message:
    def __init__(self, offset: int, key: bytes = b"cam-1"):
        self.topic, self.partition, self.offset, self.key = "cvops.frames", 0, offset, key
        self.value, self.timestamp = b"frame", 1000.0 + offset
        self.refs = 0

    def incref(self):
        self.refs += 1


class Event:
    def __init__(self, offset: int, key: bytes = b"cam-1"):
        self.message = Message(offset, key)
        self.acked = False

    def ack(self):
        self.acked = True


class Processor:
    """Judges every frame of a batch into one output record; the camera's state changes with every batch."""

    def __init__(self):
        self.finished: list[list[int]] = []
        self.forgotten = 0
        self.frames = 0

    def route(self, msgs):
        return [(None, list(msgs))]

    def prepare(self, msgs, model=None):
        return Prepared(started=0.0, frames=list(msgs))

    def start_inference(self, prepared):
        return None

    def finish(self, prepared, states, inferred=None):
        self.finished.append([m.offset for m in prepared.frames])
        self.frames += len(prepared.frames)
        state = {"frames": self.frames}
        return BatchResult(
            predictions=[m.offset for m in prepared.frames],  # counted, and sent by the fake outputs
            states={"cam-1": state},
            essential={"cam-1": {"alerts": 0}},
            frames_seen={"cam-1": self.frames},
        )

    def forget(self):
        self.forgotten += 1


class FakeOutputs:
    """Hands back one future per record, resolved by the test: the broker's acknowledgement."""

    def __init__(self):
        self.sends: list[asyncio.Future] = []

    async def publish(self, result):
        futures = [asyncio.get_running_loop().create_future() for _ in result.predictions]
        self.sends += futures
        return futures


def stages_for_test(batch: int = 2):
    health, references = {}, {}
    calls = {"drained": 0, "crashed": []}

    async def drain():
        calls["drained"] += 1

    async def crash(exc):
        calls["crashed"].append(exc)

    processor, outputs = Processor(), FakeOutputs()
    states = CameraStates(health, references, checkpoint=25)
    stages = Stages(processor, BatchPolicy(batch), states, outputs, drain=drain, crash=crash)
    return stages, processor, outputs, calls, health


async def run_chunk(stages: Stages, events) -> None:
    stages.hold(events)
    await stages.take(events)
    await stages.prepare_next()
    while stages.inflight.in_hand:
        await stages.infer_next()


def test_a_chunk_is_acked_only_once_its_outputs_are_acknowledged_and_the_table_writes_drained():
    async def scenario():
        stages, processor, outputs, calls, health = stages_for_test()
        events = [Event(o) for o in range(3)]
        await run_chunk(stages, events)
        assert [e.message.refs for e in events] == [1, 1, 1]  # held from the moment they were taken
        assert processor.finished == [[0, 1], [2]]  # two batches of at most 2, in order
        # Saved after the first batch (its essential state was new), not after the second (no event, and
        # fewer than the checkpoint's frames since)
        assert json.loads(health[b"cam-1"]) == {"frames": 2}
        await asyncio.sleep(0)
        assert not any(e.acked for e in events) and calls["drained"] == 0  # outputs not acknowledged yet
        for f in outputs.sends[:-1]:
            f.set_result(None)
        await asyncio.sleep(0)
        assert not any(e.acked for e in events)  # one output still unacknowledged
        outputs.sends[-1].set_result(None)
        await asyncio.gather(*stages.inflight.confirming)
        assert all(e.acked for e in events) and calls["drained"] == 1
        assert stages.stats.frames == 3 and stages.stats.batches == 2

    asyncio.run(scenario())


def test_a_chunk_taken_before_a_rebalance_is_dropped_not_acked():
    async def scenario():
        stages, processor, outputs, _, _ = stages_for_test()
        events = [Event(o) for o in range(2)]
        stages.hold(events)
        await stages.take(events)
        await stages.prepare_next()
        stages.revoke()  # partitions revoked before the chunk was inferred
        await stages.infer_next()
        assert stages.inflight.in_hand == 0 and processor.finished == [] and processor.forgotten == 1
        assert not any(e.acked for e in events) and not stages.inflight.confirming

        again = [Event(o) for o in range(2)]  # the same frames, from the committed offset
        await run_chunk(stages, again)
        for f in outputs.sends:
            f.set_result(None)
        await asyncio.gather(*stages.inflight.confirming)
        assert all(e.acked for e in again) and not any(e.acked for e in events)

    asyncio.run(scenario())


def test_an_output_that_fails_stops_the_worker_and_leaves_the_chunk_unacked():
    async def scenario():
        stages, _, outputs, calls, _ = stages_for_test()
        events = [Event(o) for o in range(2)]
        await run_chunk(stages, events)
        outputs.sends[0].set_result(None)
        outputs.sends[1].set_exception(RuntimeError("broker gone"))
        await asyncio.gather(*stages.inflight.confirming)
        assert [str(e) for e in calls["crashed"]] == ["broker gone"]
        assert not any(e.acked for e in events) and calls["drained"] == 0

    asyncio.run(scenario())


def test_frames_in_hand_for_two_batches_make_the_worker_busy():
    async def scenario():
        stages, *_ = stages_for_test(batch=2)
        await stages.take([Event(0), Event(1), Event(2)])
        assert not stages.inflight.busy()
        await stages.prepare_next()  # frees the taken queue for the next chunk
        await stages.take([Event(3)])
        assert stages.inflight.in_hand == 4 and stages.inflight.busy()

    asyncio.run(scenario())


def test_camera_states_save_the_reference_view_apart_and_only_when_it_changes():
    health, references = {}, {}
    states = CameraStates(health, references, checkpoint=25)
    state = {"camera_id": "cam-1", "moved": {"reference_png": "iVBORw0K", "seen": 7}}
    result = BatchResult(states={"cam-1": state}, essential={"cam-1": {"n": 1}}, frames_seen={"cam-1": 1})
    snapshots = states.snapshot(result)
    assert snapshots == {"cam-1": state}  # new essential state: saved at once
    states.save(result, snapshots, {})
    assert json.loads(references[b"cam-1"]) == "iVBORw0K"
    references.clear()
    later = BatchResult(states={"cam-1": state}, essential={"cam-1": {"n": 1}}, frames_seen={"cam-1": 26})
    states.save(later, states.snapshot(later), {})  # a checkpoint: the state again, not the unchanged view
    assert b"cam-1" in health and references == {}
    assert states.snapshot(BatchResult(states={}, essential={"cam-1": {"n": 1}}, frames_seen={"cam-1": 27})) == {}
    references[b"cam-1"] = state_bytes("iVBORw0K")
    assert states.restore([b"cam-1", None]) == {"cam-1": state}  # whole again


def test_a_saved_state_that_is_not_json_is_learned_again():
    states = CameraStates({b"cam-1": b"\x80 not JSON"}, {}, checkpoint=25)
    assert states.restore([b"cam-1"]) == {"cam-1": None}


def test_outputs_send_each_record_to_its_topic_and_dead_letters_with_their_key():
    class Topic:
        def __init__(self):
            self.sent = []

        async def send(self, key, value):
            self.sent.append((key, value))
            return "ack"

    topics = {name: Topic() for name in ("predictions", "metrics", "alerts", "evidence", "views", "shadow-predictions")}
    dead = Topic()
    letter = DeadLetter.of("cvops.frames", 0, 7, b"cam-1", b"junk", ValueError("bad frame"))
    sends = asyncio.run(Outputs(topics, dead).publish(BatchResult(dead_letters=[letter])))
    assert sends == ["ack"] and dead.sent[0][0] == b"cam-1"
    assert json.loads(dead.sent[0][1])["offset"] == 7
    assert all(t.sent == [] for t in topics.values())
