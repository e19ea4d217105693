"""The inhibition table of docs/alerts.md is the alert policy's rules, written out."""

from __future__ import annotations

from cli import reference
from streams.monitor.policy import INHIBITS, RULES


def test_the_committed_alerts_page_is_the_generated_one():
    page = reference.ALERTS_PAGE.read_text()
    assert reference.render(page, reference.ALERTS_PAGE.name) == page, (
        "docs/alerts.md is stale: run `python -m cli.reference` and commit the page"
    )


def test_every_cause_is_a_row_with_what_it_explains_and_why():
    table = reference.inhibition_table()
    assert list(INHIBITS) == list(RULES)
    for cause, (explained, why) in RULES.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| `{cause}` |"))
        assert all(f"`{k}`" in row for k in explained) and why and row.endswith(f"| {why} |"), row
