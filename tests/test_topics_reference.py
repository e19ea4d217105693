"""The topics reference (docs/topics.md) is the topology and the contracts, written out."""

from __future__ import annotations

from cli import reference
from core.settings import Settings
from core.topology import topology


def test_the_committed_topics_page_is_the_generated_one():
    page = reference.TOPICS_PAGE.read_text()
    assert reference.render(page, reference.TOPICS_PAGE.name) == page, (
        "docs/topics.md is stale: run `python -m cli.reference` and commit the page"
    )


def test_every_topic_and_every_field_of_its_contract_is_on_the_page():
    page = reference.TOPICS_PAGE.read_text()
    for t in topology(Settings(_env_file=None)):
        assert f"| `{t.name}` | {t.label} |" in page
        if t.contract is not None:
            for name in t.contract.model_fields:
                assert f"| `{name}` |" in page, (t.name, name)
