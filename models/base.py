"""What every ONNX model family shares: the :class:`models.protocol.Model` life, less what a family decides.

A family subclasses :class:`OnnxModel` and writes only its own steps: :meth:`OnnxModel.preprocess_into`
(one image into one slot of the input batch) and :meth:`OnnxModel.postprocess` (outputs to one result per
image), and, when it wants its outputs other than as the session's list, :meth:`OnnxModel.outputs`. The
manifest's common fields, the session (one, or CPU lanes: :class:`models.session.Lanes`), the batch,
inference with and without waiting, and :meth:`OnnxModel.predict` are here.

Example, a family of one: NanoDet's model, whose result is each image's best score at stride 8::

    import cv2
    import skimage.data
    from models.base import OnnxModel
    from models.nanodet import DEFAULT_PATH, load_manifest
    from models.protocol import Model

    class BestScore(OnnxModel):
        task = "detection"

        def preprocess_into(self, image, out):
            self._normalise_into(cv2.split(cv2.resize(image, self.size)), out)

        def postprocess(self, outputs, sizes):
            return [round(float(scores.max()), 1) for scores in outputs[0]]

    manifest = load_manifest(DEFAULT_PATH)
    model = BestScore(DEFAULT_PATH, manifest, run_outputs=[manifest["outputs"]["8"]["scores"]], intra_op_threads=1)
    assert isinstance(model, Model)
    print(model.predict([cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)]))  # [0.2]: a large person
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from models.providers import GpuOptions, with_options
from models.session import Inferred, Lanes, open_session, timed


class OnnxModel(ABC):
    """One ONNX model of a family: manifest fields, session, batch and the steps every family shares.

    ``run_outputs`` are the session outputs :meth:`infer` fetches, in the order :meth:`outputs` receives them.
    ``gpu``: the TensorRT and CUDA providers' options (:mod:`models.providers`), given to them only when they
    are among ``providers``.
    """

    task: ClassVar[str]  # "detection" or "classification"

    def __init__(
        self,
        path: str | Path,
        manifest: dict,
        *,
        run_outputs: Sequence[str],
        providers: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
        lanes: int = 1,
        gpu: GpuOptions | None = None,
    ) -> None:
        self.manifest = manifest
        self.name: str = manifest["name"]
        self.version: str = manifest["version"]
        self.labels: tuple[str, ...] = tuple(manifest["labels"])
        spec = manifest["input"]
        self.input_name: str = spec["name"]
        self.size: tuple[int, int] = (int(spec["shape"][3]), int(spec["shape"][2]))  # (w, h)
        self._mean = np.asarray(spec["mean"], np.float32).reshape(3, 1, 1)
        self._inv_std = (1.0 / np.asarray(spec["std"], np.float32)).reshape(3, 1, 1)
        self.run_outputs: list[str] = list(run_outputs)
        self.session = open_session(path, self._requested(providers, gpu or GpuOptions()), intra_op_threads, lanes)
        self.providers: list[str] = self.session.get_providers()
        self._runner: ThreadPoolExecutor | None = None  # for submit() on a single session

    def _requested(self, providers: Sequence[str] | None, gpu: GpuOptions) -> list:
        """The providers asked for (default: :func:`models.registry.resolve_providers`), each GPU one with its
        options; the engine cache's folder made when TensorRT is among them."""
        from models.registry import resolve_providers

        names = list(providers or resolve_providers())
        if gpu.trt_engine_cache and "TensorrtExecutionProvider" in names:
            Path(gpu.trt_engine_cache).mkdir(parents=True, exist_ok=True)
        return with_options(names, gpu, self.input_name, self.manifest["input"]["shape"])

    @property
    def lanes(self) -> int:
        """How many sessions share a batch: :class:`models.session.Lanes` on a CPU, else 1."""
        return len(self.session) if isinstance(self.session, Lanes) else 1

    # prepare

    def new_batch(self, n: int) -> np.ndarray:
        """An empty float32 [n, 3, H, W] input batch, for :meth:`preprocess_into` to fill slot by slot."""
        w, h = self.size
        return np.empty((n, 3, h, w), np.float32)

    @abstractmethod
    def preprocess_into(self, image: np.ndarray, out: np.ndarray) -> None:
        """One BGR uint8 HxWx3 image into ``out``, a [3, H, W] slot of :meth:`new_batch`."""

    def _normalise_into(self, planes: Sequence[np.ndarray], out: np.ndarray) -> None:
        """``out`` = (planes - mean) / std, the three colour planes in the model's order."""
        for c, plane in enumerate(planes):  # 3x faster than assigning a transposed view
            out[c] = plane
        out -= self._mean
        out *= self._inv_std

    def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Images into a new batch, each as :meth:`preprocess_into` does it; ValueError names a bad image."""
        batch = self.new_batch(len(images))
        for i, image in enumerate(images):
            try:
                self.preprocess_into(image, batch[i])
            except ValueError as exc:
                raise ValueError(f"image {i}: {exc}") from None
        return batch

    # infer

    def outputs(self, raw: list[np.ndarray]) -> Any:
        """The session's outputs (``run_outputs``, in order) as :meth:`postprocess` takes them: as they are,
        unless a family says otherwise."""
        return raw

    def infer(self, batch: np.ndarray) -> Any:
        """One session run on ``batch``: :meth:`outputs` of what it gives."""
        return self.outputs(self.session.run(self.run_outputs, {self.input_name: batch}))

    def submit(self, batch: np.ndarray) -> Future:
        """:meth:`infer` without waiting: a future of :class:`models.session.Inferred`. On lanes the frames
        join the lanes' queue, so a batch submitted before the previous one ends starts on each lane as it
        frees up; a single session runs it in a thread of its own."""
        if isinstance(self.session, Lanes):
            raw = self.session.submit(self.run_outputs, {self.input_name: batch})
            return _then(raw, lambda done: Inferred(self.outputs(done.outputs), done.seconds))
        if self._runner is None:
            self._runner = ThreadPoolExecutor(1, thread_name_prefix="infer_run")
        return self._runner.submit(timed, self.infer, batch)

    # decode

    @abstractmethod
    def postprocess(self, outputs: Any, sizes: Sequence[tuple[int, int]]) -> list:
        """One result per image from :meth:`infer`'s outputs; ``sizes`` are the images' (height, width)."""

    def predict(self, images: Sequence[np.ndarray]) -> list:
        """Prepare, infer and decode ``images`` (BGR uint8 HxWx3): one result per image."""
        if len(images) == 0:
            return []
        return self.postprocess(self.infer(self.preprocess(images)), [image.shape[:2] for image in images])


def _then(future: Future, fn) -> Future:
    """A future of ``fn(future.result())``, or of the same exception."""
    out: Future = Future()

    def done(f: Future) -> None:
        try:
            out.set_result(fn(f.result()))
        except Exception as exc:
            out.set_exception(exc)

    future.add_done_callback(done)
    return out
