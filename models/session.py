"""One way to open an ONNX Runtime session for every model family."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def open_session(
    path: str | Path,
    providers: Sequence[str | tuple[str, dict]] | None = None,
    intra_op_threads: int | None = None,
    lanes: int = 1,
) -> ort.InferenceSession | Lanes:
    """A session on ``providers`` (default: :func:`models.registry.resolve_providers`; a provider may come
    with its options, as ``(name, {option: value})``: :func:`models.providers.with_options`), idle threads not
    spinning. Read the providers really in use from ``session.get_providers()``.

    ``lanes`` > 1 on a CPU session: that many sessions of one thread each, a batch split between them
    (:class:`Lanes`); 0 picks :func:`auto_lanes`. A GPU session always has one lane."""
    from models.registry import resolve_providers

    providers = list(providers or resolve_providers())
    if lanes == 0:
        lanes = auto_lanes(intra_op_threads)
    first = _session(path, providers, 1 if lanes > 1 else intra_op_threads)
    if lanes <= 1 or any(p in GPU_PROVIDERS for p in first.get_providers()):
        return first  # a GPU runs a batch whole, whatever the CPU threads
    if len(first.get_inputs()) != 1:
        return _session(path, providers, intra_op_threads)  # a batch of several inputs is not cut here
    return Lanes([first, *(_session(path, providers, 1) for _ in range(lanes - 1))])


def auto_lanes(intra_op_threads: int | None) -> int:
    """Lanes for ``lanes=0``: one per core (at most 8) when the threads are left to ONNX Runtime, else one."""
    return 1 if intra_op_threads else max(1, min(os.cpu_count() or 1, 8))


def _session(path: str | Path, providers: list, intra_op_threads: int | None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    # The worker shares its cores with decoding, the broker client and often the broker itself: idle
    # ORT threads that spin steal those cores (measured: 2 spinning threads lost a third of throughput
    # next to a busy process).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


@dataclass
class Inferred:
    """What one run gave: the outputs, and the seconds from its first frame begun to its last finished."""

    outputs: list[np.ndarray]
    seconds: float


def timed(run, *args) -> Inferred:
    """``run(*args)`` as an :class:`Inferred`, for a session that runs a batch whole."""
    t0 = time.perf_counter()
    outputs = run(*args)
    return Inferred(outputs, time.perf_counter() - t0)


class Lanes:
    """Several single-thread CPU sessions of one model, each in a thread of its own, that share the frames
    of every batch: each lane takes the next frame waiting as soon as it is free (ONNX Runtime releases the
    GIL), and a batch's outputs are joined in order, so the result is the one session's.

    Why not one session with N threads: its threads meet at every operator, so when anything else takes a
    core for a moment (decoding the next batch, the broker client) all of them wait for the one held up.
    Independent lanes lose only that lane's time. Handing frames out one by one, rather than cutting the
    batch into equal parts, lets a lane that was held up take fewer of them; and since the frames of a
    batch submitted with :meth:`submit` before the last one ends wait in the same queue, a lane that runs
    out of frames of one batch goes on with the next instead of idling until the batch is done. Measured
    on 2 cores (NanoDet-m, batch 8): one 2-thread session 43 frames/s; lanes with equal parts 42-43, and 32
    next to a thread decoding JPEGs half the time; lanes taking frames one by one 45, and 34 next to it.
    """

    def __init__(self, sessions: list[ort.InferenceSession]):
        self.sessions = sessions
        self.input_name = sessions[0].get_inputs()[0].name
        self._waiting: queue.SimpleQueue = queue.SimpleQueue()  # (job, frame index), or None to stop
        for i, s in enumerate(sessions):
            threading.Thread(target=_lane, args=(s, self._waiting), name=f"lane_{i}", daemon=True).start()
        # The threads hold the queue and a session each, not this object: once it is gone, they stop.
        self.close = weakref.finalize(self, _stop, self._waiting, len(sessions))

    def __len__(self) -> int:
        return len(self.sessions)

    def run(self, output_names, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.submit(output_names, feeds).result().outputs

    def submit(self, output_names, feeds: dict[str, np.ndarray]) -> Future:
        """Queue a batch's frames for the lanes; a future of :class:`Inferred`."""
        job = _Job(list(output_names), self.input_name, feeds[self.input_name])
        if job.n == 0:
            job.future.set_exception(ValueError("an empty batch"))
        for i in range(job.n):
            self._waiting.put((job, i))
        return job.future

    def get_providers(self) -> list[str]:
        return self.sessions[0].get_providers()

    def get_inputs(self):
        return self.sessions[0].get_inputs()

    def get_outputs(self):
        return self.sessions[0].get_outputs()


def _lane(session: ort.InferenceSession, waiting: queue.SimpleQueue) -> None:
    while (item := waiting.get()) is not None:
        job, i = item
        if job.future.done():  # an earlier frame of the batch failed
            continue
        job.begun()
        try:
            out = session.run(job.output_names, {job.input_name: job.x[i : i + 1]})
        except Exception as exc:
            job.fail(exc)
        else:
            job.done(i, out)


def _stop(waiting: queue.SimpleQueue, lanes: int) -> None:
    for _ in range(lanes):
        waiting.put(None)


class _Job:
    """One batch on the lanes: its frames' outputs as they come, and the future the caller waits on."""

    def __init__(self, output_names: list[str], input_name: str, x: np.ndarray):
        self.output_names, self.input_name, self.x, self.n = output_names, input_name, x, len(x)
        self.future: Future = Future()
        self._outs: list = [None] * self.n
        self._left = self.n
        self._started: float | None = None
        self._lock = threading.Lock()

    def begun(self) -> None:
        with self._lock:
            if self._started is None:
                self._started = time.perf_counter()

    def done(self, i: int, out: list[np.ndarray]) -> None:
        with self._lock:
            self._outs[i] = out
            self._left -= 1
            last = self._left == 0
        if last:
            outputs = [np.concatenate([o[j] for o in self._outs]) for j in range(len(self._outs[0]))]
            with contextlib.suppress(InvalidStateError):  # another frame failed meanwhile
                self.future.set_result(Inferred(outputs, time.perf_counter() - self._started))

    def fail(self, exc: Exception) -> None:
        with contextlib.suppress(InvalidStateError):  # another frame failed first
            self.future.set_exception(exc)
