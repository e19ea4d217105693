"""Analysts' SQL: a token is required, only reads run, refusals are 400 with a reason, bad bodies 422."""

from __future__ import annotations

import pytest

from tests.api.conftest import auth, seed
from tests.store.records import metrics

pytestmark = pytest.mark.integration


def frames_of(client, camera: str) -> int:
    r = client.post(
        "/api/v1/sql",
        json={
            "sql": "SELECT count() AS n FROM frame_metrics WHERE camera_id = {c:String}",
            "parameters": {"c": camera},
        },
        headers=auth(),
    )
    assert r.status_code == 200, r.text
    return r.json()["rows"][0][0]


def test_a_select_returns_columns_types_and_rows(client, store, now, camera):
    seed(store, [metrics(camera, i, now - 10 + i) for i in range(3)])
    r = client.post(
        "/api/v1/sql",
        json={
            "sql": "SELECT camera_id, count() AS frames, max(captured_at) AS last, 0/0 AS nothing "
            "FROM frame_metrics WHERE camera_id = {camera:String} GROUP BY camera_id",
            "parameters": {"camera": camera},
        },
        headers=auth(),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["columns"] == ["camera_id", "frames", "last", "nothing"]
    assert body["types"][:2] == ["LowCardinality(String)", "UInt64"]
    assert body["rows"][0][:2] == [camera, 3]
    assert body["rows"][0][2].endswith("+00:00")
    assert body["rows"][0][3] is None  # NaN: JSON has no such number


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("INSERT INTO frame_metrics (frame_id, camera_id) VALUES ('x', '{camera}')", "not_a_select"),
        ("ALTER TABLE frame_metrics DELETE WHERE camera_id = '{camera}'", "not_a_select"),
        ("TRUNCATE TABLE frame_metrics", "not_a_select"),
        ("SELECT 1; DROP TABLE frame_metrics", "multiple_statements"),
        ("SELECT 1 SETTINGS readonly = 0", "forbidden_clause"),
        ("SELECT * FROM system.query_log", "forbidden_table"),
        ("SELECT * FROM file('/etc/passwd', 'LineAsString')", "forbidden_table"),
        ("SELECT nonsense(", "engine_syntax_error"),
    ],
)
def test_writes_and_escapes_are_refused_and_change_nothing(client, store, now, camera, sql, reason):
    seed(store, [metrics(camera, 0, now - 1)])
    r = client.post("/api/v1/sql", json={"sql": sql.format(camera=camera)}, headers=auth())
    assert r.status_code == 400, r.text
    assert r.json()["detail"]["reason"] == reason
    assert r.json()["detail"]["detail"]
    assert frames_of(client, camera) == 1


def test_too_many_rows_is_refused(client):
    r = client.post("/api/v1/sql", json={"sql": "SELECT number FROM numbers(20000)"}, headers=auth())
    assert r.status_code == 400
    assert r.json()["detail"]["reason"] == "engine_too_many_rows_or_bytes"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"sql": ""},
        {"sql": 42},
        {"sql": "SELECT 1", "parameters": ["not", "a", "mapping"]},
        {"sql": "SELECT 1", "parameters": {"bad name": 1}},
        {"sql": "SELECT 1", "parameters": {"p": {"nested": "object"}}},
    ],
)
def test_malformed_bodies_are_422(client, body):
    r = client.post("/api/v1/sql", json=body, headers=auth())
    assert r.status_code == 422
    assert r.json()["detail"]


def test_a_body_that_is_not_json_is_422(client):
    r = client.post("/api/v1/sql", content=b"{not json", headers={**auth(), "Content-Type": "application/json"})
    assert r.status_code == 422


def test_a_missing_parameter_is_refused_not_a_500(client):
    r = client.post("/api/v1/sql", json={"sql": "SELECT {x:UInt8} AS x"}, headers=auth())
    assert r.status_code == 400
    assert r.json()["detail"]["reason"].startswith("engine_")
