"""Property-based requests generated from the OpenAPI schema (schemathesis): whatever the input, no 5xx.

schemathesis is a dev dependency (``schemathesis==4.32.5``). Driven through hypothesis
directly rather than schemathesis' pytest plugin, whose lazy-fixture loader does not run under pytest 9. The
live alert stream never ends, so it is left to ``test_alerts``.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.api.conftest import auth

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),  # inside schemathesis
]

SKIP = {"GET /api/v1/alerts/stream"}


def test_no_generated_input_gets_a_server_error(api_config, app):
    base_url = f"http://127.0.0.1:{api_config[0].api_port}"
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.label in SKIP:
            continue

        @given(case=operation.as_strategy())
        # Derandomized: CI runs the same examples every time; raise max_examples locally to explore more.
        @settings(
            max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True
        )
        def no_server_error(case):
            case.call_and_validate(base_url=base_url, headers=auth(), checks=[not_a_server_error], timeout=30)

        no_server_error()
        checked.append(operation.label)
    assert "POST /api/v1/sql" in checked
    assert "GET /api/v1/cameras/{camera_id}/series" in checked
