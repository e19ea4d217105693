"""Shared fixtures. Integration tests talk to the real broker that ``./dev test`` starts
(``CVOPS_KAFKA_BOOTSTRAP``) and to a real embedded ClickHouse engine in a temporary directory."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.settings import Settings
from streams.gateway import default_footage


@pytest.fixture(scope="session")
def bootstrap() -> str:
    value = os.environ.get("CVOPS_KAFKA_BOOTSTRAP")
    if not value:
        pytest.fail("integration tests need a broker: run them with ./dev test (it starts one)")
    return value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def settings(bootstrap: str, tmp_path: Path) -> Settings:
    """Settings isolated per test: own topics, consumer groups, store directory and API port."""
    return Settings(
        _env_file=None,
        kafka_bootstrap=bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        frames_partitions=3,
        store_dsn=f"chdb://{tmp_path / 'store'}",
        api_port=free_port(),
        batch_max_wait_ms=20,
        intra_op_threads=2,
    )


@pytest.fixture(scope="session")
def street_frames() -> list[np.ndarray]:
    """The first 40 frames of the real street footage (BGR)."""
    cap = cv2.VideoCapture(str(default_footage()))
    frames = []
    while len(frames) < 40:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == 40
    return frames
