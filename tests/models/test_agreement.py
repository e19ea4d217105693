"""Agreement of one detector with another (boxes matched at IoU 0.5, per class): pure logic, exact cases."""

from __future__ import annotations

import inspect
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import models.agreement
from models.agreement import Agreement, agreement, box_iou, combine, totals
from models.detection import Detection


def det(label: str, box: tuple[float, float, float, float], score: float = 0.5) -> Detection:
    return Detection(label, 0, score, box)


def test_box_iou_of_known_pairs():
    overlaps = box_iou([(0, 0, 10, 10)], [(0, 0, 10, 10), (5, 0, 15, 10), (20, 20, 30, 30), (0, 0, 0, 0)])
    np.testing.assert_allclose(overlaps, [[1.0, 50 / 150, 0.0, 0.0]])
    assert box_iou([], [(0, 0, 1, 1)]).shape == (0, 1)


def test_the_same_boxes_agree_fully_and_the_score_delta_is_signed():
    champion = [det("person", (0, 0, 10, 20), 0.8), det("car", (50, 50, 90, 80), 0.6)]
    challenger = [det("car", (51, 50, 90, 80), 0.9), det("person", (0, 0, 10, 20), 0.5)]
    per_class = agreement(champion, challenger)
    assert per_class == {
        "car": Agreement(1, 1, 1, pytest.approx(0.3)),
        "person": Agreement(1, 1, 1, pytest.approx(-0.3)),
    }
    assert (per_class["car"].precision, per_class["car"].recall, per_class["car"].f1) == (1.0, 1.0, 1.0)


def test_a_box_agrees_only_with_the_same_class_overlapping_by_half():
    champion = [det("person", (0, 0, 10, 10))]
    assert agreement(champion, [det("dog", (0, 0, 10, 10))])["person"] == Agreement(1, 0, 0, 0.0)
    assert agreement(champion, [det("person", (5, 0, 15, 10))])["person"].matched == 0  # IoU 1/3
    assert agreement(champion, [det("person", (0, 0, 10, 20))])["person"].matched == 1  # IoU exactly 0.5
    assert agreement(champion, [det("person", (0, 0, 10, 21))], iou=0.5)["person"].matched == 0


def test_each_box_matches_once_and_the_best_overlap_goes_first():
    champion = [det("car", (0, 0, 10, 10)), det("car", (4, 0, 14, 10))]
    # the challenger's box overlaps the second champion box better (IoU 0.82) than the first (0.54)
    challenger = [det("car", (3, 0, 13, 10)), det("car", (0, 0, 10, 10)), det("car", (0, 0, 10, 10))]
    a = agreement(champion, challenger)["car"]
    assert (a.reference, a.candidate, a.matched) == (2, 3, 2)
    assert (a.precision, a.recall, a.f1) == (2 / 3, 1.0, 0.8)


def test_frames_add_up_per_class_and_in_total():
    frames = [
        agreement([det("person", (0, 0, 10, 10))], [det("person", (0, 0, 10, 10))]),
        agreement([det("person", (0, 0, 10, 10)), det("car", (0, 0, 5, 5))], []),
        agreement([], [det("car", (0, 0, 5, 5))]),
    ]
    per_class = combine(frames)
    assert per_class["person"] == Agreement(2, 1, 1, 0.0) and per_class["car"] == Agreement(1, 1, 0, 0.0)
    total = totals(frames)
    assert (total.reference, total.candidate, total.matched) == (3, 2, 1)
    assert total.f1 == pytest.approx(2 / 5)
    assert Agreement().f1 == Agreement().precision == Agreement().recall == 1.0  # nothing to disagree on


boxes = st.tuples(*[st.integers(0, 20)] * 4).map(
    lambda b: (min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]) + 1, max(b[1], b[3]) + 1)
)
detections = st.lists(st.builds(det, st.sampled_from(["person", "car"]), boxes), max_size=6)


@given(detections, detections)
def test_swapping_the_models_swaps_precision_and_recall(reference, candidate):
    forward, backward = totals([agreement(reference, candidate)]), totals([agreement(candidate, reference)])
    assert forward.matched == backward.matched <= min(len(reference), len(candidate))
    assert (forward.precision, forward.recall, forward.f1) == (backward.recall, backward.precision, backward.f1)


def test_the_example_in_the_docstring_runs(capsys):
    example = re.search(r"::\n\n((?:    .*\n|\n)+)", models.agreement.__doc__).group(1)
    exec(compile(inspect.cleandoc(example), models.agreement.__file__, "exec"), {})
    assert capsys.readouterr().out.split() == ["1.0", "0.0", "0.6666666666666666"]
