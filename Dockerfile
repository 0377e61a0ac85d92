# syntax=docker/dockerfile:1
# trailguard container image.
#
#   docker build -t trailguard .
#   docker run --init --rm -p 127.0.0.1:9108:9108 \
#     -v "$PWD/trailguard.toml:/etc/trailguard/trailguard.toml:ro" \
#     -v trailguard-state:/var/lib/trailguard \
#     -e AWS_REGION -e AWS_PROFILE -v "$HOME/.aws:/home/trailguard/.aws:ro" trailguard
#
# Config: /etc/trailguard/trailguard.toml (the documented example, listening on 0.0.0.0:9108 so
# the port can be published; mount your own over it).  State (SQLite: dedup, policy history,
# jobs): the volume /var/lib/trailguard.  Credentials: the standard AWS chain -- a task or pod
# role in ECS/EKS, or AWS_* variables / a mounted profile; never the config file.
# --init (or the orchestrator's equivalent) reaps the decode worker processes' zombies.
# For reproducible builds pin the base by digest: --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:...

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- builder: the trailguard wheel and the wheels of its runtime dependencies -------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY setup.py ./
COPY daemon ./daemon
# A C compiler for the scanner (daemon/trailguard/detect/_scan.c); it stays in this stage, so
# its exact Debian version does not matter (pinning it would break on every point release).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
RUN TRAILGUARD_REQUIRE_SCANNER=1 pip wheel --wheel-dir /wheels .
COPY config/trailguard.example.toml /out/trailguard.toml
RUN sed -i 's/^listen = "127\.0\.0\.1:9108"/listen = "0.0.0.0:9108"/' /out/trailguard.toml \
 && grep -q '^listen = "0.0.0.0:9108"' /out/trailguard.toml

# -- runtime: Python, trailguard and its runtime dependencies only ----------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="trailguard" \
      org.opencontainers.image.description="Watches AWS CloudTrail for IAM policy removal, alerts through Prometheus and queues safe remediation." \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TRAILGUARD_HEALTHCHECK_URL=http://127.0.0.1:9108/healthz

RUN groupadd --system --gid 10001 trailguard \
 && useradd --system --uid 10001 --gid trailguard --home-dir /home/trailguard --create-home \
      --shell /usr/sbin/nologin trailguard \
 && install -d -o trailguard -g trailguard -m 0700 /var/lib/trailguard \
 && install -d -m 0755 /etc/trailguard

# Installed from the builder's wheels only (no index): nothing of the build stage stays behind.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/trailguard-*.whl \
 && trailguard --version

COPY --from=builder --chmod=0644 /out/trailguard.toml /etc/trailguard/trailguard.toml

USER 10001:10001
WORKDIR /var/lib/trailguard
VOLUME ["/var/lib/trailguard"]
EXPOSE 9108

# python -c: the slim image has no curl or wget.  urlopen raises (exit 1) unless /healthz is 2xx.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['TRAILGUARD_HEALTHCHECK_URL'], timeout=4)"]

ENTRYPOINT ["trailguard"]
CMD ["run", "--config", "/etc/trailguard/trailguard.toml"]
