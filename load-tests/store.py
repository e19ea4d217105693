"""Store benchmark: the writer's insert path against a plain clickhouse-connect insert, and the dashboard
queries over millions of metric rows, on the embedded engine (chdb).

    ./dev bench store [--quick] [--rows 10000000] [--writer-rows 200000]

Writer path, without Kafka: encoded ``FrameMetrics`` records are served by an in-memory consumer to the
writer's own loop (``StoreWriter.consume``: batches of ``store_batch_rows``, contract parse + store check,
columnar insert with deduplication tokens, commit), timed until the last offset is committed. The raw
baseline inserts the very same rows with ``client.insert`` (row-oriented, already parsed) into an identical
database in the same run. Both feed the same materialized views.

Dashboard: ``--rows`` metric rows (100 cameras at 5 frames/s) are generated inside the engine, then the
cookbook's ``camera_minutes`` (one camera, one hour and the whole range) and ``fleet_latest`` (all
cameras) run repeatedly; p50/p95 in ms. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.contracts import FrameMetrics, encode_record
from core.settings import Settings
from store import Store, connect
from store.cookbook import recipes
from store.schema import migrate
from store.settings import StoreSettings
from store.tables import FRAME_METRICS
from store.validate import Limits
from store.writer import StoreWriter

CAMERAS = 100
FPS = 5


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes


def records(n: int, topic: str, t0: float) -> list[Record]:
    out = []
    for i in range(n):
        cam = i % CAMERAS
        seq = i // CAMERAS
        at = t0 + seq / FPS
        m = FrameMetrics(
            frame_id=f"cam-{cam}:s:{seq}", camera_id=f"cam-{cam}", seq=seq, captured_at=at, processed_at=at + 0.05,
            model_name="nanodet-m", model_version="1", encoding="jpeg", bytes=20_000 + i % 5000, width=640,
            height=360, aspect_ratio=640 / 360, brightness=100 + i % 50, blur=40 + i % 30, inference_ms=15 + i % 10,
            detections=i % 7,
        )  # fmt: skip
        out.append(Record(topic, cam % 8, seq, f"cam-{cam}".encode(), encode_record(m)))
    return out


class MemoryConsumer:
    """The records of a topic, served like aiokafka's consumer: what the writer's loop needs, no broker."""

    def __init__(self, recs: list[Record]):
        self.recs, self.pos, self.committed, self.paused = recs, 0, {}, False

    def assignment(self):
        return {(r.topic, r.partition) for r in self.recs[:8]}

    def pause(self, *tps):
        self.paused = True

    def resume(self, *tps):
        self.paused = False

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None):
        if self.paused or self.pos >= len(self.recs):
            await asyncio.sleep(0.001)
            return {}
        take = self.recs[self.pos : self.pos + (max_records or 500)]
        self.pos += len(take)
        return {("all", 0): take}

    async def commit(self, offsets):
        self.committed.update(offsets)


class NoProducer:
    async def send(self, topic, value, key=None):
        raise AssertionError("no dead letters expected")


def bench_writer(chdb: Path, n: int, batch: int) -> dict:
    settings = Settings(_env_file=None, topic_prefix="bench.", store_batch_rows=batch, store_batch_wait_ms=50)
    st = StoreSettings(_env_file=None)
    writer_store = connect(f"chdb://{chdb}?database=bench_writer")
    raw_store = connect(f"chdb://{chdb}?database=bench_raw")
    for s in (writer_store, raw_store):
        migrate(s, settings=st)
    recs = records(n, settings.topic("metrics"), time.time() - 3600)
    w = StoreWriter(settings, writer_store, Limits())
    batches = [recs[i : i + batch] for i in range(0, n, batch)]
    raw_rows = [w.to_rows(b)[0]["frame_metrics"] for b in batches]  # the very rows the writer inserts
    parse_start = time.perf_counter()
    for b in batches:
        w.to_columns(b)  # what the writer's loop runs (to_rows adds turning its columns into rows)
    parse_s = time.perf_counter() - parse_start
    columns = list(FRAME_METRICS.columns)
    client = raw_store._client

    def raw(part: list[list[tuple]]) -> float:
        start = time.perf_counter()
        for rows in part:
            client.insert("frame_metrics", rows, column_names=columns)
        return time.perf_counter() - start

    async def through_the_loop() -> float:
        consumer, stop = MemoryConsumer(recs), asyncio.Event()
        last = {}
        for r in recs:
            last[(r.topic, r.partition)] = r.offset + 1
        start = time.perf_counter()
        task = asyncio.create_task(w.consume(consumer, NoProducer(), stop))
        while {(tp[0], tp[1]): o for tp, o in consumer.committed.items()} != last:
            await asyncio.sleep(0.002)
        elapsed = time.perf_counter() - start
        stop.set()
        await task
        return elapsed

    # The raw baseline runs half before and half after the writer, so the machine's other load hits both alike.
    half = len(raw_rows) // 2
    raw_s = raw(raw_rows[:half])
    writer_s = asyncio.run(through_the_loop())
    raw_s += raw(raw_rows[half:])
    counts = [s.query("SELECT count() FROM frame_metrics FINAL")[0][0] for s in (writer_store, raw_store)]
    assert counts == [n, n], counts
    writer_store.close()
    raw_store.close()
    return {
        "writer_rows": n,
        "writer_rows_per_s": n / writer_s,
        "writer_parse_rows_per_s": n / parse_s,
        "raw_insert_rows_per_s": n / raw_s,
        "writer_ratio": raw_s / writer_s,
    }


def timed(store: Store, sql: str, params: dict, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        store.query(sql, parameters=params)
        out.append((time.perf_counter() - start) * 1000)
    return out


def bench_dashboard(chdb: Path, n: int, repeat: int) -> dict:
    store = connect(f"chdb://{chdb}?database=bench_dash")
    migrate(store, settings=StoreSettings(_env_file=None))
    per_camera = n // CAMERAS
    t0 = int(time.time()) - per_camera // FPS - 60
    start = time.perf_counter()
    # Generated inside the engine, through the same materialized views as the writer's inserts.
    store.command(
        f"""
INSERT INTO frame_metrics (frame_id, camera_id, seq, captured_at, processed_at, model_name, model_version,
    encoding, bytes, width, height, aspect_ratio, brightness, blur, inference_ms, detections)
SELECT concat('cam-', toString(c), ':s:', toString(s)) AS frame_id, concat('cam-', toString(c)) AS camera_id,
       s AS seq, fromUnixTimestamp64Milli(toInt64({t0} * 1000 + s * {1000 // FPS})) AS captured_at,
       captured_at + toIntervalMillisecond(50) AS processed_at, 'nanodet-m', if(s < {per_camera // 2}, '1', '2'),
       'jpeg', 20000 + number % 5000, 640, 360, 640 / 360, 100 + number % 50, 40 + number % 30,
       15 + number % 10, number % 7
FROM (SELECT number, number % {CAMERAS} AS c, intDiv(number, {CAMERAS}) AS s FROM numbers({n}))""",
        settings={"max_insert_threads": 2, "max_threads": 2},
    )
    load_s = time.perf_counter() - start
    # A burst of millions of rows leaves the engine merging for a while; the dashboard is timed on the settled
    # store, as it is between the writer's small inserts.
    for table in ("frame_metrics", "metrics_minute", "cameras", "model_versions"):
        store.command(f"OPTIMIZE TABLE {table} FINAL")
    while store.query("SELECT count() FROM system.merges WHERE database = currentDatabase()")[0][0]:
        time.sleep(0.5)
    minutes, latest = recipes()["camera_minutes"].sql, recipes()["fleet_latest"].sql
    end = t0 + per_camera / FPS

    def at(unix_s: float) -> datetime:
        return datetime.fromtimestamp(unix_s, tz=UTC)

    hour = {"camera": "cam-42", "since": at(end - 3600), "until": at(end)}
    whole = {"camera": "cam-7", "since": at(t0), "until": at(end)}
    raw_hour = (
        "SELECT toStartOfMinute(captured_at) AS minute, count(), avg(brightness), avg(blur), "
        "quantile(0.99)(inference_ms) FROM frame_metrics WHERE camera_id = {camera:String} "
        "AND captured_at >= {since:DateTime64(3, 'UTC')} AND captured_at < {until:DateTime64(3, 'UTC')} "
        "GROUP BY minute ORDER BY minute"
    )
    timed(store, minutes, hour, 3)  # warm caches
    results = {
        "camera_minutes_1h": timed(store, minutes, hour, repeat),
        "camera_minutes_all": timed(store, minutes, whole, repeat),
        "fleet_latest": timed(store, latest, {}, repeat),
        "raw_table_minutes_1h": timed(store, raw_hour, hour, repeat),
    }
    rows = store.query("SELECT count() FROM frame_metrics")[0][0]
    agg_rows = store.query("SELECT count() FROM metrics_minute")[0][0]
    store.close()
    dashboard = results["camera_minutes_1h"] + results["camera_minutes_all"] + results["fleet_latest"]
    return {
        "metric_rows": rows,
        "metrics_minute_rows": agg_rows,
        "load_rows_per_s": n / load_s,
        "queries": {k: {"p50_ms": statistics.median(v), "p95_ms": p95(v)} for k, v in results.items()},
        "dashboard_query_p95_ms": p95(dashboard),
    }


def p95(values: list[float]) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(0.95 * len(s)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rows: under a minute")
    ap.add_argument("--rows", type=int, default=None, help="metric rows for the dashboard queries")
    ap.add_argument("--writer-rows", type=int, default=None, help="rows through the writer and the raw insert")
    ap.add_argument("--batch", type=int, default=5000, help="rows per insert (store_batch_rows)")
    ap.add_argument("--repeat", type=int, default=None, help="runs of each dashboard query")
    args = ap.parse_args()
    rows = args.rows or (1_000_000 if args.quick else 10_000_000)
    writer_rows = args.writer_rows or (50_000 if args.quick else 200_000)
    repeat = args.repeat or (20 if args.quick else 50)
    with tempfile.TemporaryDirectory(prefix="cvops-bench-store-") as tmp:
        chdb = Path(tmp)
        writer = bench_writer(chdb, writer_rows, args.batch)
        dash = bench_dashboard(chdb, rows, repeat)
    print(f"{'measure':<34}{'value':>14}")
    print(f"{'writer rows/s (consume loop)':<34}{writer['writer_rows_per_s']:>14,.0f}")
    print(f"{'parse+check alone rows/s':<34}{writer['writer_parse_rows_per_s']:>14,.0f}")
    print(f"{'raw insert rows/s':<34}{writer['raw_insert_rows_per_s']:>14,.0f}")
    print(f"{'writer ratio (target >= 0.8)':<34}{writer['writer_ratio']:>14.2f}")
    print(f"{'metric rows generated':<34}{dash['metric_rows']:>14,}")
    print(f"{'metrics_minute rows':<34}{dash['metrics_minute_rows']:>14,}")
    for name, q in dash["queries"].items():
        print(f"{name + ' p50/p95 ms':<34}{q['p50_ms']:>7.1f}/{q['p95_ms']:<6.1f}")
    print(f"{'dashboard p95 ms (target <= 100)':<34}{dash['dashboard_query_p95_ms']:>14.1f}")
    summary = {
        "engine": "chdb",
        "quick": args.quick,
        **{k: round(v, 3) if isinstance(v, float) else v for k, v in writer.items()},
        "metric_rows": dash["metric_rows"],
        "dashboard_query_p95_ms": round(dash["dashboard_query_p95_ms"], 2),
        "queries": {k: {kk: round(vv, 2) for kk, vv in q.items()} for k, q in dash["queries"].items()},
        "load_rows_per_s": round(dash["load_rows_per_s"]),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
