"""One way to open an ONNX Runtime session for every model family."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort


def open_session(
    path: str | Path, providers: Sequence[str] | None = None, intra_op_threads: int | None = None
) -> ort.InferenceSession:
    """A session on ``providers`` (default: :func:`models.registry.resolve_providers`), idle threads not
    spinning. Read the providers really in use from ``session.get_providers()``."""
    from models.registry import resolve_providers

    options = ort.SessionOptions()
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    # The worker shares its cores with decoding, the broker client and often the broker itself: idle
    # ORT threads that spin steal those cores (measured: 2 spinning threads lost a third of throughput
    # next to a busy process).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=list(providers or resolve_providers()))
