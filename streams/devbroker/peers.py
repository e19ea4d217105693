"""Removing dead workers from the consumer group, which the embedded development broker never does.

Applies to: noida-db 0.2.3 (the embedded broker, ``cvops broker``), and only under the ``embedded`` broker
profile (:mod:`streams.devbroker`). Every worker publishes a :class:`~core.contracts.WorkerStatus` on the
workers topic every 10 s, and :class:`~core.directory.WorkerDirectory` follows that topic.

A Kafka broker removes a member that stops heartbeating after the session timeout, and the survivors take over
its partitions. A broker that never does (the embedded development broker keeps a member killed with SIGKILL
forever: docs/development-broker.md) leaves that member's partitions unread: its cameras go dark.
:class:`StaleMembers` finds members that no live worker speaks for (no status naming them for
``CVOPS_PEER_TIMEOUT_S``), and every worker removes those from its group with LeaveGroup v3 (KIP-345, what
``kafka-consumer-groups --delete-members`` sends). The group rebalances and the survivors take the partitions,
with the cameras' state from the changelog. Against a Kafka broker the dead member is already gone after its
session timeout, so this never acts there unless a worker is alive in the group but has stopped reporting for
that long (its event loop blocked), and such a worker rejoins by itself once it runs again.

aiokafka 0.14 speaks DescribeGroups up to v3 and LeaveGroup up to v1, neither of which carries the static
member id (``group.instance.id``), hence the two request versions written out below from the Kafka protocol.

>>> from core.contracts import WorkerStatus
>>> watch = StaleMembers(timeout_s=60)
>>> members = [GroupMember("m-1", "worker-a"), GroupMember("m-2", "worker-b")]
>>> def status(worker_id, sent_at):
...     return WorkerStatus(worker_id=worker_id, model_name="m", model_version="1", providers=[],
...                         batch_max_size=8, partitions=[], frames_per_s=0, mean_batch=0, dead_letters=0,
...                         alerts=0, sent_at=sent_at)
>>> watch.update(members, [status("worker-a", 100), status("worker-b", 100)], now=100, me="m-1")
[]
>>> watch.update(members, [status("worker-a", 190), status("worker-b", 100)], now=190, me="m-1")
[GroupMember(member_id='m-2', instance_id='worker-b')]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import NamedTuple

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Bytes, Int16, Int32, Schema, String

from core.contracts import WorkerStatus
from core.directory import WorkerDirectory
from core.settings import Settings
from core.supervise import admin_rounds

log = logging.getLogger(__name__)


class GroupMember(NamedTuple):
    member_id: str
    instance_id: str | None  # group.instance.id of a static member (CVOPS_WORKER_ID), None for a dynamic one


class StaleMembers:
    """Members of a consumer group that no live worker speaks for.

    A member is vouched for by a status sent within ``timeout_s`` whose worker id is the member's static id
    or whose ``member_id`` is the member's. A member is stale once it has been seen in the group for
    ``timeout_s`` without being vouched for; a new member gets that long to send its first status.
    """

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self.first_seen: dict[str, float] = {}

    def update(
        self, members: Iterable[GroupMember], statuses: Iterable[WorkerStatus], now: float, me: str
    ) -> list[GroupMember]:
        """The members to remove now. ``me`` is the caller's own member id, never removed."""
        members = list(members)
        fresh = [s for s in statuses if now - s.sent_at < self.timeout_s]
        worker_ids = {s.worker_id for s in fresh}
        member_ids = {s.member_id for s in fresh if s.member_id}
        present = {m.member_id for m in members}
        self.first_seen = {k: v for k, v in self.first_seen.items() if k in present}
        stale = []
        for m in members:
            seen = self.first_seen.setdefault(m.member_id, now)
            vouched = m.member_id in member_ids or (m.instance_id is not None and m.instance_id in worker_ids)
            if m.member_id != me and not vouched and now - seen >= self.timeout_s:
                stale.append(m)
        return stale


async def group_members(admin: AIOKafkaAdminClient, group: str) -> list[GroupMember]:
    """The members of ``group`` as its coordinator sees them."""
    node = await admin.find_coordinator(group)
    response = await admin._send_request(_DescribeGroups([group]), node)
    out = []
    for error_code, _group, _state, _ptype, _protocol, members, _ops in response.groups:
        if error_code:
            raise RuntimeError(f"DescribeGroups {group!r} failed with Kafka error code {error_code}")
        out += [GroupMember(m[0], m[1]) for m in members]
    return out


async def remove_members(admin: AIOKafkaAdminClient, group: str, members: list[GroupMember]) -> dict[str, int]:
    """Remove ``members`` from ``group`` (LeaveGroup v3); the Kafka error code per member id, 0 = removed."""
    node = await admin.find_coordinator(group)
    wanted = [(m.member_id, m.instance_id) for m in members]
    response = await admin._send_request(_RemoveMembers(group, wanted), node)
    by_member = {m[0]: m[2] for m in response.members}
    return {m.member_id: by_member.get(m.member_id, response.error_code) for m in members}


class PeerWatch:
    """A worker's loop: every ``timeout_s / 4``, remove the group members no live worker speaks for."""

    def __init__(self, settings: Settings, directory: WorkerDirectory, my_member_id):
        self.settings = settings
        self.directory = directory
        self.my_member_id = my_member_id  # a callable: the member id changes with every rejoin
        self.stale = StaleMembers(settings.peer_timeout_s)

    async def run(self) -> None:
        await admin_rounds(self.settings, self.settings.peer_timeout_s / 4, self.check, "peer watch")

    async def check(self, admin: AIOKafkaAdminClient) -> list[GroupMember]:
        me = self.my_member_id()
        if not me:  # not in the group (yet): nothing to judge from
            return []
        members = await group_members(admin, self.settings.app_id)
        stale = self.stale.update(members, self.directory.latest.values(), time.time(), me)
        if stale:
            results = await remove_members(admin, self.settings.app_id, stale)
            for m in stale:
                log.warning(
                    "removed group member %s (worker %s): no status from it for %.0f s, so it is presumed dead "
                    "and its partitions go to the live workers (Kafka error code %d)",
                    m.member_id,
                    m.instance_id or "with dynamic membership",
                    self.settings.peer_timeout_s,
                    results[m.member_id],
                )
        return stale


# DescribeGroups v4 and LeaveGroup v3: the first versions with group.instance.id, not flexible (no tagged fields).


class _DescribeGroupsResponseV4(Response):
    API_KEY = 15
    API_VERSION = 4
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "groups",
            Array(
                ("error_code", Int16),
                ("group", String("utf-8")),
                ("state", String("utf-8")),
                ("protocol_type", String("utf-8")),
                ("protocol", String("utf-8")),
                (
                    "members",
                    Array(
                        ("member_id", String("utf-8")),
                        ("group_instance_id", String("utf-8")),  # nullable: the same encoding, length -1
                        ("client_id", String("utf-8")),
                        ("client_host", String("utf-8")),
                        ("member_metadata", Bytes),
                        ("member_assignment", Bytes),
                    ),
                ),
                ("authorized_operations", Int32),
            ),
        ),
    )


class _DescribeGroupsRequestV4(RequestStruct):
    API_KEY = 15
    API_VERSION = 4
    RESPONSE_TYPE = _DescribeGroupsResponseV4
    SCHEMA = Schema(("groups", Array(String("utf-8"))), ("include_authorized_operations", Boolean))


class _DescribeGroups(Request[_DescribeGroupsRequestV4]):
    API_KEY = 15

    def __init__(self, groups: list[str]):
        self._groups = groups

    def build(self, request_struct_class: type[_DescribeGroupsRequestV4]) -> _DescribeGroupsRequestV4:
        return request_struct_class(self._groups, False)


class _LeaveGroupResponseV3(Response):
    API_KEY = 13
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        (
            "members",
            Array(("member_id", String("utf-8")), ("group_instance_id", String("utf-8")), ("error_code", Int16)),
        ),
    )


class _LeaveGroupRequestV3(RequestStruct):
    API_KEY = 13
    API_VERSION = 3
    RESPONSE_TYPE = _LeaveGroupResponseV3
    SCHEMA = Schema(
        ("group", String("utf-8")),
        ("members", Array(("member_id", String("utf-8")), ("group_instance_id", String("utf-8")))),
    )


class _RemoveMembers(Request[_LeaveGroupRequestV3]):
    API_KEY = 13

    def __init__(self, group: str, members: list[tuple[str, str | None]]):
        self._group = group
        self._members = members

    def build(self, request_struct_class: type[_LeaveGroupRequestV3]) -> _LeaveGroupRequestV3:
        return request_struct_class(self._group, self._members)
