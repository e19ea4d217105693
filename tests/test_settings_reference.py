"""The configuration reference (docs/configuration.md) is the settings' declarations, written out."""

from __future__ import annotations

import pytest

from api.settings import ApiSettings
from cli import reference
from core.settings import Settings
from store.settings import StoreSettings


def test_the_committed_reference_is_the_generated_one():
    page = reference.PAGE.read_text()
    assert reference.render(page) == page, (
        "docs/configuration.md is stale: run `python -m cli.reference` (or `.venv/bin/python -m cli.reference`) "
        "and commit the page"
    )


@pytest.mark.parametrize("cls", [Settings, ApiSettings, StoreSettings])
def test_every_setting_says_what_it_does(cls):
    assert [name for name, field in cls.model_fields.items() if not field.description] == []


def test_every_variable_is_in_the_reference_once():
    page = reference.PAGE.read_text()
    for cls in (Settings, ApiSettings, StoreSettings):
        for name in cls.model_fields:
            assert page.count(f"| `CVOPS_{name.upper()}` |") == 1, name


def test_a_stale_page_is_found_and_rewritten(tmp_path, monkeypatch):
    page = tmp_path / "configuration.md"
    page.write_text(f"# Configuration\n\n{reference.BEGIN}\n| `CVOPS_GONE` | old |\n{reference.END}\n\nprose\n")
    monkeypatch.setattr(reference, "PAGE", page)
    topics = tmp_path / "topics.md"
    topics.write_text(reference.TOPICS_PAGE.read_text())
    monkeypatch.setattr(reference, "TOPICS_PAGE", topics)
    assert reference.main(["--check"]) == 1
    assert reference.main([]) == 0 and reference.main(["--check"]) == 0
    text = page.read_text()
    assert "CVOPS_GONE" not in text and "| `CVOPS_RULE_WARMUP_FRAMES` |" in text and text.endswith("\nprose\n")
    with pytest.raises(ValueError, match="lines to write the reference between"):
        reference.render("# no markers\n")
