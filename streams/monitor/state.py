"""Checks for a detector's saved state as it comes back from a changelog: data only, never code.

Every detector's ``to_dict`` gives plain JSON values (numbers, strings, lists, dicts; arrays as base64 with
a declared dtype and shape) and its ``from_dict`` reads them back field by field with these checks. A state
that does not pass raises :class:`StateError`; the camera's monitor then starts over and learns again
(:func:`streams.monitor.camera.restore`), it never runs what the state says.

>>> number(3, "n", lo=0)
3.0
>>> number(float("nan"), "n")
Traceback (most recent call last):
...
streams.monitor.state.StateError: n: nan is not a finite number
>>> numbers([1, 2.5], "window", most=3)
[1.0, 2.5]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


class StateError(ValueError):
    """A saved state that cannot be read as what it claims to be (another version, a missing or wrong field)."""


def mapping(d: object, what: str) -> Mapping:
    if not isinstance(d, Mapping):
        raise StateError(f"{what}: a {type(d).__name__}, not a mapping")
    return d


def version(d: object, kind: str, expected: int) -> Mapping:
    """``d`` as a mapping of ``kind`` at version ``expected``; :class:`StateError` otherwise."""
    d = mapping(d, kind)
    if d.get("kind", kind) != kind:
        raise StateError(f"state of a {d.get('kind')!r} detector, not {kind!r}")
    if d.get("version") != expected:
        raise StateError(f"{kind} state version {d.get('version')!r}, this build reads {expected}")
    return d


def number(x: object, what: str, lo: float = -math.inf, hi: float = math.inf, finite: bool = True) -> float:
    """``x`` as a float within [lo, hi] (finite unless ``finite`` is false); bools are not numbers."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise StateError(f"{what}: {type(x).__name__} is not a number")
    value = float(x)
    if math.isnan(value) or (finite and math.isinf(value)):
        raise StateError(f"{what}: {value} is not a finite number")
    if not lo <= value <= hi:
        raise StateError(f"{what}: {value} is outside [{lo}, {hi}]")
    return value


def integer(x: object, what: str, lo: int = 0, hi: int = 2**63 - 1) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise StateError(f"{what}: {type(x).__name__} is not an integer")
    if not lo <= x <= hi:
        raise StateError(f"{what}: {x} is outside [{lo}, {hi}]")
    return x


def flag(x: object, what: str) -> bool:
    if not isinstance(x, bool):
        raise StateError(f"{what}: {type(x).__name__} is not a boolean")
    return x


def numbers(xs: object, what: str, most: int, lo: float = -math.inf, hi: float = math.inf) -> list[float]:
    """A list of at most ``most`` finite numbers."""
    if not isinstance(xs, Sequence) or isinstance(xs, str | bytes):
        raise StateError(f"{what}: a {type(xs).__name__}, not a list")
    if len(xs) > most:
        raise StateError(f"{what}: {len(xs)} values, at most {most} expected")
    return [number(x, what, lo, hi) for x in xs]
