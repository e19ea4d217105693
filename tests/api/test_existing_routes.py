"""The routes the demo and the pipeline tests use keep answering, and errors stay JSON."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_health_counts_workers_and_models_answer(client):
    assert client.get("/health/live").json() == {"status": "ok", "checks": {}}
    ready = client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["broker"] == "ok"
    counts = client.get("/api/v1/counts")
    assert counts.status_code == 200
    assert {"frames_published", "metric_rows", "alert_rows"} <= set(counts.json())
    assert client.get("/api/v1/workers").json() == []
    assert "nanodet-m" in {m["name"] for m in client.get("/api/v1/models").json()}


def test_unknown_routes_and_methods_answer_json(client):
    r = client.get("/api/v1/nothing-here")
    assert r.status_code == 404
    assert r.json() == {"detail": "Not Found"}
    r = client.delete("/api/v1/alerts")
    assert r.status_code == 405
    assert r.json()["detail"]


def test_the_openapi_schema_lists_every_route(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/api/v1/sql",
        "/api/v1/cameras",
        "/api/v1/cameras/{camera_id}",
        "/api/v1/cameras/{camera_id}/series",
        "/api/v1/alerts",
        "/api/v1/alerts/stream",
        "/api/v1/counts",
    } <= set(paths)
