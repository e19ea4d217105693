"""A champion and a challenger end to end, on real parts: the broker ./dev test starts, the worker and the API as
the ``cvops`` processes a user runs (the API with its embedded store and writer), NanoDet-m as the champion and
YOLOv4-tiny as the challenger on a share of a camera's frames of real street footage.

Checked: the challenger's agreement figures the API gives are those of a direct computation on the same frames
(both models run here, models.agreement on their boxes); the challenger's detections never reach the champion's
predictions; a config record naming a model the registry lacks is dead-lettered and the worker goes on; promote
and roll back through the API change the model new frames go to, and are recorded in the store."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import cv2
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from api.tokens import hash_token
from core.assignment import sampled
from core.contracts import (
    CameraConfig,
    DeadLetter,
    FrameHeader,
    ModelAssignment,
    Prediction,
    ShadowPrediction,
    decode_record,
    pack_frame,
)
from core.settings import Settings
from core.topology import create_topics
from models import load_detector
from models.agreement import agreement, combine, totals
from streams.gateway import decode_jpeg, default_footage, encode
from streams.process_group import terminate
from tests.processes import counts, env_of, wait_for
from tests.test_config_propagation import send as send_config

pytestmark = pytest.mark.integration

TOKEN = "shadow-test-token"
CAMERA, SHARE = "cam-s", 0.3
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def start(settings: Settings, command: str, log: Path) -> subprocess.Popen:
    env = env_of(settings) | {"CVOPS_API_TOKENS": hash_token(TOKEN)}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "cli", command], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


class Frames:
    """Frames of the street footage for one camera, published one by one, each remembered by id."""

    def __init__(self, settings: Settings, images):
        self.settings, self.images, self.seq = settings, images, 0
        self.jpeg: dict[str, bytes] = {}

    async def send(self, n: int) -> list[str]:
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, acks="all")
        await producer.start()
        ids = []
        try:
            for _ in range(n):
                image = self.images[self.seq % len(self.images)]
                h = FrameHeader(frame_id=f"{CAMERA}:1:{self.seq}", camera_id=CAMERA, seq=self.seq,
                                captured_at=time.time(), width=image.shape[1], height=image.shape[0])  # fmt: skip
                self.jpeg[h.frame_id] = data = encode(image, 90)
                await producer.send_and_wait(self.settings.topic("frames"), pack_frame(h, data), key=CAMERA.encode())
                ids.append(h.frame_id)
                self.seq += 1
        finally:
            await producer.stop()
        return ids


class Topic:
    """Reads a topic from its start and keeps what it has read, for repeated checks."""

    def __init__(self, settings: Settings, name: str, contract):
        self.settings, self.name, self.contract, self.records = settings, name, contract, []

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        for batch in (await consumer.getmany(timeout_ms=500)).values():
            self.records += [decode_record(self.contract, r.value) for r in batch]

    def poll(self) -> list:
        async def go():
            consumer = AIOKafkaConsumer(self.settings.topic(self.name), bootstrap_servers=self.settings.kafka_bootstrap,
                                        auto_offset_reset="earliest")  # fmt: skip
            await consumer.start()
            try:
                self.records = []
                await self._read(consumer)
                while True:
                    before = len(self.records)
                    await self._read(consumer)
                    if len(self.records) == before:
                        return self.records
            finally:
                await consumer.stop()

        return asyncio.run(go())


def switch_seen(frames: Frames, predictions: Topic, model: str, procs) -> list[str]:
    """Publish a frame at a time until one's prediction comes from ``model``; the models of the frames sent, in
    order. The switch is a condition waited on, not a sleep."""
    sent: list[str] = []

    def check():
        sent.extend(asyncio.run(frames.send(1)))
        by_id = {p.frame_id: p.model_name for p in predictions.poll()}
        models = [by_id.get(f) for f in sent]
        return model in models and models

    return wait_for(check, f"new frames going to {model}", procs, timeout_s=180)


def footage(first: int, n: int) -> list:
    """Frames ``first`` to ``first + n`` of the street footage: at the end of the clip, where the two models find
    some of the same objects (frames 203, 220, 222 and 225 have boxes they agree on)."""
    cap = cv2.VideoCapture(str(default_footage()))
    out = []
    while len(out) < first + n:
        ok, frame = cap.read()
        assert ok, "the footage is shorter than expected"
        out.append(frame)
    cap.release()
    return out[first:]


def test_a_challenger_in_shadow_agrees_as_computed_directly_and_promote_switches_new_frames(
    settings: Settings, tmp_path: Path
):
    settings = settings.model_copy(update={"frames_partitions": 1, "embedding_model": "", "batch_max_size": 4})
    asyncio.run(create_topics(settings))
    worker_log, api_log = tmp_path / "worker.log", tmp_path / "api.log"
    worker, api = start(settings, "worker", worker_log), start(settings, "api", api_log)
    procs = [(worker, worker_log), (api, api_log)]
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{settings.api_port}", timeout=30)
        wait_for(lambda: counts(client), "the API", procs)
        base = f"/api/v1/models/assignments/{CAMERA}"
        r = client.put(base, json={"champion": "nanodet-m", "challenger": "yolov4-tiny", "share": SHARE}, headers=AUTH)
        assert r.status_code == 202, r.text
        # bad input beside it: a record naming a model the registry lacks, straight on the config topic
        bad = CameraConfig(scope="cam-bad", models=ModelAssignment(champion="no-such-model"))
        asyncio.run(send_config(settings, bad))
        dead = Topic(settings, "deadletters", DeadLetter)
        letter = wait_for(lambda: [d for d in dead.poll() if d.reason == "unknown_model"], "the dead letter", procs)
        assert letter[0].source_topic == settings.topic("config") and "no-such-model" in letter[0].detail

        def serving_both() -> list:
            return [w for w in client.get("/api/v1/workers").json() if "yolov4-tiny@1.0.0" in w["status"]["models"]]

        wait_for(serving_both, "the worker serving both", procs)

        frames = Frames(settings, footage(200, 40))
        ids = asyncio.run(frames.send(40))
        picked = [f for f in ids if sampled(f, SHARE)]
        predictions = Topic(settings, "predictions", Prediction)
        shadows = Topic(settings, "shadow-predictions", ShadowPrediction)
        wait_for(lambda: len(predictions.poll()) >= 40 and len(shadows.poll()) >= len(picked), "the outputs", procs)
        champion = {p.frame_id: p for p in predictions.records}
        assert {p.model_name for p in champion.values()} == {"nanodet-m"}
        assert sorted(s.frame_id for s in shadows.records) == sorted(picked) and 5 < len(picked) < 20

        # the figures the API gives, once the store has every shadow frame
        url = f"/api/v1/cameras/{CAMERA}/agreement"
        window = {"since": time.time() - 3600, "until": time.time() + 60, "step": 3600}

        def stored() -> dict | None:
            b = client.get(url, params=window).json()
            return b if b["totals"] and b["totals"][0]["frames"] == len(picked) else None

        body = wait_for(stored, "the agreement in the store", procs)
        [total] = body["totals"]
        assert (total["champion"], total["challenger"]) == ("nanodet-m@1.0.0", "yolov4-tiny@1.0.0")

        # the same computed directly: both models here, on the same frames
        nanodet = load_detector("nanodet-m", intra_op_threads=2, score_threshold=settings.score_threshold)
        yolo = load_detector("yolov4-tiny", intra_op_threads=2, score_threshold=settings.score_threshold)
        images = [decode_jpeg(frames.jpeg[f]) for f in picked]
        direct = [agreement(a, b) for a, b in zip(nanodet.predict(images), yolo.predict(images), strict=True)]
        whole, per_class = totals(direct), combine(direct)
        assert whole.matched > 0  # the frames sampled hold boxes both find
        got = total["all"]
        assert (got["champion_boxes"], got["challenger_boxes"], got["matched"]) == (
            whole.reference, whole.candidate, whole.matched
        )  # fmt: skip
        assert got["precision"] == pytest.approx(whole.precision) and got["recall"] == pytest.approx(whole.recall)
        assert got["f1"] == pytest.approx(whole.f1) and got["score_delta"] == pytest.approx(whole.score_delta, abs=1e-3)
        assert got["count_delta"] == pytest.approx((whole.candidate - whole.reference) / len(picked))
        assert set(total["classes"]) == set(per_class)
        for label, a in per_class.items():
            c = total["classes"][label]
            assert (c["champion_boxes"], c["challenger_boxes"], c["matched"]) == (a.reference, a.candidate, a.matched)
            assert c["f1"] == pytest.approx(a.f1)

        # promote: new frames go to YOLOv4-tiny; roll back: to NanoDet-m again; both recorded in the store
        print(f"agreement on {len(picked)} of 40 frames: {got}")
        r = client.post(f"{base}/promote", json={"by": "integration test"}, headers=AUTH)
        assert r.status_code == 202, r.text
        promoted_at = time.monotonic()
        models = switch_seen(frames, predictions, "yolov4-tiny", procs)
        print(f"promoted: new frames go to yolov4-tiny after {time.monotonic() - promoted_at:.1f} s: {models}")
        first = models.index("yolov4-tiny")
        assert set(models[:first]) <= {"nanodet-m", None} and set(models[first:]) == {"yolov4-tiny"}
        r = client.post(f"{base}/rollback", json={"by": "integration test"}, headers=AUTH)
        assert r.status_code == 202, r.text
        models = switch_seen(frames, predictions, "nanodet-m", procs)
        assert models[-1] == "nanodet-m" and models.count("nanodet-m") == len(models) - models.index("nanodet-m")

        def recorded() -> list | None:
            c = client.get("/api/v1/models/changes", params={"scope": CAMERA}).json()
            return c if len(c) == 2 else None

        changes = wait_for(recorded, "the changes in the store", procs)
        assert [(c["action"], c["from_model"], c["to_model"], c["by"]) for c in changes] == [
            ("rollback", "yolov4-tiny", "nanodet-m", "integration test"),
            ("promote", "nanodet-m", "yolov4-tiny", "integration test"),
        ]
        # after the promotion NanoDet-m ran in shadow: its frames are shadow predictions, never predictions
        roles = {(s.model_name, s.champion_name) for s in shadows.poll()}
        assert ("nanodet-m", "yolov4-tiny") in roles or len(models) < 4
    finally:
        for proc in (worker, api):
            terminate(proc, 30.0)
