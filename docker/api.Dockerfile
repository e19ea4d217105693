# The cvops HTTP API (`cvops api`); the compose file also runs `cvops topics` and `cvops store-writer` from it.
#
#   docker build -f docker/api.Dockerfile -t cvops/api .                      (from the repository root)
#   docker run --rm -p 8000:8000 -e CVOPS_KAFKA_BOOTSTRAP=... -e CVOPS_STORE_DSN=... cvops/api
#
# With a ClickHouse server, run the store writer on its own (`cvops store-writer`) and the API with
# CVOPS_API_STORE_WRITER=false; with the embedded store (chdb://) the API process must run it.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# opencv-python (the non-headless wheel pinned by the project) loads libGL and GLib when imported.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

# Dependencies first, exactly as pinned in pyproject.toml; the project afterwards, without its dependencies.
COPY pyproject.toml /tmp/cvops/pyproject.toml
COPY docker/requirements.py /tmp/cvops/requirements.py
RUN python /tmp/cvops/requirements.py /tmp/cvops/pyproject.toml > /tmp/cvops/requirements.txt \
    && pip install -r /tmp/cvops/requirements.txt

COPY README.md /tmp/cvops/README.md
COPY core /tmp/cvops/core
COPY streams /tmp/cvops/streams
COPY cli /tmp/cvops/cli
COPY models /tmp/cvops/models
COPY store /tmp/cvops/store
COPY api /tmp/cvops/api
RUN pip install --no-deps /tmp/cvops \
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
