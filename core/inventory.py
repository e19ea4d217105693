"""The inventory: each camera's site, tags, notes and gateway, from the compacted ``cameras`` topic.

A gateway declares what it was started with (source ``gateway``) and an operator sets the rest through the API
(source ``operator``): :class:`Inventory` keeps both records of each camera and their merge, the operator's
fields winning, and the scopes (``site:<name>``, ``tag:<key>=<value>``) each camera belongs to, with their
populations. Pure state, no Kafka: the API (:mod:`api.fleet`), the worker and the incidents processor each
feed it the records they read (:class:`core.compacted.CompactedReader`). It lives in the core because both
the API and the worker keep one, and the API depends on the core only.
"""

from __future__ import annotations

from collections.abc import Iterable

from core.contracts import CameraInfo


class Inventory:
    """Each camera's site, tags and gateway, from the ``cameras`` topic's records (``CameraInfo``): what a
    gateway declared, with what an operator set over it. Gives the incidents correlator
    (``streams.incidents.Correlator``) its ``scopes``, ``gateway`` and ``population``.

    >>> inv = Inventory()
    >>> inv.apply("gateway:c1", CameraInfo(camera_id="c1", source="gateway", site="north", gateway="g1"))
    >>> inv.apply("operator:c1", CameraInfo(camera_id="c1", source="operator", tags={"zone": "dock"}))
    >>> inv.scopes("c1"), inv.gateway("c1"), inv.population("site:north")
    (['site:north', 'tag:zone=dock'], 'g1', 1)
    """

    def __init__(self) -> None:
        self.records: dict[str, CameraInfo] = {}  # "<source>:<camera>" -> record
        self.cameras: dict[str, dict] = {}  # camera -> effective {"site", "tags", "notes", "gateway"}
        self._population: dict[str, int] = {}

    def apply(self, key: str, info: CameraInfo | None) -> None:
        """A record of the ``cameras`` topic; None is a tombstone (the key's record is removed)."""
        if info is None:
            old = self.records.pop(key, None)
            camera = old.camera_id if old else key.partition(":")[2]
        else:
            self.records[f"{info.source}:{info.camera_id}"] = info
            camera = info.camera_id
        merged: dict = {"site": None, "tags": {}, "notes": None, "gateway": None}
        for source in ("gateway", "operator"):  # the operator's fields win
            if (r := self.records.get(f"{source}:{camera}")) is not None:
                merged |= {k: getattr(r, k) for k in ("site", "notes", "gateway") if getattr(r, k) is not None}
                merged["tags"] = {**merged["tags"], **r.tags}
        # The populations move by this camera's change alone: a record costs the same with 5 cameras or 5,000.
        for scope in self.scopes(camera):
            self._population[scope] -= 1
            if not self._population[scope]:
                del self._population[scope]
        self.cameras[camera] = merged
        for scope in self.scopes(camera):
            self._population[scope] = self._population.get(scope, 0) + 1

    def scopes(self, camera_id: str) -> list[str]:
        info = self.cameras.get(camera_id)
        if info is None:
            return []
        site = [f"site:{info['site']}"] if info["site"] else []
        return site + [f"tag:{k}={v}" for k, v in sorted(info["tags"].items())]

    def gateway(self, camera_id: str) -> str:
        return (self.cameras.get(camera_id) or {}).get("gateway") or ""

    def site_of(self, cameras: Iterable[str]) -> str:
        """The site every one of ``cameras`` is at, or '' when they are at several, or one has none.

        >>> inv = Inventory()
        >>> for cam, site in (("c1", "north"), ("c2", "north"), ("c3", "south")):
        ...     inv.apply(f"gateway:{cam}", CameraInfo(camera_id=cam, source="gateway", site=site))
        >>> inv.site_of(["c1", "c2"]), inv.site_of(["c1", "c3"]), inv.site_of(["c1", "c9"])
        ('north', '', '')
        """
        sites = {(self.cameras.get(c) or {}).get("site") for c in cameras}
        return (sites.pop() or "") if len(sites) == 1 else ""

    def population(self, scope: str) -> int:
        return self._population.get(scope, 0)
