"""The cameras' saved monitor states, in two tables: each state without its reference view, and the view.

A camera's state is written to the ``camera-health`` table every ``CVOPS_STATE_CHECKPOINT_FRAMES`` frames,
and at once on an event (a reference learned, an alert). Its moved-camera reference view, about half its
bytes, changes only when a new one is learned: it is written to the ``camera-reference`` table then, and
not with every checkpoint (:func:`~streams.monitor.camera.split_reference`). That saves the bytes of every
changelog write on any broker (with Kafka's compaction too), and on the embedded broker, which never
compacts, the bytes it holds and rewrites (docs/development-broker.md).

Values are JSON bytes, written and read here: a changelog record that is not JSON is one camera's state
learned again, where faust's own decoding would stall the table's recovery.

>>> health, references = {}, {}
>>> states = CameraStates(health, references, checkpoint=25)
>>> states.restore([b"cam-1"])
{'cam-1': None}
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, MutableMapping

from streams.monitor.camera import REFERENCE_ELSEWHERE, join_reference, split_reference
from streams.process import BatchResult

log = logging.getLogger("cvops.worker")


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


class CameraStates:
    """Save and restore the cameras' states in ``health`` and ``references`` (faust tables, or any mapping of
    bytes keys to bytes values). :meth:`snapshot` runs on the inference thread, the only one that changes
    the cameras' monitors; the others on the event loop."""

    def __init__(self, health: MutableMapping, references: MutableMapping, checkpoint: int):
        self.health = health
        self.references = references
        self.checkpoint = checkpoint
        self.saved_essential: dict[str, dict] = {}  # camera id -> the essential state last saved
        self.saved_reference: dict[str, str] = {}  # camera id -> the reference view last saved or restored
        self.saved_at: dict[str, int] = {}  # camera id -> its frame count when its state was last saved

    def snapshot(self, result: BatchResult) -> dict[str, dict]:
        """The states to save now: a camera's events (a reference learned, an alert) at once, its windows
        every ``checkpoint`` frames."""
        out = {}
        for camera_id, essential in result.essential.items():
            stale = result.frames_seen[camera_id] - self.saved_at.get(camera_id, 0) >= self.checkpoint
            if essential != self.saved_essential.get(camera_id) or stale:
                out[camera_id] = result.states[camera_id]  # written out only now
        return out

    def save(self, result: BatchResult, snapshots: dict[str, dict], states: dict) -> None:
        """Write ``snapshots`` (from :meth:`snapshot`) to the tables, and into ``states``, the chunk's."""
        for camera_id, state in snapshots.items():
            key = camera_id.encode()
            slim, view = split_reference(state)
            if view is not None and self.saved_reference.get(camera_id) != view:
                self.references[key] = state_bytes(view)  # before the state that refers to it
                self.saved_reference[camera_id] = view
            self.health[key] = state_bytes(slim)
            states[camera_id] = state
            self.saved_essential[camera_id] = result.essential[camera_id]
            self.saved_at[camera_id] = result.frames_seen[camera_id]

    def restore(self, keys: Iterable[bytes | None]) -> dict[str, dict | None]:
        """The saved states of these cameras (message keys), whole again with their reference views."""
        out = {}
        for key in {k for k in keys if k}:
            # Table keys are bytes: what the changelog gives back on recovery is bytes too.
            camera_id = key.decode("utf-8", "replace")
            state = state_value(self.health.get(key), camera_id, "state")
            view = state_value(self.references.get(key), camera_id, "reference view")
            if state and state.get(REFERENCE_ELSEWHERE) and view is None:
                log.warning(
                    "camera %s: its reference view was not found; the moved-camera check learns a new one", camera_id
                )
            if view is not None:
                self.saved_reference[camera_id] = view
            out[camera_id] = join_reference(state, view)
        return out

    def forget(self) -> None:
        """After a rebalance: cameras may come back later with states written by another worker."""
        self.saved_essential.clear()
        self.saved_reference.clear()
        self.saved_at.clear()
