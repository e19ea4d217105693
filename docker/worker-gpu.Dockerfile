# The cvops stream worker for NVIDIA GPUs: ONNX Runtime with the TensorRT and CUDA execution providers.
#
#   docker build -f docker/worker-gpu.Dockerfile -t cvops/worker-gpu .        (from the repository root)
#   docker run --rm --gpus all -e CVOPS_KAFKA_BOOTSTRAP=kafka:9092 cvops/worker-gpu
#
# The CUDA major version follows the onnxruntime-gpu wheel in uv.lock, not a preference: onnxruntime-gpu 1.31.1 from
# PyPI is built with CUDA 13.0 (its CUDA provider links libcudart.so.13 and libcublas.so.13, its build info
# says cuda_version 13.0) and cuDNN 9, so a CUDA 12 base would load no GPU provider and run on the CPU.
# CUDA 13 needs an NVIDIA driver r580 or later on the host. Change the two together.
#
# TensorRT (libnvinfer.so.10, libnvonnxparser.so.10) is not in the CUDA runtime image. Without it ONNX Runtime
# logs "EP Error ... Please install TensorRT libraries ... Falling back to ['CUDAExecutionProvider',
# 'CPUExecutionProvider']" once per session and runs on CUDA. To have it, pass the version of NVIDIA's apt
# packages built for CUDA 13 (the base image has the CUDA apt repository configured), e.g.
#   docker build --build-arg TENSORRT_VERSION=10.x.y.z-1+cuda13.0 ...
# The providers really in use are in each worker's status (GET /api/v1/workers).

# Only for its uv binary (from PyPI, the same uv that ./dev uses).
FROM python:3.11-slim-bookworm AS uv
RUN pip install --no-cache-dir --disable-pip-version-check uv==0.13.8

FROM nvidia/cuda:13.0.2-cudnn-runtime-ubuntu22.04

ARG PYTHON_VERSION=3.11
ARG TENSORRT_VERSION=""

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_NO_CACHE=1 \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# opencv-python loads libGL and GLib when imported; ca-certificates for uv's downloads.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libgl1 libglib2.0-0 \
    && if [ -n "${TENSORRT_VERSION}" ]; then \
         apt-get install -y --no-install-recommends \
           "libnvinfer10=${TENSORRT_VERSION}" "libnvinfer-plugin10=${TENSORRT_VERSION}" \
           "libnvonnxparsers10=${TENSORRT_VERSION}"; \
       fi \
    && rm -rf /var/lib/apt/lists/*

# Ubuntu 22.04 ships Python 3.10: uv installs a standalone CPython 3.11 and the virtual environment.
COPY --from=uv /usr/local/bin/uv /usr/local/bin/uv
RUN uv python install "${PYTHON_VERSION}" \
    && uv venv --python "${PYTHON_VERSION}" /opt/venv

# The dependencies exactly as locked in uv.lock with the extra `gpu` (onnxruntime-gpu): the lock resolves it
# apart from the extra `cpu`, so the CPU wheel is never installed (both write the onnxruntime folder); then the
# project without its dependencies.
COPY pyproject.toml uv.lock /tmp/cvops/
RUN cd /tmp/cvops && uv sync --locked --no-install-project --python /opt/venv/bin/python --extra gpu

COPY README.md /tmp/cvops/README.md
COPY core /tmp/cvops/core
COPY streams /tmp/cvops/streams
COPY cli /tmp/cvops/cli
COPY models /tmp/cvops/models
COPY store /tmp/cvops/store
COPY api /tmp/cvops/api
RUN uv pip install --no-deps /tmp/cvops \
    && rm -rf /tmp/cvops \
    && python -c "import sys, importlib.metadata as md; names = {d.metadata['Name'].lower() for d in md.distributions()}; sys.exit('onnxruntime (CPU) is installed beside onnxruntime-gpu' if 'onnxruntime' in names or 'onnxruntime-gpu' not in names else 0)" \
    && python -c "import onnxruntime as ort; assert 'CUDAExecutionProvider' in ort.get_available_providers(), ort.get_available_providers()" \
    && python -c "import cv2, cli, api.app, store.writer, models"

RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/cvops --shell /usr/sbin/nologin cvops
USER cvops
WORKDIR /var/lib/cvops

# TensorRT first where its libraries are present, then CUDA, then the CPU for whatever a GPU provider lacks.
ENV CVOPS_PROVIDERS=TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# No HEALTHCHECK: the worker serves no port; its liveness is published on the workers topic.
ENTRYPOINT ["cvops"]
CMD ["worker"]
