# syntax=docker/dockerfile:1
#
# qgnn container images. Targets:
#   serve             the gRPC server (base install, no torch): qgnn serve /models
#   serve-with-model  serve with a model repository baked in from a model image (MODEL_IMAGE)
#   train             the [train] extra (CPU torch) for training and export jobs
# Build from the repository root, e.g.
#   docker build --target serve -t qgnn:0.1.0 .
# See docs/deploy.md.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# A model image built with deploy/model.Dockerfile (a model repository at /repository); only the
# serve-with-model target uses it.
ARG MODEL_IMAGE=scratch

# ---------------------------------------------------------------------------------------------
# builder: compiles the wheel (qgnn has a C extension, so gcc) and installs the serving venv.
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py ./
COPY qgnn/ qgnn/
COPY contract/ contract/
COPY graph/ graph/
COPY training/ training/
COPY exporter/ exporter/
COPY runtime/ runtime/
COPY bench/ bench/
COPY deploy/constraints-serve.txt /tmp/constraints-serve.txt
RUN pip wheel . --no-deps --wheel-dir /wheels \
 && python -m venv /opt/qgnn \
 && /opt/qgnn/bin/pip install --constraint /tmp/constraints-serve.txt /wheels/qgnn-*.whl \
 && /opt/qgnn/bin/python -c "from qgnn.runtime.kernels import _ext; \
assert _ext.levels_built() == _ext.LEVELS, _ext.levels_built()"

# ---------------------------------------------------------------------------------------------
# serve: the production server. Mount a bundle or a model repository at /models.
FROM ${PYTHON_IMAGE} AS serve
LABEL org.opencontainers.image.title="qgnn" \
      org.opencontainers.image.description="qgnn gRPC inference server for quantised GNN bundles" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/qgnn/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 qgnn \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin qgnn \
 && mkdir /models
COPY --from=builder /opt/qgnn /opt/qgnn
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 8500 9464
HEALTHCHECK --interval=15s --timeout=10s --start-period=60s --retries=3 \
  CMD ["qgnn", "health", "--port", "8500"]
ENTRYPOINT ["qgnn", "serve"]
CMD ["/models"]

# ---------------------------------------------------------------------------------------------
# train: training and export jobs (qgnn train / qgnn export, python -m qgnn.demo).
# torch==2.13.0 from the default index pulls the CUDA build (several GB). For a CPU-only image
# pass the PyTorch project's own CPU wheel index (the ".../whl/cpu" index URL from PyTorch's
# installation guide) as --build-arg TORCH_INDEX_URL=<that url>.
FROM ${PYTHON_IMAGE} AS train
ARG TORCH_INDEX_URL=
# HOME=/tmp: torch and friends write caches under $HOME, whatever uid the job runs as.
ENV PATH=/opt/qgnn/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp
COPY --from=builder /wheels /wheels
RUN python -m venv /opt/qgnn \
 && wheel="$(ls /wheels/qgnn-*.whl)" \
 && /opt/qgnn/bin/pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
      "${wheel}[train]" \
 && rm -rf /wheels \
 && groupadd --system --gid 10001 qgnn \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin qgnn \
 && mkdir -p /app/runs && chown 10001:10001 /app/runs
WORKDIR /app
COPY data/ data/
USER 10001:10001
ENTRYPOINT ["qgnn"]
CMD ["--help"]

# ---------------------------------------------------------------------------------------------
# serve-with-model: serve with the model repository of MODEL_IMAGE baked in at /models, e.g.
#   docker build --target serve-with-model --build-arg MODEL_IMAGE=<model image:tag> .
FROM ${MODEL_IMAGE} AS model
FROM serve AS serve-with-model
COPY --from=model /repository/ /models/
