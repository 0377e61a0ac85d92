# trailguard container image.  Builds with any Docker's builder, BuildKit or the classic one
# (no `# syntax=` line, no RUN --mount, no COPY --chmod): nothing is fetched but the base image,
# Debian's gcc and the locked Python dependencies from PyPI.
#
#   docker build -t trailguard .
#   docker run --init --stop-timeout 45 --read-only --rm -p 127.0.0.1:9108:9108 \
#     -v "$PWD/trailguard.toml:/etc/trailguard/trailguard.toml:ro" \
#     -v trailguard-state:/var/lib/trailguard \
#     -e AWS_REGION -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY -e AWS_SESSION_TOKEN trailguard
#
# --stop-timeout 45: on `docker stop` trailguard drains in-flight messages for up to
#   [shutdown] deadline_secs (30 s by default), then releases the rest; Docker's default of 10 s
#   would SIGKILL it first (exit 137) and leave a message hidden until its visibility timeout.
#   Keep it above deadline_secs + 15 s (README "Container").
# --init reaps the zombies of decode worker processes ([limits] decode_in = "processes").
# Config: /etc/trailguard/trailguard.toml (the documented example, listening on 0.0.0.0:9108 so
# the port can be published; mount your own over it).  If yours listens elsewhere, set
# TRAILGUARD_HEALTHCHECK_URL (-e TRAILGUARD_HEALTHCHECK_URL=http://127.0.0.1:PORT/healthz): the
# HEALTHCHECK probes that URL from inside the container.  State (SQLite: dedup, policy
# history, jobs): the volume /var/lib/trailguard.  Credentials: the standard AWS chain -- a task
# or pod role in ECS/EKS, or AWS_* variables / a mounted profile; never the config file.
# For reproducible builds pin the base by digest: --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:...

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- builder: trailguard and its locked runtime dependencies in /opt/trailguard/venv ----------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# A C compiler for the scanner (daemon/trailguard/detect/_scan.c); it stays in this stage, so
# its exact Debian version does not matter (pinning it would break on every point release).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The lock first: these layers are rebuilt only when requirements/ changes.  Every file is
# checked against the sha256 in the lock.  /opt/build (pip, setuptools, wheel) builds; the
# runtime venv gets no pip and no build tool.
COPY requirements/build.txt requirements/runtime.txt requirements/
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip install --require-hashes -r requirements/build.txt \
 && python3 -m venv --without-pip /opt/trailguard/venv \
 && /opt/build/bin/pip --python /opt/trailguard/venv/bin/python install \
      --require-hashes -r requirements/runtime.txt
COPY pyproject.toml setup.py README.md ./
COPY daemon ./daemon
# trailguard itself, from this source: a wheel built with the locked setuptools
# (--no-build-isolation), the scanner required (TRAILGUARD_REQUIRE_SCANNER=1), installed with
# nothing more resolved (--no-deps).
RUN TRAILGUARD_REQUIRE_SCANNER=1 /opt/build/bin/pip wheel --no-deps --no-build-isolation \
      --wheel-dir /wheels . \
 && /opt/build/bin/pip --python /opt/trailguard/venv/bin/python install --no-deps \
      /wheels/trailguard-*.whl \
 && /opt/trailguard/venv/bin/trailguard --version
COPY config/trailguard.example.toml /out/trailguard.toml
RUN sed -i 's/^listen = "127\.0\.0\.1:9108"/listen = "0.0.0.0:9108"/' /out/trailguard.toml \
 && grep -q '^listen = "0.0.0.0:9108"' /out/trailguard.toml \
 && chmod 0644 /out/trailguard.toml

# -- runtime: the base image, the virtual environment and the config: nothing of the build ----
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="trailguard" \
      org.opencontainers.image.description="Watches AWS CloudTrail for IAM policy removal, alerts through Prometheus and queues safe remediation." \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/trailguard/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TRAILGUARD_HEALTHCHECK_URL=http://127.0.0.1:9108/healthz

RUN groupadd --system --gid 10001 trailguard \
 && useradd --system --uid 10001 --gid trailguard --home-dir /home/trailguard --create-home \
      --shell /usr/sbin/nologin trailguard \
 && install -d -o trailguard -g trailguard -m 0700 /var/lib/trailguard \
 && install -d -m 0755 /etc/trailguard

COPY --from=builder /opt/trailguard/venv /opt/trailguard/venv
COPY --from=builder /out/trailguard.toml /etc/trailguard/trailguard.toml
RUN trailguard --version

USER 10001:10001
WORKDIR /var/lib/trailguard
VOLUME ["/var/lib/trailguard"]
EXPOSE 9108

# python -c: the slim image has no curl or wget.  urlopen raises (exit 1) unless the URL
# answers 2xx.  TRAILGUARD_HEALTHCHECK_URL must follow [http] listen (see the header).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['TRAILGUARD_HEALTHCHECK_URL'], timeout=4)"]

ENTRYPOINT ["trailguard"]
CMD ["run", "--config", "/etc/trailguard/trailguard.toml"]
