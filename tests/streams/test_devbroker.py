"""The broker profile: one setting switches the development broker's workarounds on or off, and ``auto`` tells
the embedded broker from its answer (the one ``./dev test`` starts is noida-db)."""

from __future__ import annotations

import asyncio

from core.settings import Settings
from streams import devbroker


class App:
    """Records what a worker would register on faust."""

    def __init__(self):
        self.tasks, self.assigned = [], []
        self.on_partitions_assigned = self

    def connect(self, fun):
        self.assigned.append(fun)
        return fun

    def task(self, fun):
        self.tasks.append(fun.__name__)
        return fun


def attach(settings: Settings) -> tuple[bool, App]:
    app = App()
    attached = devbroker.attach_to_worker(
        app, settings, busy=lambda: False, kafka_consumer=object, member_id=str, frames_partitions=list
    )
    return attached, app


def test_under_the_kafka_profile_no_workaround_is_attached():
    attached, app = attach(Settings(_env_file=None, broker_profile="kafka"))
    assert not attached and app.tasks == [] and app.assigned == []


def test_under_the_embedded_profile_each_workaround_is_attached_unless_its_own_setting_is_off():
    attached, app = attach(Settings(_env_file=None, broker_profile="embedded"))
    assert attached and app.tasks == ["follow_peers", "purge_frames"] and len(app.assigned) == 1
    off = Settings(_env_file=None, broker_profile="embedded", peer_timeout_s=0, frames_purge_every_s=0)
    assert attach(off)[1].tasks == []


def test_auto_finds_the_embedded_broker_by_its_answer(settings: Settings):
    assert devbroker.is_embedded_cluster(asyncio.run(devbroker.ask_cluster_id(settings)))
    assert devbroker.profile(settings.model_copy(update={"broker_profile": "auto"})) == "embedded"


def test_auto_without_an_answer_goes_by_the_address():
    unreachable = Settings(_env_file=None, kafka_bootstrap="127.0.0.1:1")  # nothing listens on port 1
    assert devbroker.profile(unreachable) == "embedded"
    assert devbroker.guess_from_bootstrap("broker-1.example:9092") == "kafka"
