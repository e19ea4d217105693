"""The models one worker serves: its default detector (``CVOPS_MODEL``) and every model the config assigns to a
camera as champion or challenger (:mod:`core.assignment`), each loaded once, with the worker's options.

A model named in a config record is checked against the registry when the record comes (:meth:`ModelPool.check`:
a record naming a model the registry does not have, or one that is no detector, is refused whole and
dead-lettered) and loaded then (:meth:`ModelPool.ensure`). A model that is in the registry but fails to load (a
file that does not match its manifest, a graph ONNX Runtime refuses) is remembered as failed, with why, and not
tried again until a new config record names it: a camera whose challenger failed goes on with its champion
alone, and one whose champion failed with the worker's default detector; either raises one ``model_fault``
alert (:class:`streams.process.FrameProcessor`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from core.contracts import ContractError
from core.settings import Settings
from models.protocol import Model

log = logging.getLogger("cvops.worker")


def ref_of(model: Model) -> str:
    return f"{model.name}@{model.version}"


def gpu_options(settings: Settings):
    """The GPU providers' options the settings give (:mod:`models.providers`): used only where they run."""
    from models.providers import GpuOptions

    return GpuOptions(
        device_id=settings.gpu_device,
        trt_fp16=settings.trt_fp16,
        trt_engine_cache=settings.trt_engine_cache,
        max_batch=settings.batch_max_size,
    )


def load_options(settings: Settings) -> dict:
    """How the worker loads every detector it serves: its providers, threads, lanes, score threshold."""
    return dict(
        extra_dirs=settings.model_dirs,
        providers=settings.providers,
        intra_op_threads=settings.intra_op_threads or None,
        lanes=settings.inference_lanes,
        score_threshold=settings.score_threshold,
        gpu=gpu_options(settings),
    )


def registry_check(settings: Settings) -> Callable[[str], str]:
    """``check(ref)``: the exact ``name@version`` of a detector of the registry, or :class:`ContractError`
    (``unknown_model``, ``not_a_detector``) saying what is wrong."""
    from models import ModelError, resolve

    def check(ref: str) -> str:
        try:
            spec = resolve(ref, settings.model_dirs)
        except ModelError as exc:
            raise ContractError("unknown_model", f"model {ref!r} is not in the registry: {exc}") from None
        if spec.task != "detection":
            raise ContractError("not_a_detector", f"model {ref!r} is a {spec.task} model, not a detector")
        return spec.ref

    return check


def loader(settings: Settings) -> Callable[[str], Model]:
    """``load(ref)``: detector ``ref`` loaded with the worker's options."""

    def load(ref: str) -> Model:
        from models import load_detector

        return load_detector(ref, **load_options(settings))

    return load


class ModelPool:
    """Models by exact ref (``name@version``), loaded once. ``load(ref)`` loads one (the worker's options);
    ``check(ref)`` gives a ref's exact form or raises :class:`ContractError` (see :func:`registry_check`)."""

    def __init__(self, default: Model, load: Callable[[str], Model], check: Callable[[str], str]):
        self.default = default
        self.models: dict[str, Model] = {ref_of(default): default}
        self.failed: dict[str, str] = {}  # exact ref -> why it could not be loaded
        self._load = load
        self._check = check
        self._exact: dict[str, str] = {ref_of(default): ref_of(default), default.name: ref_of(default)}
        self._lock = threading.Lock()

    def exact(self, ref: str) -> str:
        """``ref`` as ``name@version`` (a bare name: its highest version when first asked); ContractError when
        the registry has no such detector."""
        found = self._exact.get(ref)
        if found is None:
            found = self._exact[ref] = self._check(ref)
        return found

    def check(self, ref: str) -> None:
        self.exact(ref)

    def ensure(self, ref: str, retry: bool = False) -> Model | None:
        """Model ``ref``, loaded now if it is not yet; None when it cannot be (why: :attr:`failed`). A model that
        failed is tried again only with ``retry``."""
        try:
            exact = self.exact(ref)
        except ContractError as exc:
            self.failed[ref] = exc.detail
            return None
        with self._lock:
            model = self.models.get(exact)
            if model is not None:
                return model
            if exact in self.failed and not retry:
                return None
            try:
                model = self._load(exact)
            except Exception as exc:  # whatever the file or runtime says: this model is out, the worker goes on
                self.failed[exact] = f"{type(exc).__name__}: {str(exc)[:300]}"
                log.error("model %s could not be loaded: %s", exact, self.failed[exact])
                return None
            self.failed.pop(exact, None)
            self.models[exact] = model
            log.info("model %s loaded on %s", exact, ",".join(getattr(model, "providers", [])))
            return model

    def get(self, ref: str) -> Model | None:
        """Model ``ref`` if loaded; None otherwise (never loads)."""
        exact = self._exact.get(ref)
        return self.models.get(exact) if exact is not None else None

    def why(self, ref: str) -> str:
        return self.failed.get(self._exact.get(ref, ref), self.failed.get(ref, "not loaded"))

    @property
    def refs(self) -> list[str]:
        """The models loaded, the default first."""
        return list(self.models)
