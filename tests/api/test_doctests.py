"""The examples in the API modules' docstrings run."""

from __future__ import annotations

import doctest

import pytest

import api.cameras
import api.guard
import api.live
import api.sql
import api.tokens


@pytest.mark.parametrize("module", [api.tokens, api.sql, api.cameras, api.guard, api.live], ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0
