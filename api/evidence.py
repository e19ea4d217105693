"""The frames that prove an alert: thumbnails the worker kept of a camera's last frames when it raised the
alert (and, for a moved camera, the reference view it compared them with), with the model's boxes drawn in.
"""

from __future__ import annotations

import base64
from typing import Annotated

import cv2
import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel

from api.auth import TOKEN_RESPONSES, read_access
from api.dependencies import StoreDep
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
async def alert_evidence(alert_id: AlertId, store: StoreDep) -> list[EvidenceFrame]:
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


def _boxes(store: Store, frame_id: str) -> list[tuple[str, float, float, float, float, float]]:
    rows = store.query(
        """
        SELECT detections.label, detections.score, detections.x1, detections.y1, detections.x2, detections.y2
        FROM predictions FINAL WHERE frame_id = {frame:String} LIMIT 1
        """,
        {"frame": frame_id},
    )
    return list(zip(*rows[0], strict=True)) if rows else []


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
async def evidence_image(
    alert_id: AlertId,
    frame_id: FrameId,
    store: StoreDep,
    boxes: Annotated[bool, Query(description="draw the model's detections of this frame")] = True,
) -> Response:
    """One evidence thumbnail as JPEG, the detections drawn in unless ``boxes=false``."""
    rows = store.query(
        """
        SELECT base64Encode(image), width, height, source_width, source_height, role
        FROM evidence_frames FINAL WHERE alert_id = {alert:String} AND frame_id = {frame:String} LIMIT 1
        """,
        {"alert": alert_id, "frame": frame_id},
    )
    if not rows:
        raise HTTPException(status_code=404, detail=f"alert {alert_id!r} has no evidence frame {frame_id!r}")
    image_b64, width, height, source_width, source_height, role = rows[0]
    jpeg = base64.b64decode(image_b64)
    if boxes and role == "evidence":
        found = _boxes(store, frame_id)
        if found:
            jpeg = draw(jpeg, found, width / source_width, height / source_height)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})
