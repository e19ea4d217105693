"""Which models a camera's frames go to: a champion, and a challenger in shadow on a share of them. Pure.

An assignment (:class:`~core.contracts.ModelAssignment`) is part of a scope's config record (the compacted
``config`` topic, :mod:`core.fleetconfig`): the fleet's (scope ``fleet``), a site's (``site:<name>``, the site
of the camera inventory) and a camera's own. Each field is taken from the most specific level that sets it
(camera over site over fleet), and the champion falls back to the worker's ``CVOPS_MODEL``
(:func:`effective`):

- the **champion** sees every frame: its detections are the camera's predictions, metrics and alerts;
- the **challenger** sees the frames :func:`sampled` picks, ``share`` of them (0-1; :data:`DEFAULT_SHARE` when a
  challenger is named and no level sets a share): its detections go to the ``shadow-predictions`` topic only,
  with their agreement with the champion's on the same frame. A share of 0 turns the shadow off.

:func:`promote` makes a scope's challenger its champion (the champion before becomes the challenger, at the
same share, and is remembered as ``previous``); :func:`rollback` brings ``previous`` back. Both give the
scope's new assignment; the API publishes it, and records the change (:class:`~core.contracts.ModelChange`).

>>> fleet = ModelAssignment(champion="nanodet-m@1.0.0", challenger="yolov4-tiny@1.0.0", share=0.2)
>>> cam = ModelAssignment(share=0.5)
>>> effective("nanodet-m", [fleet, None, cam])
Route(champion='nanodet-m@1.0.0', challenger='yolov4-tiny@1.0.0', share=0.5)
>>> promoted = promote(effective("nanodet-m", [fleet, None, cam]))
>>> (promoted.champion, promoted.challenger, promoted.share, promoted.previous)
('yolov4-tiny@1.0.0', 'nanodet-m@1.0.0', 0.5, 'nanodet-m@1.0.0')
>>> effective("nanodet-m", [fleet, None, rollback(promoted)]).champion
'nanodet-m@1.0.0'
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from core.contracts import ModelAssignment

FLEET = "fleet"
SITE = "site:"
DEFAULT_SHARE = 0.1  # of the frames a challenger sees when it is named and no level sets a share


class AssignmentError(ValueError):
    """A promotion or roll back that cannot be made; the message says why."""


def site_scope(site: str) -> str:
    return f"{SITE}{site}"


def scopes(camera_id: str, site: str | None) -> list[str]:
    """The config scopes a camera's settings come from, least specific first.

    >>> scopes("cam-1", "north"), scopes("cam-2", None)
    (['fleet', 'site:north', 'cam-1'], ['fleet', 'cam-2'])
    """
    return [FLEET, *([site_scope(site)] if site else []), camera_id]


@dataclass(frozen=True)
class Route:
    """Where a camera's frames go: ``champion`` (a model ref), and ``challenger`` on ``share`` of them ("" and 0
    without a shadow)."""

    champion: str
    challenger: str = ""
    share: float = 0.0

    @property
    def shadowed(self) -> bool:
        return bool(self.challenger) and self.share > 0 and self.challenger != self.champion


def effective(default: str, levels: Sequence[ModelAssignment | None]) -> Route:
    """The route of ``levels`` (least specific first; None: a level without an assignment), the champion
    falling back to ``default`` (the worker's ``CVOPS_MODEL``).

    >>> effective("nanodet-m", [None, ModelAssignment(challenger="yolov4-tiny")])
    Route(champion='nanodet-m', challenger='yolov4-tiny', share=0.1)
    >>> effective("nanodet-m", [ModelAssignment(challenger="yolov4-tiny", share=0.3), ModelAssignment(share=0)])
    Route(champion='nanodet-m', challenger='yolov4-tiny', share=0.0)
    """
    champion, challenger, share = default, "", None
    for level in levels:
        if level is None:
            continue
        champion = level.champion or champion
        challenger = level.challenger if level.challenger is not None else challenger
        share = level.share if level.share is not None else share
    if share is None:
        share = DEFAULT_SHARE if challenger else 0.0
    return Route(champion, challenger, share)


def sampled(frame_id: str, share: float) -> bool:
    """Whether the challenger sees frame ``frame_id`` at ``share``: a hash of the frame's id, so that the same
    frames are picked whichever worker has the camera and however often a frame is replayed, and about ``share``
    of any camera's frames are.

    >>> [sampled(f"cam-1:0:{i}", 0.0) for i in range(3)], [sampled(f"cam-1:0:{i}", 1.0) for i in range(3)]
    ([False, False, False], [True, True, True])
    >>> sum(sampled(f"cam-1:0:{i}", 0.1) for i in range(10_000))
    989
    """
    if share <= 0:
        return False
    if share >= 1:
        return True
    digest = hashlib.blake2b(frame_id.encode("utf-8", "replace"), digest_size=8).digest()
    return int.from_bytes(digest, "big") < share * 2**64


def promote(route: Route) -> ModelAssignment:
    """A scope's assignment once its challenger is promoted, from its effective ``route``: the champion before
    becomes the challenger, at the same share (so that the two are still compared), and is kept as ``previous``
    for a roll back."""
    if not route.challenger or route.challenger == route.champion:
        raise AssignmentError("there is no challenger to promote: assign one first")
    return ModelAssignment(champion=route.challenger, challenger=route.champion, share=route.share,
                           previous=route.champion)  # fmt: skip


def rollback(own: ModelAssignment | None) -> ModelAssignment:
    """The scope's assignment rolled back to the champion before its last promotion; the champion rolled back
    from becomes the challenger, at the same share."""
    if own is None or not own.previous:
        raise AssignmentError("nothing to roll back to: this scope's champion was not promoted here")
    return ModelAssignment(champion=own.previous, challenger=own.champion, share=own.share)


def named(assignment: ModelAssignment | None) -> list[str]:
    """The model refs an assignment names, in field order, without repeats.

    >>> named(ModelAssignment(champion="a", challenger="b", previous="a"))
    ['a', 'b']
    """
    if assignment is None:
        return []
    refs: Iterable[str | None] = (assignment.champion, assignment.challenger, assignment.previous)
    return list(dict.fromkeys(r for r in refs if r))
