"""Each module's docstring examples run as written."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = {
    "base": [],
    "camera": [],
    "range": [],
    "signals": [],
    "image": [],
    "windows": [],
    "changepoint": ["river"],
    "outlier": ["river", "sklearn"],
    "prediction": [],
    "motion": [],
    "faults": [],
    "upstream": [],
    "embedding": ["sklearn"],
    "concept": ["river"],
    "performance": [],
    "policy": [],
    "streams.process": [],
    "streams.devbroker": [],
    "streams.camera_states": [],
    "streams.devbroker.peers": [],
    "streams.faust_fixes": [],
    "streams.devbroker.purge": [],
}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_docstring_examples_pass(name):
    module = importlib.import_module(name if "." in name else f"streams.monitor.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
