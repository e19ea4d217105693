"""The inventory (each camera's site, tags and gateway, and the scopes' populations): pure, no Kafka."""

from __future__ import annotations

import doctest
import random

from core import inventory
from core.contracts import CameraInfo
from core.inventory import Inventory


def test_the_docstring_examples_run():
    result = doctest.testmod(inventory)
    assert result.attempted > 0 and result.failed == 0


def test_the_inventorys_populations_follow_each_change_of_a_camera():
    inv, rng = Inventory(), random.Random(3)
    for i in range(300):
        cam, source = f"c{rng.randrange(60)}", rng.choice(("gateway", "operator"))
        if rng.random() < 0.2:
            inv.apply(f"{source}:{cam}", None)
        else:
            site, tags = rng.choice((None, "north", "south")), rng.choice(({}, {"side": "east"}, {"zone": "dock"}))
            inv.apply(f"{source}:{cam}", CameraInfo(camera_id=cam, source=source, site=site, tags=tags))
        counted: dict[str, int] = {}
        for c in inv.cameras:
            for scope in inv.scopes(c):
                counted[scope] = counted.get(scope, 0) + 1
        assert {s: inv.population(s) for s in counted} == counted and inv._population == counted, i
