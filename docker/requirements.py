"""Print the pinned runtime requirements of cvops (``pyproject.toml``), one per line, for the images.

    python requirements.py pyproject.toml [--extra local] [--replace onnxruntime=onnxruntime-gpu==1.31.1]

The images install these first and the project itself with ``--no-deps`` afterwards: the dependency layer
stays cached while the code changes, and the GPU image can put ``onnxruntime-gpu`` in the place of
``onnxruntime`` (the two wheels share the ``onnxruntime`` folder, so they must never both be installed).
Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(pyproject: Path, extras: Sequence[str] = (), replace: dict[str, str] | None = None) -> list[str]:
    """Requirements of the project and of ``extras``, with each name in ``replace`` swapped for its value.

    References to the project itself (``cvops[local]`` in an extra) are left out.
    """
    project = tomllib.loads(Path(pyproject).read_text())["project"]
    own = _canonical(project["name"])
    wanted = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"no extra {extra!r} in {pyproject}; there are {sorted(optional)}")
        wanted += optional[extra]
    swap = {_canonical(k): v for k, v in (replace or {}).items()}
    unused = set(swap)
    out: list[str] = []
    for req in wanted:
        name = _canonical(_NAME.match(req).group(1))
        if name == own:
            continue
        if name in swap:
            unused.discard(name)
            req = swap[name]
        if req not in out:
            out.append(req)
    if unused:
        raise SystemExit(f"--replace names no requirement of {pyproject}: {sorted(unused)}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pyproject", type=Path)
    p.add_argument("--extra", action="append", default=[], help="optional dependency group to add (repeatable)")
    p.add_argument("--replace", action="append", default=[], help="NAME=REQUIREMENT, e.g. onnxruntime=onnxruntime-gpu")
    args = p.parse_args(argv)
    extras = [e for item in args.extra for e in item.replace(",", " ").split()]
    replace = dict(r.split("=", 1) for r in args.replace)
    print("\n".join(requirements(args.pyproject, extras, replace)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
