"""What cvops does only for the embedded development broker, switched on by one setting.

The embedded broker (noida-db 0.2.3, started by ``cvops broker``, ``cvops demo`` and ``./dev test``: see
:mod:`streams.localbroker`) speaks the Kafka protocol but differs from Kafka in ways that cost CPU or leave
cameras unread. Each workaround lives in a module of this package, with the reason and the broker version it
was measured on (docs/development-broker.md):

- :mod:`~streams.devbroker.fetch_pacing`: an empty fetch is answered at once, not held (Kafka's long poll);
- :mod:`~streams.devbroker.purge`: the broker's CPU grows with the bytes it holds, so processed frames go;
- :mod:`~streams.devbroker.peers`: a member killed without leaving stays in its group for ever.

``CVOPS_BROKER_PROFILE`` says which broker this is: ``embedded`` turns them on, ``kafka`` leaves them off, and
``auto`` (the default) asks the broker. noida-db answers Metadata with a fixed cluster id that no Kafka
cluster can have (Kafka's are 22-character UUIDs), so that id is the fingerprint; a broker that cannot be
reached is taken as embedded when every bootstrap address is the loopback (the development setup) and as
Kafka otherwise. The answer is worked out once per process and logged.

The faust patches (:mod:`streams.faust_fixes`) are not here: they fix faust's bugs, on any broker.

>>> is_embedded_cluster("MkU3OEVBNTctOEUyRi00"), is_embedded_cluster("4L6g3nShT-eMCtK--X86sw")
(True, False)
>>> guess_from_bootstrap("127.0.0.1:9092"), guess_from_bootstrap("kafka-0.kafka:9092,127.0.0.1:9092")
('embedded', 'kafka')
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
from collections.abc import Callable

from core.settings import Settings

log = logging.getLogger(__name__)
EMBEDDED, KAFKA, AUTO = "embedded", "kafka", "auto"
WRITTEN_FOR = "noida-db 0.2.3"  # the broker version every workaround here was measured on
EMBEDDED_CLUSTER_ID = "MkU3OEVBNTctOEUyRi00"  # what noida-db 0.2.3 answers in Metadata, every run
_resolved: dict[tuple[str, str], str] = {}  # (bootstrap, setting) -> profile, once per process
_lock = threading.Lock()


def is_embedded_cluster(cluster_id: str | None) -> bool:
    return cluster_id == EMBEDDED_CLUSTER_ID


def guess_from_bootstrap(bootstrap: str) -> str:
    """The profile when the broker cannot be asked: embedded when every address is the loopback."""
    hosts = [h.strip().rsplit(":", 1)[0].strip("[]") for h in bootstrap.split(",") if h.strip()]
    return EMBEDDED if hosts and all(_loopback(h) for h in hosts) else KAFKA


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def ask_cluster_id(settings: Settings, timeout_s: float = 5.0) -> str | None:
    """The cluster id the broker reports in Metadata (v2 and later); None if it cannot be asked."""
    from aiokafka import AIOKafkaClient
    from aiokafka.protocol.metadata import MetadataRequest

    from core.kafka import client_options

    client = AIOKafkaClient(**client_options(settings), request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), timeout_s)
        node = next(iter(client.cluster.brokers())).nodeId
        answer = await asyncio.wait_for(client.send(node, MetadataRequest([])), timeout_s)
        return getattr(answer, "cluster_id", None)
    except Exception as exc:  # not reachable (yet), refused, timed out: the caller guesses
        log.debug("could not ask the broker for its cluster id (%s: %s)", type(exc).__name__, exc)
        return None
    finally:
        await client.close()


def profile(settings: Settings) -> str:
    """``embedded`` or ``kafka``: ``CVOPS_BROKER_PROFILE``, or what the broker's answer says under ``auto``."""
    if settings.broker_profile != AUTO:
        return settings.broker_profile
    key = (settings.kafka_bootstrap, settings.broker_profile)
    with _lock:
        if key not in _resolved:
            _resolved[key] = _detect(settings)
        return _resolved[key]


def _detect(settings: Settings) -> str:
    answer: list[str | None] = []
    # Its own thread and event loop: callers may be inside a running loop, or before any.
    thread = threading.Thread(target=lambda: answer.append(asyncio.run(ask_cluster_id(settings))), daemon=True)
    thread.start()
    thread.join(15.0)
    cluster_id = answer[0] if answer else None
    if cluster_id is not None:
        found, why = (EMBEDDED if is_embedded_cluster(cluster_id) else KAFKA), f"cluster id {cluster_id}"
    else:
        found, why = guess_from_bootstrap(settings.kafka_bootstrap), "broker not reachable; by its address"
    log.info("broker profile %s (CVOPS_BROKER_PROFILE=auto: %s)", found, why)
    return found


def install(settings: Settings) -> str:
    """This process's profile; on the embedded broker, empty fetches of every consumer are paced."""
    from streams.devbroker import fetch_pacing

    found = profile(settings)
    if found == EMBEDDED:
        fetch_pacing.install(settings.empty_fetch_pause_ms)
    return found


def attach_to_worker(
    app,
    settings: Settings,
    *,
    busy: Callable[[], bool],
    kafka_consumer: Callable[[], object],
    member_id: Callable[[], str],
    frames_partitions: Callable[[], list[int]],
) -> bool:
    """The embedded broker's workarounds in a worker (faust ``app``); nothing under the ``kafka`` profile.

    ``busy()`` says the worker holds enough frames (its frames consumer fetches no more until it does not),
    ``kafka_consumer()`` is faust's aiokafka consumer, ``member_id()`` this worker's member id in its group,
    ``frames_partitions()`` the frames partitions it holds. True when they were attached.
    """
    if profile(settings) != EMBEDDED:
        return False
    from core.directory import WorkerDirectory
    from core.supervise import keep_running
    from streams.devbroker import fetch_pacing
    from streams.devbroker.peers import PeerWatch
    from streams.devbroker.purge import FramesPurge

    @app.on_partitions_assigned.connect
    async def hold_fetches(sender, assigned, **kwargs):
        # Frames in hand enough for two batches keep the lanes busy until more arrive: fetch more (frames and
        # feedback, one consumer) only then, or after a second at most.
        try:
            fetch_pacing.hold(kafka_consumer(), busy, most_ms=1000)
        except Exception as exc:  # faust changed: fetches are not held back, which costs CPU, not frames
            log.warning("the consumer's fetches are not held back while busy (%s: %s)", type(exc).__name__, exc)

    if settings.peer_timeout_s:

        @app.task
        async def follow_peers():
            peers = WorkerDirectory(settings, started=fetch_pacing.pace_slow_topic)
            watch = PeerWatch(settings, peers, member_id)
            await asyncio.gather(keep_running(peers.run, "worker directory"), keep_running(watch.run, "peer watch"))

    if settings.frames_purge_every_s:

        @app.task
        async def purge_frames():
            await keep_running(FramesPurge(settings, frames_partitions).run, "frames purge")

    log.info("embedded broker (%s): fetch pacing, peer watch and frames purge on", WRITTEN_FOR)
    return True
