"""One place for configuration: environment variables prefixed ``CVOPS_`` (or a file that sets them).

Every process of cvops (gateway, worker, API, store writer, demo) reads the same :class:`Settings`.
Defaults run on one laptop: a broker on 127.0.0.1:9092 and an embedded ClickHouse in ``.cvops/store``.
A file named by ``CVOPS_ENV_FILE`` (default ``.env`` in the working directory, if present) may set the same
variables; real environment variables win over the file.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from functools import lru_cache
from typing import Literal, get_args, get_origin

from pydantic import Field, SecretStr, create_model, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.monitoring import environment_fields

# The camera monitor's variables (CVOPS_RULE_*, CVOPS_MONITOR_*, CVOPS_ALERT_HOLDOFF_S), one field per setting
# declared in core.monitoring.MONITOR_SETTINGS.
MonitorEnvironment = create_model("MonitorEnvironment", __base__=BaseSettings, **environment_fields())


class Settings(MonitorEnvironment):
    model_config = SettingsConfigDict(
        env_prefix="CVOPS_",
        env_file=os.environ.get("CVOPS_ENV_FILE", ".env"),
        extra="ignore",
    )

    # Broker. Anything that speaks the Kafka protocol: the embedded dev broker or a real cluster.
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="host:port[,host:port...] of the Kafka brokers")
    broker_profile: Literal["auto", "embedded", "kafka"] = Field(
        "auto",
        description="embedded = the development broker's workarounds on (streams.devbroker: fetch pacing, peer "
        "watch, frames purge), kafka = off; auto = asks the broker which it is",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="how every client talks to the brokers"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism (SASL_PLAINTEXT, SASL_SSL)"
    )
    kafka_sasl_username: str = Field("", description="SASL user name")
    kafka_sasl_password: SecretStr = Field(SecretStr(""), description="SASL password; never logged")
    kafka_ssl_cafile: str = Field("", description="CA bundle to verify the brokers (SSL, SASL_SSL)")
    kafka_ssl_certfile: str = Field("", description="client certificate, for mutual TLS")
    kafka_ssl_keyfile: str = Field("", description="the client certificate's private key, for mutual TLS")
    kafka_session_timeout_s: float = Field(
        10.0, ge=1, description="a worker silent this long leaves the group and its cameras move to the others"
    )
    peer_timeout_s: float = Field(
        60.0,
        ge=0,
        description="a worker that has sent no status for this long is presumed dead: the live workers remove it "
        "from the group if the broker has not (the embedded broker never does) and take its cameras; 0 = never, "
        "else at least 30",
    )
    worker_stall_s: float = Field(
        120.0,
        ge=0,
        description="a worker holding frames partitions where frames have waited this long with no offset "
        "committed exits with status 3, so that its supervisor restarts it (streams.liveness); 0 = never, else at "
        "least 10",
    )
    debug_stall_file: str = Field(
        "",
        description="test hook, off when empty: once this file exists the worker removes it and takes no more "
        "frames, as a worker whose consumer stopped delivering them (for testing CVOPS_WORKER_STALL_S)",
    )
    topic_prefix: str = Field("cvops.", description="prefix of every topic name, e.g. cvops.frames")
    frames_partitions: int = Field(8, ge=1, description="partitions of the frames topic; bounds worker count")
    frames_retention_ms: int = Field(10 * 60_000, ge=1000, description="how long raw frames stay in the broker")
    frames_purge_every_s: float = Field(
        1.0,
        ge=0,
        description="this often, delete the frames the worker group has committed past (embedded broker only: "
        "streams.devbroker.purge); 0 = keep them until retention (set 0 if anything else reads the frames topic)",
    )
    records_retention_ms: int = Field(24 * 3600_000, ge=1000, description="retention of predictions/metrics")
    max_message_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="largest frame message accepted")
    empty_fetch_pause_ms: float = Field(
        20.0,
        ge=0,
        description="pause after an empty fetch answered at once (embedded broker only: "
        "streams.devbroker.fetch_pacing); 0 = off",
    )
    replication_factor: int = Field(1, ge=1, description="replicas of each topic created by cvops")

    # Store. chdb:///abs/path or chdb://relative/path for the embedded engine; http(s)://user:pw@host:port/db.
    store_dsn: str = Field("chdb://.cvops/store", description="where metrics land (ClickHouse)")
    store_batch_rows: int = Field(5000, ge=1, description="rows per insert at most")
    store_batch_wait_ms: int = Field(500, ge=1, description="longest wait to fill an insert batch")
    ttl_days: int = Field(30, ge=1, description="retention of stored rows, days")

    # Worker.
    worker_id: str = Field(
        "",
        pattern=r"^[A-Za-z0-9_.-]*$",
        description="stable unique id of this worker (e.g. the pod name): its static group membership lets "
        "a restarted worker take its partitions back at once, without a rebalance; empty = dynamic membership",
    )
    model: str = Field("nanodet-m", description="detector to run: name or name@version (see cvops models)")
    model_dirs: str = Field("", description="extra model folders beside models/zoo, os.pathsep separated")
    providers: str = Field(
        "auto", description="ONNX Runtime providers in order, e.g. CUDAExecutionProvider,CPUExecutionProvider"
    )
    gpu_device: int = Field(0, ge=0, description="CUDA device the TensorRT and CUDA providers run on (device_id)")
    trt_fp16: bool = Field(
        False,
        description="TensorRT may build FP16 kernels (trt_fp16_enable): faster, scores move a little; "
        "only where the TensorRT provider is in use",
    )
    trt_engine_cache: str = Field(
        ".cvops/trt-engines",
        description="folder where TensorRT keeps the engines it builds and its layer timings, so that a restart "
        "reuses them (trt_engine_cache_path, trt_timing_cache_path); empty = built again at every start",
    )
    batch_max_size: int = Field(8, ge=1, le=256, description="frames per inference batch at most")
    batch_max_wait_ms: int = Field(50, ge=1, description="longest a frame waits for its batch to fill, ms")
    embedding_model: str = Field(
        "efficientnet-lite0", description="model giving an image embedding for drift monitoring; empty = none"
    )
    embedding_every: int = Field(10, ge=1, description="embed one frame in N of each camera")
    preferred_batch_sizes: str = Field("", pattern=r"^[0-9, ]*$", description="batch sizes to cut first, e.g. 4,8")
    score_threshold: float = Field(0.35, ge=0.0, le=1.0, description="detections scored below this are dropped")
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime threads; 0 = one per core")
    inference_lanes: int = Field(
        0,
        ge=0,
        le=64,
        description="CPU sessions that share each batch, one thread each (models.session.Lanes); 0 = one per "
        "core (at most 8) unless CVOPS_INTRA_OP_THREADS is set; 1 = one session of CVOPS_INTRA_OP_THREADS threads",
    )
    decode_threads: int = Field(
        0, ge=0, le=64, description="threads decoding and pre-processing frames; 0 = one per core (at most 16)"
    )
    frame_backend: Literal["cpu", "gpu"] = Field(
        "cpu",
        description="where frames are decoded, measured and pre-processed: cpu (OpenCV), or gpu (nvImageCodec and "
        "CuPy, used only where they import and a CUDA device is present, else cpu; not yet verified on a GPU: "
        "docs/scaling.md)",
    )
    decode_reduced: bool = Field(
        True,
        description="decode a JPEG at 1/2, 1/4 or 1/8 of its size (libjpeg-turbo's scaled decoding) when the "
        "model's input, the thumbnails and twice the image signals' analysis width all fit in fewer pixels than the "
        "frame has; false = always at full size (docs/scaling.md)",
    )
    max_pixels: int = Field(40_000_000, ge=1, description="frames claiming more pixels are rejected")
    max_clock_skew_s: float = Field(
        86_400.0,
        gt=0,
        description="a frame captured further than this from its broker record's time (either way), or ahead "
        "of the worker's clock by more, is a dead letter (capture_time_out_of_range); skews of over 2 s within "
        "it are device faults (clock_skew)",
    )

    # The camera monitor: its settings that may be overridden per camera (rule_*, monitor_*, alert_holdoff_s)
    # are declared in core.monitoring and inherited; these are the worker's alone.
    rule_cooldown_s: float = Field(
        60.0, ge=0, description="least time between two range-rule alerts on one signal of one camera"
    )
    edge_cases_per_hour: int = Field(
        5, ge=0, description="edge cases (outlying or ambiguous frames) kept per camera and hour; 0 = none"
    )
    edge_case_confidence: float = Field(
        0.5, ge=0, le=1, description="frames whose detections' mean score is below this are ambiguous edge cases"
    )
    evidence_width: int = Field(
        320, ge=0, le=1920, description="px wide of the thumbnails kept as evidence for alerts; 0 = none"
    )
    view_every_s: float = Field(
        30.0, ge=0, description="capture seconds between a camera's latest-view thumbnails (fleet tiles); 0 = none"
    )
    metrics_port: int = Field(0, ge=0, le=65535, description="a worker's Prometheus endpoint port; 0 = none")
    metrics_host: str = Field("127.0.0.1", description="address a worker's Prometheus endpoint listens on")
    monitoring: bool = Field(
        True,
        description="measure frames and watch cameras (metrics, drift, faults); false = inference only, for "
        "measuring what monitoring costs",
    )
    monitor_stats_every_s: float = Field(
        10.0, ge=0, description="capture seconds between samples of each camera's drift statistics (plots); 0 = off"
    )
    feedback_horizon: int = Field(
        1000, ge=1, description="predictions per camera a worker keeps to score late labels against"
    )
    state_checkpoint_frames: int = Field(25, ge=1, description="save a camera's full monitor state every N frames")

    # API.
    api_host: str = Field("127.0.0.1", description="address the API listens on")
    api_port: int = Field(8000, description="port the API listens on")
    api_store_writer: bool = Field(True, description="run the store writer inside the API process")

    # Gateway.
    gateway_fps: float = Field(5.0, gt=0, description="frames per second a gateway sends of each camera")
    gateway_jpeg_quality: int = Field(80, ge=1, le=100, description="JPEG quality of the frames a gateway sends")

    # Incidents across cameras (streams/incidents.py) and the routes that tell people (streams/notify.py).
    incident_window_s: float = Field(
        120.0, gt=0, le=86_400, description="seconds an alert waits for others of its site to make one incident"
    )
    incident_min_cameras: int = Field(3, ge=2, description="cameras of one site that raise together: one incident")
    incident_min_share: float = Field(
        0.5, ge=0, le=1, description="and at least this share of the scope's known cameras (a tag is a smaller scope)"
    )
    notify_routes: SecretStr = Field(
        SecretStr(""),
        description='JSON list of {"name", "url", "format": json|chat|alertmanager}; URLs may hold tokens: '
        "never logged (docs/incidents.md)",
    )

    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")

    @field_validator("peer_timeout_s")
    @classmethod
    def _peer_timeout_spans_statuses(cls, value: float) -> float:
        if 0 < value < 30:
            raise ValueError("must be 0 (never) or at least 30 s: workers send a status every 10 s")
        return value

    @field_validator("worker_stall_s")
    @classmethod
    def _stall_spans_commits(cls, value: float) -> float:
        if 0 < value < 10:
            raise ValueError("must be 0 (never) or at least 10 s: a worker commits its offsets every second")
        return value

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    @property
    def preferred_sizes(self) -> tuple[int, ...]:
        return tuple(int(p) for p in self.preferred_batch_sizes.replace(" ", "").split(",") if p)

    @property
    def decode_workers(self) -> int:
        """Threads that decode frames: ``decode_threads``, or one per core (at most 16) when it is 0."""
        return self.decode_threads or min(16, os.cpu_count() or 1)

    @property
    def app_id(self) -> str:
        """Consumer-group and changelog namespace of the stream worker."""
        return f"{self.topic_prefix}worker".replace(".", "-")


@lru_cache
def get_settings() -> Settings:
    return Settings()


def variable(cls: type[BaseSettings], name: str) -> str:
    """The environment variable of field ``name`` of ``cls``: ``variable(Settings, "model") == "CVOPS_MODEL"``."""
    return f"{cls.model_config.get('env_prefix', '')}{name}".upper()


def shown(value: object) -> str:
    """A default as the reference shows it.

    >>> [shown(v) for v in ("", None, True, 5.0, 0.001, 600_000, SecretStr("x"), "auto")]
    ['(empty)', '(none)', '`true`', '`5`', '`0.001`', '`600000`', '(secret)', '`auto`']
    """
    if isinstance(value, SecretStr):
        return "(secret)" if value.get_secret_value() else "(empty)"
    if value is None or value == "":
        return "(none)" if value is None else "(empty)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{int(value) if value.is_integer() else value}`"
    return f"`{value}`"


def bounds(field: FieldInfo) -> str:
    """A field's bounds, pattern or choices as the reference shows them, e.g. ``≥ 1, ≤ 256``."""
    out = []
    signs = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    for meta in field.metadata:
        for attr, sign in signs.items():
            if getattr(meta, attr, None) is not None:
                out.append(f"{sign} {shown(getattr(meta, attr)).strip('`')}")
        if getattr(meta, "pattern", None):
            out.append(f"`{meta.pattern}`")
    if get_origin(field.annotation) is Literal:
        out.append(" / ".join(f"`{choice}`" for choice in get_args(field.annotation)))
    return ", ".join(out)


def reference(cls: type[BaseSettings], leave_out: Collection[str] = ()) -> str:
    """The Markdown table of the variables of ``cls``, in the order declared, but those named in
    ``leave_out`` (variables another table shows). The configuration reference, docs/configuration.md,
    is made of such tables (``python -m cli.reference`` writes it)."""
    rows = ["| variable | default | bounds | meaning |", "|---|---|---|---|"]
    for name, field in cls.model_fields.items():
        if variable(cls, name) not in leave_out:
            meaning = (field.description or "").replace("|", "\\|")
            rows.append(f"| `{variable(cls, name)}` | {shown(field.default)} | {bounds(field)} | {meaning} |")
    return "\n".join(rows) + "\n"
