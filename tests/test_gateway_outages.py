"""Outages at the gateway's edges, on real parts: a real RTSP camera (GStreamer's RTSP server) stopped and
started again, video files that break mid-stream, and a broker stopped and started again, with gateways
run as the ``cvops gateway`` processes a user runs.

The frames that reach the broker are counted per camera by a consumer running beside the test. Nothing
here waits a fixed time to assert: every check waits for a condition with a generous deadline.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import cv2
import pytest
from aiokafka import AIOKafkaConsumer

from core.contracts import Alert, decode_record, unpack_frame
from core.settings import Settings
from core.topology import create_topics
from streams.localbroker import port_open
from tests.conftest import free_port
from tests.processes import env_of, start, stop, wait_for
from tests.rtsp_server import PYTHON

pytestmark = pytest.mark.integration

RTSP_SERVER = Path(__file__).with_name("rtsp_server.py")


def gateway(settings: Settings, args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli", "gateway", *args],
            env=env_of(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def lines(log: Path, pattern: str) -> list[str]:
    return [line for line in log.read_text().splitlines() if re.search(pattern, line)]


class TopicWatch:
    """Reads a topic from its start on a thread of its own until closed: frames counted per camera (with the
    newest capture time), or alerts kept."""

    def __init__(self, settings: Settings, topic: str):
        self.settings, self.topic = settings, settings.topic(topic)
        self.frames: Counter[str] = Counter()
        self.newest: dict[str, float] = {}
        self.alerts: list[Alert] = []
        self.closing = False
        self.thread = threading.Thread(target=asyncio.run, args=(self._run(),), daemon=True)
        self.thread.start()

    async def _run(self) -> None:
        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.settings.kafka_bootstrap,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=200,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        await consumer.start()
        try:
            while not self.closing:  # an error here is printed by the thread, and the counts stop
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    for record in batch:
                        if self.topic.endswith("frames"):
                            header = unpack_frame(record.value).header
                            self.frames[header.camera_id] += 1
                            self.newest[header.camera_id] = max(
                                self.newest.get(header.camera_id, 0), header.captured_at
                            )
                        else:
                            self.alerts.append(decode_record(Alert, record.value))
        finally:
            await consumer.stop()

    def close(self) -> None:
        self.closing = True
        self.thread.join(30)


def write_clip(path: Path, frames, fps: float = 10.0) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (frames[0].shape[1], frames[0].shape[0]))
    for f in frames:
        writer.write(f)
    writer.release()
    assert path.stat().st_size > 0


class RtspCamera:
    """tests/rtsp_server.py as a process on a fixed port, to stop and start again."""

    def __init__(self, port: int, log: Path):
        self.port, self.log, self.proc = port, log, None
        self.url = f"rtsp://127.0.0.1:{port}/cam"

    def start(self) -> RtspCamera:
        if not Path(PYTHON).exists():
            pytest.fail(f"the RTSP camera needs Debian's {PYTHON} with python3-gi: run ./dev setup")
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [PYTHON, str(RTSP_SERVER), "--port", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # stop() signals its process group
            )
        wait_for(lambda: port_open("127.0.0.1", self.port), "the RTSP server", [(self.proc, self.log)], 60)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop(self.proc)


def test_cameras_reconnect_on_their_own_and_the_worker_sees_the_silence(
    settings: Settings, tmp_path: Path, street_frames
):
    """cam-1 is an RTSP camera stopped mid-run and started again; cam-2, a video file, keeps publishing
    meanwhile. The worker raises device_fault (no_frames) for cam-1 and resolves it when frames come back."""
    s = settings.model_copy(update={"monitor_expected_fps": 2.0, "frames_purge_every_s": 0.0})
    asyncio.run(create_topics(s))
    clip = tmp_path / "clip.avi"
    write_clip(clip, street_frames)
    camera = RtspCamera(free_port(), tmp_path / "rtsp.log").start()
    gw_log, worker_log = tmp_path / "gateway.log", tmp_path / "worker.log"
    # the worker first, so that it is not behind the cameras (a worker catching up sees silences of its own)
    worker = start(s, "worker", worker_log)
    wait_for(
        lambda: "newly assigned partitions" in worker_log.read_text(), "the worker's partitions", [(worker, worker_log)]
    )
    args = ["--source", camera.url, "--source", str(clip), "--replay", "stream", "--fps", "2"]
    gw = gateway(s, [*args, "--reconnect-max", "2", "--duration", "600"], gw_log)
    frames, alerts = TopicWatch(s, "frames"), TopicWatch(s, "alerts")
    procs = [(gw, gw_log), (worker, worker_log)]
    try:
        wait_for(lambda: frames.frames["cam-1"] >= 10 and frames.frames["cam-2"] >= 10, "frames of both cameras", procs)
        wait_for(lambda: "capturing from rtsp://" in gw_log.read_text(), "cam-1 capturing", procs)

        seen = len(alerts.alerts)
        camera.stop()
        wait_for(lambda: lines(gw_log, r"cam-1: lost rtsp://"), "cam-1 lost", procs)
        cam2_at_loss = frames.frames["cam-2"]
        wait_for(lambda: frames.frames["cam-2"] >= cam2_at_loss + 10, "cam-2 publishing while cam-1 is down", procs)

        def silent(status: str):
            return [
                a
                for a in alerts.alerts[seen:]
                if (a.camera_id, a.type, a.signal, a.status) == ("cam-1", "device_fault", "no_frames", status)
            ]

        wait_for(lambda: silent("raised"), "device_fault no_frames raised for cam-1", procs)

        seen = len(alerts.alerts)
        camera.start()  # the same camera, on the same port
        back = wait_for(lambda: lines(gw_log, r"cam-1: rtsp://\S+ is back after \d+ attempts"), "cam-1 back", procs)
        cam1_at_back = frames.frames["cam-1"]
        wait_for(lambda: frames.frames["cam-1"] >= cam1_at_back + 10, "cam-1 frames after its return", procs)
        wait_for(lambda: silent("resolved"), "device_fault no_frames resolved for cam-1", procs)

        # one line per change of state, whatever the number of attempts
        assert len(lines(gw_log, r"cam-1: lost")) == 1 and len(back) == 1
        attempts = int(re.search(r"back after (\d+) attempts", back[0]).group(1))
        assert attempts >= 1
        assert len(lines(gw_log, r"cam-1:")) == 3, gw_log.read_text()[-3000:]  # capturing, lost, back
        assert not lines(gw_log, r"cam-2: (lost|cannot)")
    finally:
        frames.close()
        alerts.close()
        camera.stop()
        stop(worker)
        stop(gw, signal.SIGINT)
    assert gw.returncode == 0, gw_log.read_text()[-3000:]


def test_a_file_that_breaks_mid_stream_is_retried_while_the_other_cameras_go_on(
    settings: Settings, tmp_path: Path, street_frames
):
    good, broken, truncated = tmp_path / "good.avi", tmp_path / "broken.avi", tmp_path / "truncated.avi"
    write_clip(good, street_frames)
    write_clip(broken, street_frames)
    write_clip(truncated, street_frames)
    with open(truncated, "r+b") as f:  # a real file cut short: its header still declares 40 frames
        f.truncate(truncated.stat().st_size * 2 // 3)
    saved = tmp_path / "saved.avi"
    shutil.copy(broken, saved)
    asyncio.run(create_topics(settings))
    log = tmp_path / "gateway.log"
    sources = ["--source", str(good), "--source", str(broken), "--source", str(truncated)]
    gw = gateway(settings, [*sources, "--replay", "stream", "--fps", "20", "--reconnect-max", "1"], log)
    frames = TopicWatch(settings, "frames")
    procs = [(gw, log)]
    try:
        wait_for(lambda: all(frames.frames[f"cam-{i}"] >= 20 for i in (1, 2, 3)), "frames of three cameras", procs)
        truncated_warning = wait_for(
            lambda: lines(log, r"cam-3: .* ended after \d+ of the 40 frames"), "cam-3 warned", procs
        )

        with open(broken, "r+b") as f:  # cam-2's file breaks under it: it can no longer be opened
            f.truncate(0)
        wait_for(lambda: lines(log, r"cam-2: lost .*broken\.avi"), "cam-2 lost", procs)
        at_loss = dict(frames.frames)
        others_go_on = lambda: all(frames.frames[c] >= at_loss[c] + 40 for c in ("cam-1", "cam-3"))  # noqa: E731
        wait_for(others_go_on, "cam-1 and cam-3 publishing while cam-2 is down", procs)

        shutil.copy(saved, broken)
        wait_for(lambda: lines(log, r"cam-2: \S+broken\.avi is back after \d+ attempts"), "cam-2 back", procs)
        at_back = frames.frames["cam-2"]
        wait_for(lambda: frames.frames["cam-2"] >= at_back + 20, "cam-2 frames after its return", procs)
        assert len(lines(log, r"cam-2: lost")) == 1
        assert len(truncated_warning) == 1 and len(lines(log, r"cam-3: .*\(truncated\?\)")) == 1  # once, not per pass
        assert not lines(log, r"cam-[13]: (lost|cannot)")
    finally:
        frames.close()
        stop(gw, signal.SIGINT)
    assert gw.returncode == 0, log.read_text()[-3000:]


class Broker:
    """``cvops broker`` on a fixed port and data folder, to stop with SIGTERM and start again."""

    def __init__(self, port: int, data: Path, log: Path):
        self.port, self.data, self.log, self.proc = port, data, log, None
        self.bootstrap = f"127.0.0.1:{port}"

    def start(self) -> Broker:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cli", "broker", "--port", str(self.port), "--data-dir", str(self.data)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(lambda: port_open("127.0.0.1", self.port), "the broker", [(self.proc, self.log)], 120)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop(self.proc)


def test_the_gateway_rides_out_a_broker_outage(settings: Settings, tmp_path: Path):
    """Three gateways on a broker that is stopped and started again on the same port and data: one is
    stopped by its --duration during the outage, one by Ctrl-C during the outage, and the third carries on
    and delivers frames captured after the broker came back."""
    broker = Broker(free_port(), tmp_path / "broker-data", tmp_path / "broker.log").start()
    s = settings.model_copy(update={"kafka_bootstrap": broker.bootstrap, "topic_prefix": f"o{uuid.uuid4().hex[:8]}."})
    asyncio.run(create_topics(s))
    logs = {name: tmp_path / f"gateway-{name}.log" for name in ("on", "duration", "ctrl-c")}
    common = ["--cameras", "2", "--fps", "10", "--buffer-frames", "10"]
    gws = {
        "on": gateway(s, [*common, "--camera-prefix", "on-", "--duration", "600"], logs["on"]),
        "duration": gateway(s, [*common, "--camera-prefix", "dur-", "--duration", "40"], logs["duration"]),
        "ctrl-c": gateway(s, [*common, "--camera-prefix", "int-", "--duration", "600"], logs["ctrl-c"]),
    }
    frames = TopicWatch(s, "frames")
    procs = [(gws[name], logs[name]) for name in gws]
    try:
        wait_for(
            lambda: all(frames.frames[f"{p}-1"] >= 5 for p in ("on", "dur", "int")), "frames of every gateway", procs
        )
        frames.close()  # its connection would only retry while the broker is down

        broker.stop()
        stopped_at = time.time()
        outage = [(gws["on"], logs["on"]), (gws["ctrl-c"], logs["ctrl-c"])]
        for name in ("on", "ctrl-c"):
            wait_for(lambda n=name: lines(logs[n], "broker unreachable"), f"the outage in {name}'s log", outage)

        gws["ctrl-c"].send_signal(signal.SIGINT)
        wait_for(lambda: gws["ctrl-c"].poll() is not None, "the gateway to stop on Ctrl-C", [], timeout_s=60)
        assert gws["ctrl-c"].returncode == 0, logs["ctrl-c"].read_text()[-3000:]
        wait_for(lambda: gws["duration"].poll() is not None, "the gateway to stop at its --duration", [], timeout_s=120)
        assert gws["duration"].returncode == 0, logs["duration"].read_text()[-3000:]
        assert '"frames_published"' in logs["duration"].read_text()

        time.sleep(2.0)  # an outage longer than the 10-frame buffer lasts at 20 frames a second
        broker.start()
        restarted_at = time.time()
        back = wait_for(
            lambda: lines(logs["on"], "broker back after"), "the gateway to see the broker back", outage[:1]
        )
        frames = TopicWatch(s, "frames")
        after = lambda: all(frames.newest.get(f"on-{i}", 0) > restarted_at + 1 for i in (1, 2))  # noqa: E731
        wait_for(after, "frames captured after the broker came back", outage[:1])

        # the outage is logged once when it starts and once when it ends, with what was dropped
        assert len(lines(logs["on"], "broker unreachable")) == 1 and len(back) == 1
        dropped = int(re.search(r"(\d+) frames dropped meanwhile", back[0]).group(1))
        assert dropped > 0
        # and the Kafka client's own complaints, once per minute each, not once per attempt
        during = [ln for ln in logs["on"].read_text().splitlines() if "aiokafka" in ln]
        minutes = (restarted_at - stopped_at) / 60
        assert len(during) <= 10 * (minutes + 1), "\n".join(during)
    finally:
        frames.close()
        for proc in gws.values():
            stop(proc, signal.SIGINT)
        broker.stop()
    assert gws["on"].returncode == 0, logs["on"].read_text()[-3000:]
    assert "OutOfOrderSequenceNumber" not in logs["on"].read_text()
