"""The life of a model, stated once: what the worker may call on any model the registry loads.

Every family (:class:`models.nanodet.NanoDet` and :class:`models.yolo.Yolo`, the detectors;
:class:`models.classifier.ImageNetClassifier`, the classifier and embedder) implements all of it, most of it
through :class:`models.base.OnnxModel`, so no caller asks a model what it can do. The steps are LitServe's
(setup, decode, predict, encode) with a batch in the middle:

1. **setup**: :func:`models.load` reads the manifest, checks the file and opens the sessions on the execution
   providers asked for; ``providers`` then says which ones really run (a GPU build falls back to CPU where
   there is no GPU).
2. **prepare**: :meth:`Model.new_batch` makes an empty input batch, and :meth:`Model.preprocess_into` fills
   one slot of it from one BGR uint8 HxWx3 image. Slots are independent, so several threads can fill one
   batch at once (the worker's decode threads do). :meth:`Model.preprocess` does both for a list of images.
3. **infer**: :meth:`Model.infer` runs the batch and waits; :meth:`Model.submit` starts it and returns a
   future of :class:`models.session.Inferred` (the same outputs, and the seconds it took), so the next batch
   can be prepared meanwhile. Outputs are batch-first: item ``k`` of each array belongs to image ``k``.
4. **decode**: :meth:`Model.postprocess` turns the outputs into one result per image: a list of
   :class:`models.detection.Detection` for a detector, a :class:`models.classifier.Classification` for a
   classifier. ``sizes``, the images' (height, width), map boxes back to each image's own pixels (a
   classifier needs none and ignores them).

:meth:`Model.predict` is the four steps at once. Example::

    import cv2
    import skimage.data
    from models import load
    from models.protocol import Model

    model = load("nanodet-m", intra_op_threads=2)  # setup
    assert isinstance(model, Model)
    frames = [cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)] * 2
    batch = model.new_batch(len(frames))  # prepare
    for frame, slot in zip(frames, batch):
        model.preprocess_into(frame, slot)
    inferred = model.submit(batch).result()  # infer
    results = model.postprocess(inferred.outputs, [f.shape[:2] for f in frames])  # decode
    print(model.task, [[d.label for d in r] for r in results])  # detection [['person'], ['person']]
    assert [[d.label for d in r] for r in model.predict(frames)] == [[d.label for d in r] for r in results]
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Model(Protocol):
    """A model ready to run: see the module for its life. ``isinstance(obj, Model)`` checks the names only."""

    name: str
    version: str
    task: str  # "detection" or "classification", as in the manifest
    labels: tuple[str, ...]
    size: tuple[int, int]  # (width, height) of one image in the input batch
    providers: list[str]  # the execution providers the session really uses, best first
    lanes: int  # how many sessions share a batch (CPU lanes, :class:`models.session.Lanes`), else 1

    def new_batch(self, n: int) -> np.ndarray:
        """An empty input batch for ``n`` images, to be filled slot by slot."""
        ...

    def preprocess_into(self, image: np.ndarray, out: np.ndarray) -> None:
        """One BGR uint8 HxWx3 image into ``out``, one slot of :meth:`new_batch`; ValueError for an image the
        model cannot take. Safe to call from several threads on different slots of one batch."""
        ...

    def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """A batch of ``images``, filled as :meth:`preprocess_into` fills each slot."""
        ...

    def infer(self, batch: np.ndarray) -> Any:
        """The model's outputs on ``batch``, batch-first, as :meth:`postprocess` takes them."""
        ...

    def submit(self, batch: np.ndarray) -> Future:
        """:meth:`infer` without waiting: a future of :class:`models.session.Inferred`."""
        ...

    def postprocess(self, outputs: Any, sizes: Sequence[tuple[int, int]]) -> list:
        """One result per image from :meth:`infer`'s outputs; ``sizes`` are the images' (height, width)."""
        ...

    def predict(self, images: Sequence[np.ndarray]) -> list:
        """Prepare, infer and decode ``images`` in one call: one result per image."""
        ...
