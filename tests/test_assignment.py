"""Which models a camera's frames go to: the levels, the share sampled, promotion and roll back. Pure."""

from __future__ import annotations

import doctest

import pytest

from core import assignment
from core.assignment import AssignmentError, Route, effective, promote, rollback, sampled, scopes
from core.contracts import ModelAssignment


def test_the_docstring_examples_run():
    result = doctest.testmod(assignment)
    assert result.attempted > 0 and result.failed == 0


def test_each_field_comes_from_the_most_specific_level_that_sets_it():
    fleet = ModelAssignment(champion="a", challenger="b", share=0.2)
    site = ModelAssignment(challenger="c")
    camera = ModelAssignment(champion="d")
    assert effective("x", []) == Route("x")
    assert effective("x", [fleet, site, camera]) == Route("d", "c", 0.2)
    assert effective("x", [None, None, camera]) == Route("d")
    assert not Route("a", "a", 0.5).shadowed and not Route("a", "b", 0.0).shadowed and Route("a", "b", 0.1).shadowed
    assert scopes("cam-1", "") == ["fleet", "cam-1"]


def test_the_frames_sampled_are_the_same_wherever_and_whenever_and_nested_as_the_share_grows():
    ids = [f"cam-{c}:s:{i}" for c in range(3) for i in range(2000)]
    small = {f for f in ids if sampled(f, 0.05)}
    large = {f for f in ids if sampled(f, 0.2)}
    assert small <= large  # raising the share adds frames, never swaps them
    assert abs(len(small) / len(ids) - 0.05) < 0.01 and abs(len(large) / len(ids) - 0.2) < 0.02
    assert small == {f for f in ids if sampled(f, 0.05)}


def test_promotion_and_roll_back_swap_the_two_and_refuse_what_cannot_be_done():
    route = Route("nanodet-m@1.0.0", "yolov4-tiny@1.0.0", 0.1)
    promoted = promote(route)
    assert (promoted.champion, promoted.challenger, promoted.share, promoted.previous) == (
        "yolov4-tiny@1.0.0", "nanodet-m@1.0.0", 0.1, "nanodet-m@1.0.0"
    )  # fmt: skip
    back = rollback(promoted)
    assert (back.champion, back.challenger, back.previous) == ("nanodet-m@1.0.0", "yolov4-tiny@1.0.0", None)
    with pytest.raises(AssignmentError, match="no challenger"):
        promote(Route("nanodet-m@1.0.0"))
    with pytest.raises(AssignmentError, match="nothing to roll back"):
        rollback(back)
    with pytest.raises(AssignmentError, match="nothing to roll back"):
        rollback(None)


def test_a_share_outside_0_to_1_is_no_assignment():
    from pydantic import ValidationError

    for share in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValidationError):
            ModelAssignment(challenger="b", share=share)
