import ssl

import faust
import pytest

from core.kafka import client_options, faust_credentials
from core.settings import Settings


def settings(**kw) -> Settings:
    return Settings(_env_file=None, kafka_bootstrap="k1:9093,k2:9093", **kw)


def test_plaintext_by_default():
    opts = client_options(settings())
    assert opts == {"bootstrap_servers": "k1:9093,k2:9093", "security_protocol": "PLAINTEXT"}
    assert faust_credentials(settings()) is None


def test_sasl_over_tls_carries_mechanism_credentials_and_a_tls_context():
    s = settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="cvops",
        kafka_sasl_password="s3cret",
    )
    opts = client_options(s)
    assert opts["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (opts["sasl_plain_username"], opts["sasl_plain_password"]) == ("cvops", "s3cret")
    assert isinstance(opts["ssl_context"], ssl.SSLContext)
    creds = faust_credentials(s)
    assert isinstance(creds, faust.SASLCredentials) and creds.username == "cvops"
    assert "s3cret" not in repr(s)  # the password is a secret in logs and reprs


def test_sasl_without_a_username_is_a_clear_error():
    with pytest.raises(ValueError, match="CVOPS_KAFKA_SASL_USERNAME"):
        client_options(settings(kafka_security_protocol="SASL_PLAINTEXT"))


def test_tls_only_gives_a_tls_context_and_faust_ssl_credentials():
    s = settings(kafka_security_protocol="SSL")
    assert isinstance(client_options(s)["ssl_context"], ssl.SSLContext)
    assert isinstance(faust_credentials(s), faust.SSLCredentials)


def test_unknown_protocol_is_refused():
    with pytest.raises(ValueError):
        settings(kafka_security_protocol="SASL_TLS")
