"""Shared inputs for the monitor tests: a real street frame, and a JSON round trip of a detector's state."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from streams.gateway import default_footage


@pytest.fixture(scope="session")
def street_frame() -> np.ndarray:
    """Frame 50 of the default footage (640 x 272 BGR), read in order rather than by seeking."""
    path = default_footage()
    cap = cv2.VideoCapture(str(path))
    try:
        for _ in range(51):
            ok, frame = cap.read()
            assert ok, "the footage has fewer than 51 frames"
    finally:
        cap.release()
    return frame


def through_json(state: dict) -> dict:
    """The state as it comes back from a changelog: serialised to JSON text and parsed again."""
    return json.loads(json.dumps(state, allow_nan=False))
