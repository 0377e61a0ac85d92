#!/usr/bin/env bash
# Refresh the lock files in requirements/ from pyproject.toml (called by `make lock`).
#
#   requirements/dev.txt      runtime + dev + demo extras: what make demo, make test and CI install
#   requirements/runtime.txt  runtime dependencies only, at dev.txt's versions: the image, systemd
#   requirements/build.txt    pip, setuptools, wheel (requirements/build.in): what builds trailguard
#
# uv resolves once for every platform and every Python trailguard supports (--universal, from
# 3.11 up: markers choose per interpreter) and writes pip's requirements format with the sha256
# of every file PyPI has for each pinned release, so plain pip installs the lock
# (pip install --require-hashes -r ...) on any machine, with no uv there.  The index is PyPI's,
# given explicitly, and --no-config keeps any uv.toml of this machine out of the resolution.
#
# Environment: UV (default .venv/bin/uv: uv comes with the dev dependencies), LOCK_INDEX (default
# https://pypi.org/simple), LOCK_UPGRADE (default --upgrade: every pin moves to the newest release
# pyproject allows; empty: keep the current pins and only add or drop what pyproject changed; or
# e.g. "--upgrade-package msgspec").
set -euo pipefail
cd "$(dirname "$0")/.."

UV=${UV:-.venv/bin/uv}
LOCK_INDEX=${LOCK_INDEX:-https://pypi.org/simple}
LOCK_UPGRADE=${LOCK_UPGRADE---upgrade}

common=(
  --universal --python-version 3.11 --generate-hashes
  --no-config --default-index "$LOCK_INDEX"
  --custom-compile-command "make lock"
  --quiet
)
# shellcheck disable=SC2086  # LOCK_UPGRADE is a list of options, or nothing
{
  "$UV" pip compile "${common[@]}" $LOCK_UPGRADE pyproject.toml --extra dev --extra demo \
    -o requirements/dev.txt
  # The runtime set is pinned to dev.txt's versions: the tests pass on exactly what ships.
  "$UV" pip compile "${common[@]}" $LOCK_UPGRADE pyproject.toml -c requirements/dev.txt \
    -o requirements/runtime.txt
  "$UV" pip compile "${common[@]}" $LOCK_UPGRADE requirements/build.in \
    -o requirements/build.txt
}
echo "lock: requirements/{dev,runtime,build}.txt written; review with: git diff --stat requirements/"
