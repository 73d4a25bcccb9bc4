# syntax=docker/dockerfile:1.7
# One image for all four activekd services; the command picks the service
# (`python -m activekd_services.<selection|teacher|trainer|experiment>`, see docs/architecture.md),
# or `activekd-annotation` for the Label Studio backend (docs/annotation.md).
#
#   docker build --target cpu  -t activekd:cpu  .     # CPU torch + faiss-cpu (default target)
#   docker build --target cuda -t activekd:cuda .     # CUDA torch + faiss-gpu
#
# Every package is installed at its constraints.txt version (pip install -c constraints.txt); the
# torch, torchvision and faiss-gpu versions below must equal its pins (tests/deploy/test_dockerfile.py).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
# build stages: a virtualenv in /opt/venv, copied whole into the runtime stages
FROM ${PYTHON_IMAGE} AS build-base
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY src ./src
COPY services ./services

FROM build-base AS build-cpu
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
# torch first from the CPU-only index (~10x smaller than the CUDA wheels), then the project with
# the extras of the four services and the annotation backend (docs/annotation.md), every
# dependency at its pinned version.
RUN pip install --index-url "${TORCH_CPU_INDEX}" \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
 && pip install -c constraints.txt ".[selection,teacher,trainer,experiment,annotation,s3,ray]" \
 && python -c "import torch, faiss, activekd_services; assert torch.version.cuda is None"

FROM build-base AS build-cuda
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG TORCH_CUDA_INDEX=https://download.pytorch.org/whl/cu128
ARG FAISS_GPU_VERSION=1.15.1
# CUDA torch wheels bring their CUDA runtime as pip packages: no CUDA base image needed, only
# the host driver (NVIDIA container toolkit). faiss-gpu replaces faiss-cpu (same `faiss` module).
RUN pip install --index-url "${TORCH_CUDA_INDEX}" --extra-index-url https://pypi.org/simple \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
 && pip install -c constraints.txt ".[selection,teacher,trainer,experiment,annotation,s3,ray]" \
 && pip uninstall -y faiss-cpu \
 && pip install -c constraints.txt "faiss-gpu==${FAISS_GPU_VERSION}" \
 && python -c "import torch, faiss, activekd_services; assert torch.version.cuda"

# ---------------------------------------------------------------------------------------------
# runtime: slim Python, non-root user, volumes for the model cache and the pool store
FROM ${PYTHON_IMAGE} AS runtime-base
ARG UID=10001
ARG HF_HUB_OFFLINE=1
ARG WITH_FASHION_MNIST=1
# libjemalloc2: the services' allocator (ACTIVEKD_MALLOC=jemalloc, preloaded below; flat memory at
# full speed, docs/reliability.md "Load and soak"); linked to one path on every architecture.
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends libjemalloc2; \
    if [ "${WITH_FASHION_MNIST}" = 1 ]; then \
      apt-get install -y --no-install-recommends dataset-fashion-mnist; \
    fi; \
    rm -rf /var/lib/apt/lists/*; \
    ln -s "/usr/lib/$(uname -m)-linux-gnu/libjemalloc.so.2" /usr/local/lib/libjemalloc.so.2; \
    groupadd --system --gid "${UID}" activekd; \
    useradd --system --uid "${UID}" --gid activekd --home-dir /home/activekd --create-home \
        --shell /usr/sbin/nologin activekd; \
    mkdir -p /var/cache/activekd /var/lib/activekd/store; \
    chown -R activekd:activekd /var/cache/activekd /var/lib/activekd
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=${HF_HUB_OFFLINE} \
    HF_HOME=/var/cache/activekd/hf \
    TORCH_HOME=/var/cache/activekd/torch \
    XDG_CACHE_HOME=/var/cache/activekd/xdg \
    MPLCONFIGDIR=/tmp/matplotlib \
    ACTIVEKD_CACHE_DIR=/var/cache/activekd/teacher-outputs \
    ACTIVEKD_STORE_URI=/var/lib/activekd/store \
    LD_PRELOAD=/usr/local/lib/libjemalloc.so.2
VOLUME ["/var/cache/activekd", "/var/lib/activekd/store"]
WORKDIR /home/activekd
# gRPC 50051-50054 and metrics 9101-9104 (selection, teacher, trainer, experiment)
EXPOSE 50051 50052 50053 50054 9101 9102 9103 9104
# Probes the service's own ACTIVEKD_GRPC_PORT via grpc.health.v1; model loading can take minutes.
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-m", "activekd.server.healthcheck"]
USER 10001:10001
CMD ["python", "-m", "activekd_services.selection"]

FROM runtime-base AS cuda
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
COPY --from=build-cuda /opt/venv /opt/venv

FROM runtime-base AS cpu
COPY --from=build-cpu /opt/venv /opt/venv
