"""The monitor's settings, declared once (core.monitoring): the environment's fields, the overrides' contract,
MonitorSettings and the fleet config's tables are made from the declarations, and none of what a user sees
(variables, override fields, defaults, bounds, what applies at once) moved when they were."""

from __future__ import annotations

import dataclasses
import doctest

import pytest
from pydantic import ValidationError

import core.fleetconfig
import core.monitoring
import core.settings
from core.contracts import MonitorOverrides
from core.fleetconfig import FIELDS, LIVE, base_settings, effective
from core.monitoring import MONITOR_SETTINGS, MonitorSettings
from core.settings import Settings
from streams.monitor.policy import DEFAULT_HOLDOFF_S

# (override field, JSON type, bounds) as the API's schema showed them before the declarations existed.
OVERRIDES = [
    ("rule_warmup_frames", "integer", {"maximum": 100000, "minimum": 5}),
    ("rule_tolerance", "number", {"exclusiveMinimum": 0, "maximum": 100}),
    ("rule_consecutive", "integer", {"maximum": 10000, "minimum": 1}),
    ("expected_fps", "number", {"exclusiveMinimum": 0, "maximum": 1000}),
    ("no_frames_s", "number", {"exclusiveMinimum": 0, "maximum": 86400}),
    ("motion_every", "integer", {"maximum": 100000, "minimum": 0}),
    ("motion_threshold_deg", "number", {"exclusiveMinimum": 0, "maximum": 180}),
    ("motion_threshold_px", "number", {"exclusiveMinimum": 0, "maximum": 10000}),
    ("ks_reference", "integer", {"maximum": 100000, "minimum": 0}),
    ("ks_window", "integer", {"maximum": 100000, "minimum": 10}),
    ("ks_alpha", "number", {"exclusiveMaximum": 1, "exclusiveMinimum": 0}),
    ("prediction_reference", "integer", {"maximum": 1000000, "minimum": 0}),
    ("prediction_window", "integer", {"maximum": 1000000, "minimum": 10}),
    ("prediction_alpha", "number", {"exclusiveMaximum": 1, "exclusiveMinimum": 0}),
    ("prediction_reference_frames", "integer", {"maximum": 1000000, "minimum": 1}),
    ("prediction_window_frames", "integer", {"maximum": 1000000, "minimum": 1}),
    ("performance_reference", "integer", {"maximum": 1000000, "minimum": 0}),
    ("performance_window", "integer", {"maximum": 1000000, "minimum": 10}),
    ("performance_drop", "number", {"exclusiveMaximum": 1, "exclusiveMinimum": 0}),
    ("embedding_reference", "integer", {"maximum": 100000, "minimum": 0}),
    ("concept_reference", "integer", {"maximum": 1000000, "minimum": 0}),
]
DEFAULTS = {
    "warmup": 150, "tolerance": 1.0, "consecutive": 10, "expected_fps": 5.0, "no_frames_s": 10.0, "motion_every": 10,
    "motion_threshold_deg": 2.0, "motion_threshold_px": 8.0, "ks_reference": 600, "ks_window": 100, "ks_every": 10,
    "ks_alpha": 0.001, "prediction_reference": 500, "prediction_window": 200, "prediction_alpha": 0.001,
    "prediction_reference_frames": 1000, "prediction_window_frames": 300, "performance_reference": 1000,
    "performance_window": 300, "performance_drop": 0.1, "embedding_reference": 50,
    "concept_reference": 100, "alert_holdoff_s": 300.0,
}  # fmt: skip
# Settings field (CVOPS_ + upper case) -> MonitorSettings field
VARIABLES = {
    "rule_warmup_frames": "warmup", "rule_tolerance": "tolerance", "rule_consecutive": "consecutive",
    "monitor_expected_fps": "expected_fps", "monitor_no_frames_s": "no_frames_s",
    "monitor_motion_every": "motion_every", "monitor_ks_reference": "ks_reference", "monitor_ks_window": "ks_window",
    "monitor_ks_alpha": "ks_alpha", "monitor_prediction_reference": "prediction_reference",
    "monitor_prediction_window": "prediction_window",
    "monitor_prediction_reference_frames": "prediction_reference_frames",
    "monitor_prediction_window_frames": "prediction_window_frames",
    "monitor_performance_reference": "performance_reference", "monitor_performance_window": "performance_window",
    "monitor_performance_drop": "performance_drop", "monitor_embedding_reference": "embedding_reference",
    "monitor_concept_reference": "concept_reference", "alert_holdoff_s": "alert_holdoff_s",
}  # fmt: skip


def test_the_overrides_schema_is_the_one_users_saw():
    schema = MonitorOverrides.model_json_schema()
    assert list(schema["properties"]) == [name for name, _, _ in OVERRIDES]  # the order the API docs show
    assert schema["properties"] == {
        name: {
            "anyOf": [{**bounds, "type": kind}, {"type": "null"}],
            "default": None,
            "title": name.replace("_", " ").title(),
        }
        for name, kind, bounds in OVERRIDES
    }
    assert schema["additionalProperties"] is False and schema["title"] == "MonitorOverrides"
    assert schema["description"].startswith("Monitor settings for the fleet or one camera; a field left out keeps")
    assert MonitorOverrides.model_config["frozen"] and MonitorOverrides.__module__ == "core.contracts"


def test_variables_defaults_and_live_settings_are_unchanged(monkeypatch):
    assert dataclasses.asdict(MonitorSettings()) == DEFAULTS
    assert {name: Settings.model_fields[name].default for name in VARIABLES} == {
        name: DEFAULTS[field] for name, field in VARIABLES.items()
    }
    assert list(FIELDS) == [name for name, _, _ in OVERRIDES] and FIELDS["rule_warmup_frames"] == "warmup"
    assert set(FIELDS.values()) == set(DEFAULTS) - {"ks_every", "alert_holdoff_s"}
    live = {"consecutive", "expected_fps", "no_frames_s", "motion_threshold_deg", "motion_threshold_px", "ks_alpha",
            "prediction_alpha", "performance_drop"}  # fmt: skip
    assert live == LIVE
    assert DEFAULTS["alert_holdoff_s"] == DEFAULT_HOLDOFF_S  # the policy's own default agrees

    for name in VARIABLES:
        monkeypatch.setenv(f"CVOPS_{name.upper()}", "17")
    fractions = {"ks_alpha": 0.01, "performance_drop": 0.2}  # within (0, 1)
    for field, value in fractions.items():
        monkeypatch.setenv(f"CVOPS_MONITOR_{field.upper()}", str(value))
    monkeypatch.setenv("CVOPS_EMBEDDING_MODEL", "some-model")
    base = base_settings(Settings(_env_file=None))
    assert all(getattr(base, field) == fractions.get(field, 17) for field in VARIABLES.values())
    monkeypatch.setenv("CVOPS_EMBEDDING_MODEL", "")
    assert base_settings(Settings(_env_file=None)).embedding_reference == 0  # no model, no embeddings to watch


@pytest.mark.parametrize(
    ("variable", "value"),
    [("RULE_WARMUP_FRAMES", "4"), ("MONITOR_KS_ALPHA", "1"), ("MONITOR_KS_WINDOW", "9"), ("ALERT_HOLDOFF_S", "86401")],
)
def test_a_variable_out_of_bounds_is_refused_with_its_name(monkeypatch, variable, value):
    monkeypatch.setenv(f"CVOPS_{variable}", value)
    with pytest.raises(ValidationError, match=variable.lower()):
        Settings(_env_file=None)


def test_overrides_are_capped_where_the_environment_is_not():
    assert Settings(_env_file=None, rule_warmup_frames=200_000).rule_warmup_frames == 200_000
    with pytest.raises(ValidationError, match="rule_warmup_frames"):
        MonitorOverrides(rule_warmup_frames=200_000)
    with pytest.raises(ValidationError, match="no_such_setting"):
        MonitorOverrides(no_such_setting=1)
    s = effective(base_settings(Settings(_env_file=None)), MonitorOverrides(motion_threshold_px=3, ks_window=50))
    assert (s.motion_threshold_px, s.ks_window, s.warmup) == (3.0, 50, Settings(_env_file=None).rule_warmup_frames)


def test_each_declaration_is_whole():
    names = [s.name for s in MONITOR_SETTINGS]
    assert len(set(names)) == len(names)
    for s in MONITOR_SETTINGS:
        assert s.description and s.type in (int, float) and isinstance(s.default, s.type)
        assert not s.live or s.override, f"{s.name}: live says when an override applies; it has none"
        if s.env:
            Settings(_env_file=None, **{s.env: s.default})  # the default is within its own bounds
        if s.override:
            MonitorOverrides(**{s.override: s.default})


@pytest.mark.parametrize("module", [core.monitoring, core.fleetconfig, core.settings])
def test_docstring_examples_pass(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
