"""One way to open an ONNX Runtime session for every model family."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def open_session(
    path: str | Path,
    providers: Sequence[str] | None = None,
    intra_op_threads: int | None = None,
    lanes: int = 1,
) -> ort.InferenceSession | Lanes:
    """A session on ``providers`` (default: :func:`models.registry.resolve_providers`), idle threads not
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


def _session(path: str | Path, providers: list[str], intra_op_threads: int | None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    # The worker shares its cores with decoding, the broker client and often the broker itself: idle
    # ORT threads that spin steal those cores (measured: 2 spinning threads lost a third of throughput
    # next to a busy process).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


class Lanes:
    """Several single-thread CPU sessions of one model that share each batch: ``run`` hands the batch's
    frames out one at a time to whichever session is free (ONNX Runtime releases the GIL) and joins the
    outputs in order, so the result is the one session's.

    Why not one session with N threads: its threads meet at every operator, so when anything else takes a
    core for a moment (decoding the next batch, the broker client) all of them wait for the one held up.
    Independent lanes lose only that lane's time, and handing out frames one by one, rather than cutting
    the batch into equal parts, lets a lane that was held up take fewer of them instead of keeping the
    others waiting at the end. Measured on 2 cores (NanoDet-m, batch 8): one 2-thread session 43 frames/s;
    lanes with equal parts 42-43, next to a thread decoding JPEGs half the time 32; lanes taking frames
    one by one 45, and 34 next to that thread. A batch of one runs on one lane (one thread): single frames
    are faster on one multi-threaded session.
    """

    def __init__(self, sessions: list[ort.InferenceSession]):
        self.sessions = sessions
        self.input_name = sessions[0].get_inputs()[0].name
        self._pool = ThreadPoolExecutor(len(sessions) - 1, thread_name_prefix="lane")

    def __len__(self) -> int:
        return len(self.sessions)

    def run(self, output_names, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        x = feeds[self.input_name]
        n = len(x)
        k = min(len(self.sessions), n)
        if k <= 1:
            return self.sessions[0].run(output_names, feeds)
        outs: list = [None] * n
        taken = itertools.count()
        lock = threading.Lock()

        def lane(session: ort.InferenceSession) -> None:
            while True:
                with lock:
                    i = next(taken)
                if i >= n:
                    return
                outs[i] = session.run(output_names, {self.input_name: x[i : i + 1]})

        later = [self._pool.submit(lane, s) for s in self.sessions[1:k]]
        try:
            lane(self.sessions[0])
        finally:
            for f in later:
                f.result()
        return [np.concatenate([o[j] for o in outs]) for j in range(len(outs[0]))]

    def get_providers(self) -> list[str]:
        return self.sessions[0].get_providers()

    def get_inputs(self):
        return self.sessions[0].get_inputs()

    def get_outputs(self):
        return self.sessions[0].get_outputs()
