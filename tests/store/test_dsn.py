"""A store DSN is printed without its secrets."""

from __future__ import annotations

import doctest

import pytest

import store.dsn
from store.dsn import masked


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("https://cvops:s3cret@db.example:8443/cvops", "https://cvops:***@db.example:8443/cvops"),
        ("http://u:p%40ss%3Aword@127.0.0.1:8123/db", "http://u:***@127.0.0.1:8123/db"),
        ("http://u:p@ss@127.0.0.1:8123/db", "http://u:***@127.0.0.1:8123/db"),  # an unescaped @ in the password
        ("http://u:@127.0.0.1/db", "http://u:***@127.0.0.1/db"),
        ("http://127.0.0.1:8123/db?user=u&password=s3cret", "http://127.0.0.1:8123/db?user=u&password=***"),
        ("http://127.0.0.1:8123/db?access_token=s3cret", "http://127.0.0.1:8123/db?access_token=***"),
        ("u:s3cret@127.0.0.1:8123", "***"),  # no scheme: not read as a URL, masked whole
        ("http://[::1:s3cret", "***"),  # not a URL at all
        ("http://u@127.0.0.1/db", "http://u@127.0.0.1/db"),
        ("chdb://.cvops/store", "chdb://.cvops/store"),
        ("chdb:///var/lib/cvops/store?database=cvops", "chdb:///var/lib/cvops/store?database=cvops"),
    ],
)
def test_a_dsn_is_shown_without_its_secrets(dsn, shown):
    assert masked(dsn) == shown
    assert "s3cret" not in masked(dsn)


def test_docstring_examples_run():
    result = doctest.testmod(store.dsn)
    assert result.attempted > 0 and result.failed == 0
