"""The writer against a real embedded engine and a fake Kafka consumer: replays leave one logical row, a
store that fails for a while loses nothing and doubles nothing, and bad records become dead letters."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from core.contracts import DeadLetter, decode_record, encode_record
from store import Store
from store.writer import StoreWriter
from tests.store.records import LIMITS, SETTINGS, T0, Record, alert, metrics, prediction, records_of


def writer(store: Store) -> StoreWriter:
    return StoreWriter(SETTINGS, store, LIMITS)


def store_batch(w: StoreWriter, records: list[Record]) -> None:
    rows, dead = w.to_rows(records, now=T0)
    assert asyncio.run(w.insert(rows, asyncio.Event(), w.tokens(records, dead)))


def counts(store: Store) -> dict[str, int]:
    (row,) = store.query(
        """SELECT (SELECT count() FROM frame_metrics), (SELECT count() FROM frame_metrics FINAL),
                  (SELECT sum(frames) FROM metrics_minute), (SELECT sum(frames) FROM cameras),
                  (SELECT count() FROM detections FINAL), (SELECT count() FROM predictions FINAL)"""
    )
    return dict(zip(["raw", "final", "minute_frames", "camera_frames", "detections", "predictions"], row, strict=True))


def test_replaying_a_batch_leaves_one_logical_row_and_aggregates_unchanged(store):
    w = writer(store)
    batch = records_of("metrics", [metrics(seq=i, at=T0 + i) for i in range(20)])
    batch += records_of("predictions", [prediction(seq=i, at=T0 + i, labels=("person", "car")) for i in range(20)])
    store_batch(w, batch)
    first = counts(store)
    assert first == {"raw": 20, "final": 20, "minute_frames": 20, "camera_frames": 20, "detections": 40,
                     "predictions": 20}  # fmt: skip
    store_batch(w, batch)  # the same records again: a crash before the commit, say
    assert counts(store) == first  # dropped whole by the dedup token: not even a raw duplicate


def test_a_replay_cut_differently_still_counts_each_frame_once_with_final(store):
    w = writer(store)
    items = [metrics(seq=i, at=T0 + i) for i in range(20)]
    store_batch(w, records_of("metrics", items[:12], partitions=1))
    store_batch(w, records_of("metrics", items, partitions=1))  # replay from offset 0, batch now longer
    c = counts(store)
    assert c["final"] == 20  # ReplacingMergeTree keyed by frame: exact with FINAL
    assert c["raw"] == 32  # before a merge the duplicates are still there: read with FINAL
    store.command("OPTIMIZE TABLE frame_metrics FINAL")
    assert counts(store)["raw"] == 20


def test_a_lost_insert_acknowledgement_does_not_double_anything(store):
    class AckLost:
        """Stores the rows, then fails as if the answer had been lost: the writer retries the same batch."""

        def __init__(self, inner: Store):
            self.inner, self.failures = inner, 0

        def insert(self, *args, **kwargs):
            self.inner.insert(*args, **kwargs)
            if self.failures < 2:
                self.failures += 1
                raise ConnectionError("connection reset after the insert")

    w = StoreWriter(SETTINGS, AckLost(store), LIMITS)
    store_batch(w, records_of("metrics", [metrics(seq=i, at=T0 + i) for i in range(10)]))
    assert w.failed_inserts == 2
    c = counts(store)
    assert (c["raw"], c["minute_frames"], c["camera_frames"]) == (10, 10, 10)


def test_tokens_name_the_offsets_and_are_stable():
    w = StoreWriter(SETTINGS, None, LIMITS)
    batch = records_of("metrics", [metrics(seq=i) for i in range(5)], start=100)
    assert w.tokens(batch) == {"frame_metrics": "w.metrics|0:100-102#3,1:100-101#2"}
    assert w.tokens(list(reversed(batch))) == w.tokens(batch)


def test_bad_records_become_dead_letters_with_reasons_and_the_rest_is_stored(store):
    w = writer(store)
    nan = json.loads(encode_record(metrics(seq=1)))
    nan["blur"] = float("nan")
    future = metrics(seq=2, captured_at=T0 + 20 * 365 * 86400, processed_at=T0 + 20 * 365 * 86400)
    batch = records_of(
        "metrics",
        [metrics(seq=0), json.dumps(nan).encode(), future, b"not json", metrics(seq=3, detections=70_000)],
        partitions=1,
    )
    rows, dead = w.to_rows(batch, now=T0)
    assert [d.reason for d in dead] == ["bad_record", "bad_timestamp", "bad_json", "out_of_range"]
    assert [d.offset for d in dead] == [1, 2, 3, 4]
    assert dead[0].payload() == batch[1].value  # the original bytes, not a cleaned copy
    assert len(rows["frame_metrics"]) == 1


class FakeConsumer:
    """Enough of AIOKafkaConsumer for the writer loop: positions, pause/resume, commits."""

    def __init__(self, records: list[Record]):
        self.log: dict[tuple, list[Record]] = {}
        for r in records:
            self.log.setdefault((r.topic, r.partition), []).append(r)
        self.position = dict.fromkeys(self.log, 0)
        self.committed: dict[tuple, int] = {}
        self.paused: set = set()
        self.polls_while_paused = 0

    def assignment(self):
        return set(self.log)

    def pause(self, *tps):
        self.paused.update(tps)

    def resume(self, *tps):
        self.paused.difference_update(tps)

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None):
        out, budget = {}, max_records or 10**9
        for tp, recs in self.log.items():
            if tp in self.paused:
                continue
            take = recs[self.position[tp] : self.position[tp] + budget]
            if take:
                out[tp] = take
                self.position[tp] += len(take)
                budget -= len(take)
        if self.paused:
            self.polls_while_paused += 1
        if not out:
            await asyncio.sleep(min(timeout_ms, 20) / 1000)
        return out

    async def commit(self, offsets: dict):
        for tp, offset in offsets.items():
            assert offset <= self.position[tuple(tp)], "committed past what was read"
            self.committed[tuple(tp)] = offset

    def done(self) -> bool:
        return self.committed == {tp: len(recs) for tp, recs in self.log.items()}


class FakeProducer:
    def __init__(self):
        self.sent: list[tuple[str, bytes]] = []

    async def send(self, topic, value, key=None):
        self.sent.append((topic, value))
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


class DownThenUp:
    """The real store behind a switch: inserts fail while ``down``; watches what the consumer did meanwhile."""

    def __init__(self, inner: Store, consumer: FakeConsumer, failures: int):
        self.inner, self.consumer, self.failures = inner, consumer, failures
        self.positions_while_down: list[dict] = []
        self.commits_while_down: list[dict] = []

    def insert(self, *args, **kwargs):
        if self.failures > 0:
            self.failures -= 1
            self.positions_while_down.append(dict(self.consumer.position))
            self.commits_while_down.append(dict(self.consumer.committed))
            raise ConnectionError("store is down")
        self.inner.insert(*args, **kwargs)


def test_a_store_that_fails_for_a_while_loses_nothing_doubles_nothing_and_stalls_consumption(store, monkeypatch):
    items = [metrics(camera=f"cam-{i % 3}", seq=i, at=T0 + i) for i in range(200)]
    bad = json.loads(encode_record(metrics(seq=999)))
    bad["inference_ms"] = -1
    records = records_of("metrics", [*items, json.dumps(bad).encode()], partitions=3)
    records += records_of("alerts", [alert(n=i, at=T0 + i) for i in range(5)], partitions=3)
    consumer, producer = FakeConsumer(records), FakeProducer()
    flaky = DownThenUp(store, consumer, failures=3)
    w = StoreWriter(SETTINGS, flaky, LIMITS)
    monkeypatch.setattr("store.writer.time.time", lambda: T0)  # the records' clock

    async def main():
        stop = asyncio.Event()
        task = asyncio.create_task(w.consume(consumer, producer, stop))
        for _ in range(600):
            if consumer.done():
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(main())
    assert consumer.done()
    # While the store was down: reading stalled (the failing batch and at most the next one, parsed while it
    # was being inserted), nothing was committed, and the consumer kept polling.
    assert len({tuple(sorted(p.items())) for p in flaky.positions_while_down}) <= 2
    assert max(sum(p.values()) for p in flaky.positions_while_down) <= 2 * SETTINGS.store_batch_rows
    assert flaky.positions_while_down[-1] == flaky.positions_while_down[-2]
    assert all(c == {} for c in flaky.commits_while_down)
    assert consumer.polls_while_paused > 0
    assert w.failed_inserts == 3
    (row,) = store.query(
        "SELECT count(), uniqExact(frame_id), (SELECT count() FROM alerts FINAL), (SELECT sum(frames) FROM cameras) "
        "FROM frame_metrics"
    )
    assert row == (200, 200, 5, 200)
    assert [decode_record(DeadLetter, v).reason for _, v in producer.sent] == ["bad_record"]
    assert {t for t, _ in producer.sent} == {"w.deadletters"}


def test_stopping_while_the_store_is_down_commits_nothing(store):
    records = records_of("metrics", [metrics(seq=i, at=T0 + i) for i in range(10)])
    consumer = FakeConsumer(records)
    w = StoreWriter(SETTINGS, DownThenUp(store, consumer, failures=10**6), LIMITS)

    async def main():
        stop = asyncio.Event()
        task = asyncio.create_task(w.consume(consumer, FakeProducer(), stop))
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(main())
    assert consumer.committed == {}
    assert store.query("SELECT count() FROM frame_metrics") == [(0,)]


class Watched(FakeConsumer):
    """A FakeConsumer that logs what the writer asked of it, for the ordering test. Like aiokafka's consumer
    waiting for a fetch, it lets other tasks run before it answers."""

    def __init__(self, records: list[Record], events: list):
        super().__init__(records)
        self.events = events
        self.served = 0  # records handed out so far
        self.second_batch_read = threading.Event()

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None):
        await asyncio.sleep(0)
        out = await super().getmany(timeout_ms, max_records)
        got = sum(len(v) for v in out.values())
        if got:
            self.served += got
            self.events.append(("read", self.served))
            if self.served > SETTINGS.store_batch_rows:
                self.second_batch_read.set()
        return out

    async def commit(self, offsets: dict):
        await super().commit(offsets)
        self.events.append(("commit", sum(self.committed.values())))


class Ordered:
    """The real store, logging each insert's start and end; the first insert waits until the writer has read
    the next batch, which it can only do while that insert is in flight."""

    def __init__(self, inner: Store, consumer: Watched, events: list):
        self.inner, self.consumer, self.events = inner, consumer, events
        self.overlapped: bool | None = None

    def insert(self, table, data, *args, **kwargs):
        rows = len(data[0])
        self.events.append(("insert", rows))
        if self.overlapped is None:
            self.overlapped = self.consumer.second_batch_read.wait(60)
        self.inner.insert(table, data, *args, **kwargs)
        self.events.append(("stored", rows))


def test_the_next_batch_is_read_while_one_is_inserted_and_commits_follow_the_inserts(store):
    """Batch N+1 is read while batch N is inserted (on the insert thread); batch N's offsets are committed only
    after its rows are stored, and batch N+1 is inserted only after that commit."""
    batch = SETTINGS.store_batch_rows
    records = records_of("metrics", [metrics(seq=i, at=T0 + i) for i in range(3 * batch)], partitions=1)
    events: list = []
    consumer = Watched(records, events)
    ordered = Ordered(store, consumer, events)
    w = StoreWriter(SETTINGS, ordered, LIMITS)

    async def main():
        stop = asyncio.Event()
        task = asyncio.create_task(w.consume(consumer, FakeProducer(), stop))
        while not consumer.done() and not task.done():
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 60)

    asyncio.run(main())
    assert consumer.done() and ordered.overlapped
    stored = committed = 0
    inserting = False
    for kind, n in events:
        if kind == "insert":
            assert not inserting and committed == stored, events  # one insert at a time, after the last commit
            inserting = True
        elif kind == "stored":
            inserting, stored = False, stored + n
        elif kind == "commit":
            assert n == stored, events  # a commit names exactly the rows stored, never more
            committed = n
    assert committed == stored == 3 * batch
    # Batch 2 was read after batch 1's insert began and before it ended.
    assert events.index(("insert", batch)) < events.index(("read", 2 * batch)) < events.index(("stored", batch))
    assert store.query("SELECT count() FROM frame_metrics FINAL") == [(3 * batch,)]


@pytest.mark.parametrize("table", ["frame_metrics", "predictions", "alerts", "dead_letters", "camera_views"])
def test_sink_tables_keep_their_columns(store, table):
    from store.writer import SINKS

    columns = {r[0] for r in store.query(f"SELECT name FROM system.columns WHERE database = currentDatabase() "
                                         f"AND table = '{table}'")}  # fmt: skip
    sink = next(s for s in SINKS.values() if s.table == table)
    assert {c.split(".")[0] if c.startswith("detections.") else c for c in sink.columns} <= columns | {"detections"}


def test_evidence_thumbnails_are_stored_as_jpeg_bytes_and_a_bad_image_is_refused(store):
    import base64

    import cv2
    import numpy as np

    from core.contracts import Evidence, encode_record
    from store.writer import StoreWriter
    from tests.store.records import SETTINGS, T0, Record

    jpeg = cv2.imencode(".jpg", np.full((90, 160, 3), 120, np.uint8))[1].tobytes()
    good = Evidence(alert_id="ev-1", camera_id="cam-e", frame_id="cam-e:0:7", captured_at=T0, width=160,
                    height=90, source_width=1280, source_height=720,
                    image_b64=base64.b64encode(jpeg).decode())  # fmt: skip
    bad = good.model_copy(update={"frame_id": "cam-e:0:8", "image_b64": base64.b64encode(b"GIF89a").decode()})
    w = StoreWriter(SETTINGS, store)
    records = [Record(SETTINGS.topic("evidence"), 0, i, b"cam-e", encode_record(e)) for i, e in enumerate([good, bad])]
    tables, dead = w.to_columns(records, now=T0)
    assert [(d.offset, d.reason) for d in dead] == [(1, "bad_image")]
    import asyncio

    assert asyncio.run(w.insert(tables, asyncio.Event(), w.tokens(records, dead)))
    stored = store.query(
        "SELECT frame_id, role, width, source_width, length(image), base64Encode(image) FROM evidence_frames FINAL"
    )
    assert [row[:5] for row in stored] == [("cam-e:0:7", "evidence", 160, 1280, len(jpeg))]
    assert base64.b64decode(stored[0][5]) == jpeg  # the raw JPEG bytes, not their base64


def test_sampled_drift_statistics_become_drift_stats_rows_once_each(store):
    from core.contracts import DriftStatistic

    def sampled(seq: int, p: float) -> list[DriftStatistic]:
        return [
            DriftStatistic(detector="ks_holm", signal="blur_distribution", statistic=p, threshold=1e-4, drift=p < 1e-4,
                           window=100),
            DriftStatistic(detector="autoencoder", signal="embedding_outlier", statistic=0.5 + seq, threshold=2.0,
                           drift=False, window=3),
        ]  # fmt: skip

    w = writer(store)
    items = [metrics(seq=i, at=T0 + i) for i in range(10)]
    items[3] = metrics(seq=3, at=T0 + 3, outlier_score=1.25, drift=sampled(3, 0.2))
    items[8] = metrics(seq=8, at=T0 + 8, drift=sampled(8, 1e-6))
    store_batch(w, records_of("metrics", items[:5], partitions=1))
    store_batch(w, records_of("metrics", items, partitions=1))  # a replay that covers frame 3 again
    rows = store.query(
        """SELECT signal, detector, toUnixTimestamp64Milli(computed_at) / 1000 - {t0:Float64}, statistic, threshold,
                  drift, window, alert_id
           FROM drift_stats FINAL ORDER BY computed_at, signal""",
        {"t0": T0},
    )
    assert rows == [
        ("blur_distribution", "ks_holm", 3.0, 0.2, 1e-4, False, 100, ""),
        ("embedding_outlier", "autoencoder", 3.0, 3.5, 2.0, False, 3, ""),
        ("blur_distribution", "ks_holm", 8.0, 1e-6, 1e-4, True, 100, ""),
        ("embedding_outlier", "autoencoder", 8.0, 8.5, 2.0, False, 3, ""),
    ]
    scores = store.query("SELECT seq, outlier_score FROM frame_metrics FINAL WHERE outlier_score IS NOT NULL")
    assert scores == [(3, 1.25)]


def test_the_store_keeps_the_newest_view_of_each_camera_and_role(store):
    import base64

    import cv2
    import numpy as np

    from core.contracts import CameraView

    def view(camera: str, role: str, at: float, grey: int) -> CameraView:
        jpeg = cv2.imencode(".jpg", np.full((90, 160, 3), grey, np.uint8))[1].tobytes()
        image = base64.b64encode(jpeg).decode()
        return CameraView(camera_id=camera, role=role, frame_id=f"{camera}:0:{at}", captured_at=at, width=160,
                          height=90, source_width=1280, source_height=720, image_b64=image)  # fmt: skip

    w = writer(store)
    first = [view("cam-v", "latest", T0, 10), view("cam-v", "reference", T0, 20), view("cam-w", "latest", T0, 30)]
    later = [view("cam-v", "latest", T0 + 30, 40), view("cam-v", "latest", T0 + 60, 50)]
    store_batch(w, records_of("views", first))
    store_batch(w, records_of("views", later, start=10))
    store_batch(w, records_of("views", [view("cam-v", "latest", T0 + 15, 60)], start=20))  # older than the newest
    rows = store.query(
        "SELECT camera_id, role, toUnixTimestamp64Milli(captured_at) / 1000 - {t0:Float64}, frame_id "
        "FROM camera_views FINAL ORDER BY camera_id, role",
        {"t0": T0},
    )
    assert rows == [
        ("cam-v", "latest", 60.0, f"cam-v:0:{T0 + 60}"),
        ("cam-v", "reference", 0.0, f"cam-v:0:{T0}"),
        ("cam-w", "latest", 0.0, f"cam-w:0:{T0}"),
    ]
    store.command("OPTIMIZE TABLE camera_views FINAL")
    assert store.query("SELECT count() FROM camera_views") == [(3,)]  # one row per camera and role, merged
