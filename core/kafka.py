"""Kafka connection security from settings: TLS and SASL for every client cvops makes.

All cvops clients (aiokafka producers, consumers and admin clients, and the faust worker) take their
options from here, so one set of ``CVOPS_KAFKA_*`` variables secures them all. Secrets come only from
the environment (or the settings file); the password is a SecretStr and never logged.
"""

from __future__ import annotations

import ssl

import faust

from core.settings import Settings


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    ctx = ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)
    if settings.kafka_ssl_certfile:
        ctx.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile or None)
    return ctx


def client_options(settings: Settings) -> dict:
    """Keyword arguments for any aiokafka client: bootstrap servers and security."""
    opts: dict = {"bootstrap_servers": settings.kafka_bootstrap, "security_protocol": settings.kafka_security_protocol}
    context = ssl_context(settings)
    if context is not None:
        opts["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL"):
        if not settings.kafka_sasl_username:
            raise ValueError("CVOPS_KAFKA_SASL_USERNAME is required with a SASL security protocol")
        opts.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password.get_secret_value(),
        )
    return opts


def faust_credentials(settings: Settings):
    """faust's ``broker_credentials`` for the same settings (None for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context(settings))
    if not settings.kafka_sasl_username:
        raise ValueError("CVOPS_KAFKA_SASL_USERNAME is required with a SASL security protocol")
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password.get_secret_value(),
        ssl_context=ssl_context(settings),
        mechanism=settings.kafka_sasl_mechanism,
    )
