"""The store's row check is a pure function: bad values are named, never coerced."""

from __future__ import annotations

import doctest
import json

import pytest

import store.cookbook
import store.readonly
import store.validate
from core.contracts import ContractError, Detection, encode_record
from store.validate import Limits, check, problems
from tests.store.records import T0, alert, metrics, prediction


def codes(record, now: float = T0) -> list[str]:
    return [code for code, _ in problems(record, now)]


@pytest.mark.parametrize("module", [store.validate, store.readonly, store.cookbook])
def test_docstring_examples_run(module):
    assert doctest.testmod(module).failed == 0


def test_valid_records_have_no_problems():
    assert problems(metrics(), T0) == []
    assert problems(prediction(labels=("person", "car")), T0) == []
    assert problems(alert(), T0) == []


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_rejected(value):
    assert codes(metrics(captured_at=value)) == ["non_finite"]
    assert codes(alert(value=value)) == ["non_finite"]
    box = Detection(label="car", class_id=2, score=0.9, box=(value, 0, 10, 10))
    assert "non_finite" in codes(prediction(detections=[box]))


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"detections": 70_000}, "out_of_range"),  # does not fit UInt16
        ({"width": 2**32, "aspect_ratio": 2**32 / 360}, "out_of_range"),
        ({"inference_ms": 5 * 3_600_000.0}, "out_of_range"),
        ({"captured_at": T0 + 3600}, "bad_timestamp"),
        ({"captured_at": T0 - 5 * 365 * 86400}, "bad_timestamp"),
        ({"aspect_ratio": 1.0}, "inconsistent"),
        ({"frame_id": ""}, "missing_identity"),
    ],
)
def test_absurd_metrics_are_rejected_with_the_reason(changes, code):
    assert code in codes(metrics(**changes))


def test_prediction_sizes_and_boxes_must_make_sense():
    assert "out_of_range" in codes(prediction(width=-5))
    outside = Detection(label="car", class_id=2, score=0.9, box=(600, 10, 900, 30))
    assert "out_of_range" in codes(prediction(detections=[outside]))
    inverted = Detection(label="car", class_id=2, score=0.9, box=(50, 10, 20, 30))
    assert "out_of_range" in codes(prediction(detections=[inverted]))


def test_limits_are_configurable():
    late = metrics(captured_at=T0 + 3600, processed_at=T0 + 3600)
    assert problems(late, T0, Limits(max_future_s=7200)) == []


def test_check_raises_a_contract_error_with_the_first_code_and_all_details():
    with pytest.raises(ContractError) as err:
        check(metrics(detections=70_000, captured_at=T0 + 3600), T0)
    assert err.value.reason == "out_of_range"
    assert "detections=70000" in err.value.detail and "future" in err.value.detail


def test_nan_in_json_reaches_the_check_and_is_not_coerced():
    raw = json.loads(encode_record(alert()))
    raw["value"] = float("nan")
    value = json.dumps(raw).encode()  # Python writes NaN, as some producers do
    assert b"NaN" in value
    from core.contracts import Alert, ContractError, decode_record

    assert codes(Alert.model_validate_json(value)) == ["non_finite"]  # the writer's parse lets it through
    with pytest.raises(ContractError) as err:  # the contract's path refuses it with the same code
        decode_record(Alert, value)
    assert err.value.reason == "non_finite"


def test_a_nan_first_in_a_batch_does_not_hide_a_bad_timestamp_after_it():
    """min() and max() of a column that starts with NaN are NaN, which no comparison catches: the column is
    then scanned, so the record after it, far in the past, is still a suspect (found by the fast-path fuzz)."""
    batch = [alert(n=0, raised_at=float("nan")), alert(n=1, raised_at=0.0)]
    assert problems(batch[1], T0) != []
    assert store.validate.suspects(type(batch[0]), lambda name: [getattr(r, name) for r in batch], T0) == {0, 1}
