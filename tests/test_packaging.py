"""Packaging: ranges in pyproject.toml, the exact set in uv.lock, and the two agree.

uv itself reads the lock (uv is a dev dependency, the same version as ./dev's), offline: what is checked is the
committed files, not what an index serves today.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from uv import find_uv_bin

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCK = tomllib.loads((ROOT / "uv.lock").read_text())


def lock_check(project: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """``uv lock --check``: does uv.lock still match pyproject.toml? Offline, with an empty cache."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "UV_CACHE_DIR": str(tmp_path / "uv-cache")}
    cmd = [find_uv_bin(), "lock", "--check", "--offline", "--no-progress"]
    return subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=120)


def copy_project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, project / name)
    return project


def test_uv_lock_matches_pyproject(tmp_path):
    done = lock_check(ROOT, tmp_path)
    assert done.returncode == 0, f"uv.lock is stale: run `uv lock` and commit it\n{done.stderr}"


def test_a_stale_lock_fails_the_check(tmp_path):
    project = copy_project(tmp_path)
    assert lock_check(project, tmp_path).returncode == 0
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    assert '"numpy>=1.26,<2"' in text
    pyproject.write_text(text.replace('"numpy>=1.26,<2"', '"numpy>=1.25,<2"'))
    # Offline, uv cannot re-resolve to write a new lock either: the copy above passed, so this fails for the change.
    assert lock_check(project, tmp_path).returncode != 0


def test_runtime_dependencies_are_ranges_with_both_bounds():
    project = PYPROJECT["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    for req in reqs:
        if req.name == "cvops":
            continue
        ops = {spec.operator for spec in req.specifier}
        assert ops == {">=", "<"}, f"{req}: a range from a tested version to the next breaking one"


def test_onnxruntime_comes_from_exactly_one_of_two_conflicting_extras():
    project = PYPROJECT["project"]
    names = {Requirement(r).name for r in project["dependencies"]}
    assert not names & {"onnxruntime", "onnxruntime-gpu"}, "ONNX Runtime belongs to the extras cpu and gpu"
    extras = project["optional-dependencies"]
    assert [Requirement(r).name for r in extras["cpu"]] == ["onnxruntime"]
    assert [Requirement(r).name for r in extras["gpu"]] == ["onnxruntime-gpu"]
    assert PYPROJECT["tool"]["uv"]["conflicts"] == [[{"extra": "cpu"}, {"extra": "gpu"}]]


def test_the_lock_holds_the_known_constraints():
    versions: dict[str, set[str]] = {}
    for package in LOCK["package"]:
        versions.setdefault(package["name"], set()).add(package["version"])
    assert all(len(v) == 1 for v in versions.values()), {k: v for k, v in versions.items() if len(v) > 1}
    locked = {k: v.pop() for k, v in versions.items()}
    assert locked["numpy"].startswith("1."), "numpy 2 breaks the scientific set"
    assert locked["scikit-learn"].startswith("1.5."), locked["scikit-learn"]
    assert "onnx" not in locked, "onnx 1.23 brings numpy 2: it is no dependency"


def test_the_lock_names_public_pypi_only():
    """A lock made behind a mirror would record the mirror's address for every package: lock against PyPI."""
    sources = {str(p["source"]) for p in LOCK["package"] if "editable" not in p["source"]}
    assert sources == {"{'registry': 'https://pypi.org/simple'}"}, sources
    urls = {re.match(r"https://[^/]+/", w["url"]).group(0) for p in LOCK["package"] for w in p.get("wheels", [])}
    assert urls == {"https://files.pythonhosted.org/"}, urls


def test_dev_setup_reinstalls_when_the_lock_changes():
    dev = (ROOT / "dev").read_text()
    setup = dev[dev.index("\nsetup() {") : dev.index("\n}\n", dev.index("\nsetup() {"))]
    stamp = re.search(r"want=\$\(cat ([^|]+)\|", setup).group(1).split()
    assert "uv.lock" in stamp and "pyproject.toml" in stamp, stamp
    assert re.search(r"uv\" sync .*--locked.*--extra cpu --extra dev", setup), setup
