# The cvops HTTP API (`cvops api`); the compose file also runs `cvops topics` and `cvops store-writer` from it.
#
#   docker build -f docker/api.Dockerfile -t cvops/api .                      (from the repository root)
#   docker run --rm -p 8000:8000 -e CVOPS_KAFKA_BOOTSTRAP=... -e CVOPS_STORE_DSN=... cvops/api
#
# With a ClickHouse server, run the store writer on its own (`cvops store-writer`) and the API with
# CVOPS_API_STORE_WRITER=false; with the embedded store (chdb://) the API process must run it.
# Only for its uv binary (from PyPI, the same uv that ./dev uses).
FROM python:3.11-slim-bookworm AS uv
RUN pip install --no-cache-dir --disable-pip-version-check uv==0.13.8

FROM python:3.11-slim-bookworm

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

# Dependencies first, exactly as locked in uv.lock with the CPU build of ONNX Runtime (the extra `cpu`);
# the project afterwards, without its dependencies.
COPY --from=uv /usr/local/bin/uv /usr/local/bin/uv
COPY pyproject.toml uv.lock /tmp/cvops/
RUN cd /tmp/cvops && uv sync --locked --no-install-project --python /usr/local/bin/python3 --extra cpu

COPY README.md /tmp/cvops/README.md
COPY core /tmp/cvops/core
COPY streams /tmp/cvops/streams
COPY cli /tmp/cvops/cli
COPY models /tmp/cvops/models
COPY store /tmp/cvops/store
COPY api /tmp/cvops/api
RUN uv pip install --no-deps /tmp/cvops \
    && rm -rf /tmp/cvops \
    && python -c "import api.app, store.writer, cli"

RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/cvops --shell /usr/sbin/nologin cvops
USER cvops
WORKDIR /var/lib/cvops

# Listen on every interface of the container (the default, 127.0.0.1, is unreachable from outside it).
ENV CVOPS_API_HOST=0.0.0.0 \
    CVOPS_API_PORT=8000
EXPOSE 8000

# Liveness only: /health/ready also needs the broker and the store, which an orchestrator checks on its own.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('CVOPS_API_PORT', '8000'), timeout=4)"

ENTRYPOINT ["cvops"]
CMD ["api"]
