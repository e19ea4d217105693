"""The frames that prove an alert: thumbnails the worker kept of a camera's last frames when it raised the
alert (and, for a moved camera, the reference view it compared them with), with the model's boxes drawn in;
and edge cases, frames worth a human look, listed and exported as a labelling set (COCO JSON and images).

Every route here reads the store, so every one is a plain ``def``: FastAPI runs it in its thread pool and
the event loop (health probes, live streams) never waits on a query or on drawing. An export streams: the
ZIP is written as it is sent, :data:`EXPORT_BATCH` thumbnails at a time in memory.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import zipfile
from collections.abc import Iterable, Iterator
from typing import Annotated, Literal

import cv2
import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from api.auth import TOKEN_RESPONSES, read_access
from api.dependencies import StoreDep
from api.instants import END_OF_TIME_MS, Instant, unix_ms
from store import Store

router = APIRouter(tags=["alerts"], dependencies=[Depends(read_access)], responses=TOKEN_RESPONSES)

AlertId = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$")]
FrameId = Annotated[str, Path(min_length=1, max_length=260, pattern=r"^[A-Za-z0-9_.:-]+$")]


class EvidenceFrame(BaseModel):
    alert_id: str
    camera_id: str
    frame_id: str
    role: str
    captured_at: float
    width: int
    height: int
    source_width: int
    source_height: int
    url: str


@router.get("/api/v1/alerts/{alert_id}/evidence", response_model=list[EvidenceFrame])
def alert_evidence(alert_id: AlertId, store: StoreDep) -> list[EvidenceFrame]:
    """The alert's evidence thumbnails, oldest first, then the reference view (if any). Empty when the worker
    held none (an alert raised before evidence existed, or ``CVOPS_EVIDENCE_WIDTH=0``)."""
    rows = store.query_dicts(
        """
        SELECT alert_id, camera_id, frame_id, role, toUnixTimestamp64Milli(captured_at) / 1000 AS captured_at,
               width, height, source_width, source_height
        FROM evidence_frames FINAL
        WHERE alert_id = {alert:String}
        ORDER BY role = 'reference', captured_at, frame_id
        """,
        {"alert": alert_id},
    )
    return [EvidenceFrame(**r, url=f"/api/v1/evidence/{alert_id}/{r['frame_id']}.jpg") for r in rows]


Box = tuple[str, float, float, float, float, float]  # label, score, x1, y1, x2, y2 in the source frame's pixels


BOXES_SQL = """
SELECT frame_id, detections.label, detections.score, detections.x1, detections.y1, detections.x2, detections.y2
FROM predictions FINAL
WHERE camera_id IN {cameras:Array(String)} AND frame_id IN {frames:Array(String)}"""


def boxes_of(store: Store, frames: Iterable[tuple[str, str]]) -> dict[str, list[Box]]:
    """The model's detections of each (camera id, frame id), by frame id; a frame with no prediction stored is
    left out. The camera is the sort key's first column and the frame id has a skip index (migration 8), so
    a look-up reads a granule or so, however large ``predictions`` grows."""
    frames = list(frames)
    if not frames:
        return {}
    rows = store.query(BOXES_SQL, {"cameras": sorted({c for c, _ in frames}), "frames": [f for _, f in frames]})
    return {frame_id: list(zip(*columns, strict=True)) for frame_id, *columns in rows}


def draw(jpeg: bytes, boxes, scale_x: float, scale_y: float) -> bytes:
    """``jpeg`` with each (label, score, x1, y1, x2, y2) box, given in the source frame's pixels, drawn in."""
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return jpeg
    for label, score, x1, y1, x2, y2 in boxes:
        p1 = (round(x1 * scale_x), round(y1 * scale_y))
        p2 = (round(x2 * scale_x), round(y2 * scale_y))
        cv2.rectangle(image, p1, p2, (0, 200, 255), 1)
        cv2.putText(image, f"{label} {score:.2f}", (p1[0], max(8, p1[1] - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.3,
                    (0, 200, 255), 1, cv2.LINE_AA)  # fmt: skip
    ok, out = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return out.tobytes() if ok else jpeg


@router.get(
    "/api/v1/evidence/{alert_id}/{frame_id}.jpg",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "no such evidence frame"}},
)
def evidence_image(
    alert_id: AlertId,
    frame_id: FrameId,
    store: StoreDep,
    boxes: Annotated[bool, Query(description="draw the model's detections of this frame")] = True,
) -> Response:
    """One evidence thumbnail as JPEG, the detections drawn in unless ``boxes=false``."""
    rows = store.query(
        """
        SELECT base64Encode(image), width, height, source_width, source_height, role, camera_id
        FROM evidence_frames FINAL WHERE alert_id = {alert:String} AND frame_id = {frame:String} LIMIT 1
        """,
        {"alert": alert_id, "frame": frame_id},
    )
    if not rows:
        raise HTTPException(status_code=404, detail=f"alert {alert_id!r} has no evidence frame {frame_id!r}")
    image_b64, width, height, source_width, source_height, role, camera_id = rows[0]
    jpeg = base64.b64decode(image_b64)
    if boxes and role != "reference":
        found = boxes_of(store, [(camera_id, frame_id)]).get(frame_id)
        if found:
            jpeg = draw(jpeg, found, width / source_width, height / source_height)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


VIEW_ROLES = "latest: what the camera sees (every CVOPS_VIEW_EVERY_S); reference: its moved-camera reference view"


@router.get(
    "/api/v1/cameras/{camera_id}/view.jpg",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "no view of this camera stored"}},
    tags=["cameras"],
)
def camera_view(
    camera_id: Annotated[str, Path(min_length=1, max_length=200)],
    store: StoreDep,
    role: Annotated[Literal["latest", "reference"], Query(description=VIEW_ROLES)] = "latest",
    boxes: Annotated[bool, Query(description="draw the model's detections of the latest view's frame")] = True,
) -> Response:
    """The camera's newest view of ``role`` as JPEG (the fleet's tiles, and the camera view beside the
    reference view). The fleet and camera routes give its capture time (``view_at``): add it to the URL
    as ``at`` to let the browser cache each one."""
    rows = store.query(
        """
        SELECT base64Encode(image), frame_id, width, height, source_width, source_height
        FROM camera_views FINAL WHERE camera_id = {camera:String} AND role = {role:String}
        ORDER BY captured_at DESC LIMIT 1
        """,
        {"camera": camera_id, "role": role},
    )
    if not rows:
        raise HTTPException(status_code=404, detail=f"no {role} view of camera {camera_id!r} stored")
    image_b64, frame_id, width, height, source_width, source_height = rows[0]
    jpeg = base64.b64decode(image_b64)
    if boxes and role == "latest":
        found = boxes_of(store, [(camera_id, frame_id)]).get(frame_id)
        if found:
            jpeg = draw(jpeg, found, width / source_width, height / source_height)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


class EdgeCase(BaseModel):
    edge_case_id: str
    camera_id: str
    frame_id: str
    reason: str
    score: float
    captured_at: float
    width: int
    height: int
    url: str


def query_edge_cases(
    store: Store,
    camera_id: str | None,
    reason: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    limit: int,
    ids: list[str] | None = None,
) -> list[dict]:
    """The edge cases that match, newest first, without their images (:func:`edge_case_images`)."""
    return store.query_dicts(
        """
        SELECT alert_id AS edge_case_id, camera_id, frame_id, reason, score,
               toUnixTimestamp64Milli(captured_at) / 1000 AS captured_at, width, height, source_width,
               source_height
        FROM evidence_frames FINAL
        WHERE role = 'edge_case'
          AND ({camera:Nullable(String)} IS NULL OR camera_id = {camera:Nullable(String)})
          AND ({reason:Nullable(String)} IS NULL OR reason = {reason:Nullable(String)})
          AND captured_at >= fromUnixTimestamp64Milli({since:Int64})
          AND captured_at < fromUnixTimestamp64Milli({until:Int64})
          AND (empty({ids:Array(String)}) OR has({ids:Array(String)}, alert_id))
        ORDER BY captured_at DESC, frame_id
        LIMIT {limit:UInt32}
        """,
        {
            "camera": camera_id,
            "reason": reason,
            "since": unix_ms(since) if since else 0,
            "until": unix_ms(until) if until else END_OF_TIME_MS,
            "limit": limit,
            "ids": ids or [],
        },
    )


def edge_case_images(store: Store, rows: list[dict]) -> dict[tuple[str, str], bytes]:
    """The JPEG of each edge case of ``rows`` (from :func:`query_edge_cases`), by (edge case id, frame id);
    one gone since it was listed (its retention ended) is left out."""
    found = store.query(
        """
        SELECT alert_id, frame_id, base64Encode(image)
        FROM evidence_frames FINAL
        WHERE camera_id IN {cameras:Array(String)} AND alert_id IN {alerts:Array(String)} AND role = 'edge_case'
        """,
        {"cameras": sorted({r["camera_id"] for r in rows}), "alerts": [r["edge_case_id"] for r in rows]},
    )
    return {(alert_id, frame_id): base64.b64decode(b64) for alert_id, frame_id, b64 in found}


Reason = Literal["outlier", "low_confidence"]
CameraFilter = Annotated[str | None, Query(min_length=1, max_length=200)]


@router.get("/api/v1/edge-cases", response_model=list[EdgeCase])
def edge_cases(
    store: StoreDep,
    camera_id: CameraFilter = None,
    reason: Reason | None = None,
    since: Instant | None = None,
    until: Instant | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[EdgeCase]:
    """Frames worth a human look, newest first: embeddings the camera's autoencoder finds outlying
    (``outlier``), detections the model is unsure of (``low_confidence``). At most
    ``CVOPS_EDGE_CASES_PER_HOUR`` per camera and hour are kept."""
    rows = query_edge_cases(store, camera_id, reason, since, until, limit)
    return [EdgeCase(**r, url=f"/api/v1/evidence/{r['edge_case_id']}/{r['frame_id']}.jpg") for r in rows]


EXPORT_BATCH = 100  # thumbnails (a few KB each) read, and held, at a time while an export streams


@router.get(
    "/api/v1/edge-cases/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}}},
)
def export_edge_cases(
    store: StoreDep,
    camera_id: CameraFilter = None,
    reason: Reason | None = None,
    since: Instant | None = None,
    until: Instant | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    edge_case_id: Annotated[
        list[Annotated[str, Query(max_length=200)]] | None,
        Query(max_length=5000, description="export only these (repeat the parameter); default: all that match"),
    ] = None,
) -> StreamingResponse:
    """The edge cases as a labelling set: a ZIP of ``images/*.jpg`` and ``annotations.json`` in COCO format,
    the model's detections as pre-annotations (boxes in the thumbnails' pixels, ``score`` kept) for people to
    correct. Streamed: the ZIP is sent as it is written."""
    rows = query_edge_cases(store, camera_id, reason, since, until, limit, ids=edge_case_id)
    return StreamingResponse(
        coco_zip(store, rows),
        media_type="application/zip",
        headers={"Content-Disposition": 'attachment; filename="cvops-edge-cases.zip"'},
    )


class _Taken(io.RawIOBase):
    """A write-only stream whose bytes are taken away as they come. ``zipfile`` writes to it as to any
    unseekable stream (each member's sizes then follow its data), and the response sends what is taken."""

    def __init__(self):
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


def coco_zip(store: Store, rows: list[dict], batch: int = EXPORT_BATCH) -> Iterator[bytes]:
    """The labelling set of ``rows`` (from :func:`query_edge_cases`) as the bytes of a ZIP, in pieces, reading
    ``batch`` thumbnails and their boxes at a time. A generator: Starlette runs each step in its thread pool.

    Python's ``zipfile`` writing to an unseekable stream rather than a streaming-ZIP package: it already
    streams (stored JPEGs need neither compression nor ZIP64 here), and the packages that do (stream-zip,
    zipstream-ng) bring a cryptography library or an LGPL licence for what is a write buffer here."""
    out = _Taken()
    categories: dict[str, int] = {}
    images, annotations = [], []
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:  # JPEGs do not compress further
        for start in range(0, len(rows), batch):
            part = rows[start : start + batch]
            jpegs = edge_case_images(store, part)
            boxes = boxes_of(store, [(r["camera_id"], r["frame_id"]) for r in part])
            for image_id, r in enumerate(part, start + 1):
                jpeg = jpegs.get((r["edge_case_id"], r["frame_id"]))
                if jpeg is None:
                    continue
                name = f"images/{image_id:06d}.jpg"
                z.writestr(name, jpeg)
                images.append(
                    {"id": image_id, "file_name": name, "width": r["width"], "height": r["height"],
                     "cvops": {k: r[k] for k in ("frame_id", "camera_id", "reason", "score", "captured_at")}}
                )  # fmt: skip
                sx, sy = r["width"] / r["source_width"], r["height"] / r["source_height"]
                for label, score, x1, y1, x2, y2 in boxes.get(r["frame_id"], []):
                    category = categories.setdefault(label, len(categories) + 1)
                    w, h = (x2 - x1) * sx, (y2 - y1) * sy
                    annotations.append(
                        {"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                         "bbox": [round(x1 * sx, 1), round(y1 * sy, 1), round(w, 1), round(h, 1)],
                         "area": round(w * h, 1), "iscrowd": 0, "score": round(float(score), 4)}
                    )  # fmt: skip
            yield out.take()
        coco = {
            "info": {"description": "cvops edge cases", "date_created": dt.datetime.now(dt.UTC).isoformat()},
            "images": images,
            "annotations": annotations,
            "categories": [{"id": i, "name": n} for n, i in sorted(categories.items(), key=lambda kv: kv[1])],
        }
        z.writestr("annotations.json", json.dumps(coco, indent=1))
    yield out.take()
