"""Who may call what: a bearer token for SQL (and whatever changes state), for reads when configured so."""

from __future__ import annotations

import pytest

from api.settings import ApiSettings
from api.tokens import hash_token, verify
from tests.api.conftest import TOKEN, auth

SELECT = {"sql": "SELECT 1 AS one"}


def test_tokens_are_checked_against_hashes_only():
    hashes = [hash_token("a"), hash_token("b")]
    assert verify("b", hashes)
    assert verify("a", [h.upper() for h in hashes])
    assert not verify("c", hashes)
    assert not verify("", [])


def test_a_plain_token_in_the_settings_is_refused_without_being_repeated():
    with pytest.raises(ValueError) as err:
        ApiSettings(_env_file=None, api_tokens=f"{hash_token('a')},my-secret-token").token_hashes  # noqa: B018
    assert "my-secret-token" not in str(err.value)
    assert "hashlib.sha256(b'TOKEN').hexdigest()" in str(err.value)


def test_settings_read_tokens_and_read_access_from_the_environment(monkeypatch):
    monkeypatch.setenv("CVOPS_API_TOKENS", f" {hash_token('a')} , {hash_token('b').upper()}")
    monkeypatch.setenv("CVOPS_API_READ_PUBLIC", "false")
    settings = ApiSettings(_env_file=None)
    assert settings.token_hashes == [hash_token("a"), hash_token("b")]
    assert settings.api_read_public is False


@pytest.mark.integration
@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "missing API token: send 'Authorization: Bearer TOKEN'"),
        (auth("wrong"), "invalid API token"),
        ({"Authorization": f"Basic {TOKEN}"}, "missing API token: send 'Authorization: Bearer TOKEN'"),
        ({"Authorization": "Bearer"}, "missing API token: send 'Authorization: Bearer TOKEN'"),
    ],
)
def test_sql_without_a_valid_token_is_401(client, headers, detail):
    r = client.post("/api/v1/sql", json=SELECT, headers=headers)
    assert r.status_code == 401
    assert r.json() == {"detail": detail}
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.integration
def test_sql_with_the_token_runs(client):
    r = client.post("/api/v1/sql", json=SELECT, headers=auth())
    assert r.status_code == 200
    assert r.json()["rows"] == [[1]]


@pytest.mark.integration
def test_with_no_token_configured_sql_is_503_saying_how_to_set_one(client, configure):
    configure(api_tokens="")
    r = client.post("/api/v1/sql", json=SELECT, headers=auth())
    assert r.status_code == 503
    assert "CVOPS_API_TOKENS" in r.json()["detail"]
    assert """python -c "import hashlib;print(hashlib.sha256(b'TOKEN').hexdigest())\"""" in r.json()["detail"]


@pytest.mark.integration
@pytest.mark.parametrize("path", ["/api/v1/cameras", "/api/v1/alerts", "/api/v1/workers", "/api/v1/models"])
def test_reads_need_a_token_when_not_public(client, configure, path):
    assert client.get(path).status_code == 200
    configure(api_read_public=False)
    assert client.get(path).status_code == 401
    assert client.get(path, headers=auth("wrong")).status_code == 401
    assert client.get(path, headers=auth()).status_code == 200


@pytest.mark.integration
def test_health_never_needs_a_token(client, configure):
    configure(api_read_public=False)
    assert client.get("/health/live").status_code == 200
    assert client.get("/health/ready").json()["checks"]["store"] == "ok"
