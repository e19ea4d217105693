"""Dynamic batching policy, pure: which frames go together into one inference call.

The worker collects frames from all cameras for at most ``max_queue_delay_ms`` or until it holds two
full batches (faust's ``take_events``: Triton's max batch size and max queue delay), then this module
decides the order and the batches:

- **fairness**: frames are interleaved across cameras, round robin, each camera's frames kept in
  order, so a camera that floods the queue cannot push the others to the back;
- **preferred sizes**: batches are cut to the preferred sizes a provider runs best (e.g. powers of two
  for TensorRT engines), largest first, never above ``max_batch_size``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class BatchPolicy:
    """``max_batch_size`` frames per call at most; ``preferred_sizes`` (each <= max) tried first.

    >>> BatchPolicy(8, preferred_sizes=(4, 8)).sizes(13)
    [8, 4, 1]
    >>> BatchPolicy(8).sizes(13)
    [8, 5]
    """

    max_batch_size: int
    max_queue_delay_ms: float = 50.0
    preferred_sizes: tuple[int, ...] = ()

    def __post_init__(self):
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        bad = [s for s in self.preferred_sizes if not 1 <= s <= self.max_batch_size]
        if bad:
            raise ValueError(f"preferred sizes {bad} are outside 1..{self.max_batch_size}")

    @property
    def queue_limit(self) -> int:
        """Frames to collect before cutting batches: two full batches, so that while one batch is
        inferred the next is already being decoded."""
        return 2 * self.max_batch_size

    def sizes(self, n: int) -> list[int]:
        """Batch sizes for ``n`` queued frames, in order; they add up to ``n``."""
        preferred = sorted(set(self.preferred_sizes) | {self.max_batch_size}, reverse=True)
        out = []
        while n > 0:
            size = next((s for s in preferred if s <= n), n)
            out.append(size)
            n -= size
        return out

    def batches(self, items: Sequence[T], camera: Callable[[T], Hashable]) -> list[list[T]]:
        """``items`` in fair order, cut into batches of :meth:`sizes`."""
        ordered = fair_order(items, camera)
        out, start = [], 0
        for size in self.sizes(len(ordered)):
            out.append(ordered[start : start + size])
            start += size
        return out


def fair_order(items: Sequence[T], camera: Callable[[T], Hashable]) -> list[T]:
    """Round robin across cameras in order of first appearance; each camera's items keep their order.

    >>> fair_order(["a1", "a2", "a3", "b1", "c1", "b2"], camera=lambda s: s[0])
    ['a1', 'b1', 'c1', 'a2', 'b2', 'a3']
    """
    queues: OrderedDict[Hashable, list[T]] = OrderedDict()
    for item in items:
        queues.setdefault(camera(item), []).append(item)
    out: list[T] = []
    depth = 0
    while len(out) < len(items):
        out.extend(q[depth] for q in queues.values() if depth < len(q))
        depth += 1
    return out
