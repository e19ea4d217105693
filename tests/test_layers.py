"""The direction of imports between the product's packages: no import runs upward.

The core (contracts, settings, topology, Kafka options, the worker directory, the compacted-topic reader, the
inventory and the silences) imports none of the others; the store and the models depend on the core alone; the
API and the worker (``streams``) on the core, the store and the models, never on each other; the command line
sits on top and wires them together. Read from the source with ``ast``, so that an import inside a function (a
lazy one) counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> the product packages it may import (besides itself)
MAY_IMPORT: dict[str, set[str]] = {
    "core": set(),
    "store": {"core"},
    "models": {"core"},
    "api": {"core", "store", "models"},
    "streams": {"core", "store", "models"},
    "cli": {"core", "store", "models", "api", "streams"},
}

# Imports that run upward today, as (path, package), each to be moved down (then removed here: the test fails on
# a stale entry). None left: what both the API and the worker read lives in the core.
KNOWN_UPWARD: set[tuple[str, str]] = set()


def imported(source: str) -> set[str]:
    """The top-level names of every absolute import in ``source``, at any depth, and of every
    ``importlib.import_module("...")`` with a literal name."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value.split(".")[0])
    return names


def test_every_product_package_has_its_place():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name not in ("tests",)}
    assert packages == set(MAY_IMPORT), "a new top-level package: say in MAY_IMPORT what it may import"


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_no_import_runs_upward(package):
    others = set(MAY_IMPORT) - {package}
    wrong, known = [], set()
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in sorted((imported(path.read_text()) & others) - MAY_IMPORT[package]):
            if (str(path.relative_to(ROOT)), name) in KNOWN_UPWARD:
                known.add((str(path.relative_to(ROOT)), name))
            else:
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    stale = {k for k in KNOWN_UPWARD if k[0].split("/")[0] == package} - known
    assert not stale, f"no longer imported upward: remove {sorted(stale)} from KNOWN_UPWARD"
    assert not wrong, f"{package} may import only {sorted(MAY_IMPORT[package]) or 'nothing of cvops'}: {wrong}"


def test_the_check_sees_a_wrong_import():
    """The check reads lazy imports and import_module too: an API module reaching into the worker is caught."""
    source = "import a.b\nfrom c import d\nfrom . import e\ndef handler():\n    from streams.devbroker import pacing\n"
    assert imported(source) == {"a", "c", "streams"}
    assert "streams" in imported("import importlib\nimportlib.import_module('streams.worker')\n")
    assert "streams" not in MAY_IMPORT["api"]
