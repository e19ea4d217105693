"""How far one detector agrees with another on the same frames, class by class, without labels.

The reference's boxes (a champion's) play the part of the truth: a candidate box (a challenger's) agrees when
it overlaps a reference box of the same class by at least ``iou`` (0.5 by default), each box matched at most
once, best overlaps first. Then, per class, the candidate's precision (of its boxes, the share that agree),
recall (of the reference's, the share found) and F1; swapping the two models swaps precision and recall.

Example::

    from models.agreement import agreement, totals
    from models.detection import Detection

    champion = [Detection("person", 0, 0.8, (0, 0, 10, 20)), Detection("car", 2, 0.6, (50, 50, 90, 80))]
    challenger = [Detection("person", 0, 0.7, (1, 1, 10, 21))]
    per_class = agreement(champion, challenger)
    print(per_class["person"].f1, per_class["car"].recall, totals([per_class]).f1)  # 1.0 0.0 0.666...
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from models.detection import Detection


@dataclass(frozen=True)
class Agreement:
    """One class (or all): boxes of each model, boxes matched, and the candidate's score minus the
    reference's summed over the matches."""

    reference: int = 0
    candidate: int = 0
    matched: int = 0
    score_delta_sum: float = 0.0

    def __add__(self, other: Agreement) -> Agreement:
        return Agreement(
            self.reference + other.reference,
            self.candidate + other.candidate,
            self.matched + other.matched,
            self.score_delta_sum + other.score_delta_sum,
        )

    @property
    def precision(self) -> float:
        """Of the candidate's boxes, the share the reference also has (1 when the candidate has none)."""
        return self.matched / self.candidate if self.candidate else 1.0

    @property
    def recall(self) -> float:
        """Of the reference's boxes, the share the candidate also has (1 when the reference has none)."""
        return self.matched / self.reference if self.reference else 1.0

    @property
    def f1(self) -> float:
        total = self.reference + self.candidate
        return 2 * self.matched / total if total else 1.0

    @property
    def score_delta(self) -> float:
        """Mean of (candidate score - reference score) over matched boxes; 0 without matches."""
        return self.score_delta_sum / self.matched if self.matched else 0.0


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` [n, 4] with every box in ``b`` [m, 4] (x1, y1, x2, y2): [n, m]."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _match(overlaps: np.ndarray, iou: float) -> list[tuple[int, int]]:
    """Greedy one-to-one matching, the largest overlap first, of pairs overlapping by at least ``iou``."""
    pairs = []
    overlaps = overlaps.copy()
    while overlaps.size:
        r, c = np.unravel_index(int(np.argmax(overlaps)), overlaps.shape)
        if overlaps[r, c] < iou:
            break
        pairs.append((int(r), int(c)))
        overlaps[r, :] = -1.0
        overlaps[:, c] = -1.0
    return pairs


def agreement(reference: Sequence[Detection], candidate: Sequence[Detection], iou: float = 0.5) -> dict[str, Agreement]:
    """Per class seen by either model on one frame: how far ``candidate`` agrees with ``reference``."""
    out: dict[str, Agreement] = {}
    for label in sorted({d.label for d in reference} | {d.label for d in candidate}):
        ref = [d for d in reference if d.label == label]
        cand = [d for d in candidate if d.label == label]
        pairs = _match(box_iou([d.box for d in ref], [d.box for d in cand]), iou) if ref and cand else []
        delta = sum(cand[c].score - ref[r].score for r, c in pairs)
        out[label] = Agreement(len(ref), len(cand), len(pairs), delta)
    return out


def combine(frames: Iterable[dict[str, Agreement]]) -> dict[str, Agreement]:
    """Per class, summed over frames."""
    out: dict[str, Agreement] = {}
    for per_class in frames:
        for label, a in per_class.items():
            out[label] = out.get(label, Agreement()) + a
    return out


def totals(frames: Iterable[dict[str, Agreement]]) -> Agreement:
    """All classes of all frames together (micro-averaged: every box counts once)."""
    total = Agreement()
    for per_class in frames:
        for a in per_class.values():
            total = total + a
    return total
