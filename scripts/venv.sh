#!/usr/bin/env bash
# Create or refresh the project's virtual environment in .venv (called by make).
# Works on a fresh Debian machine with python3 >= 3.11: when the stdlib venv module cannot
# bootstrap pip (Debian ships ensurepip separately, as python3.X-venv), it installs that package
# when running as root, or says exactly what to install.
#
# TRAILGUARD_DEPS=locked (the default): exactly the locked set -- requirements/build.txt (pip,
#   setuptools, wheel), then requirements/dev.txt, every file checked against its sha256
#   (--require-hashes), then trailguard itself, editable, with no dependency of its own
#   resolved (--no-deps) and built with the locked setuptools (--no-build-isolation).  When
#   the lock files or the Python change, the environment is made anew, so nothing the lock
#   dropped lingers.
# TRAILGUARD_DEPS=latest (make test-latest): the newest releases pyproject.toml allows, resolved
#   now; lists what differs from the lock.
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
DEPS=${TRAILGUARD_DEPS:-locked}
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: trailguard needs Python >= 3.11; '$PYTHON' is $("$PYTHON" --version 2>&1)" >&2
  exit 1
fi

# What the environment is made from: the interpreter and the lock.  A change makes it anew.
fingerprint="$("$PYTHON" -c 'import sys; print(sys.version, sys.executable)')
deps=$DEPS
$(cat requirements/build.txt requirements/dev.txt)"
fingerprint=$(printf '%s' "$fingerprint" | sha256sum | cut -d' ' -f1)
if [ "$DEPS" = locked ] && [ -x "$VENV/bin/pip" ] \
  && [ "$(cat "$VENV/.fingerprint" 2>/dev/null)" != "$fingerprint" ]; then
  echo "venv: the lock or the Python changed; making $VENV anew" >&2
  rm -rf "$VENV"
fi

if [ ! -x "$VENV/bin/pip" ]; then
  rm -rf "$VENV"
  if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    pkg="python$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')-venv"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "venv: installing $pkg (Debian ships ensurepip separately)" >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null; }
      "$PYTHON" -m venv "$VENV"
    else
      echo "error: '$PYTHON -m venv' failed; install it with: sudo apt-get install $pkg" >&2
      exit 1
    fi
  fi
fi

# The C scanner is optional for users (no compiler: msgspec does the work); CI must build it.
if [ "${CI:-}" = true ]; then export TRAILGUARD_REQUIRE_SCANNER=1; fi

if [ "$DEPS" = latest ]; then
  "${PIP[@]}" install -q --upgrade pip setuptools wheel
  "${PIP[@]}" install -q --upgrade --upgrade-strategy eager -e '.[dev,demo]'
  echo "venv: $VENV has the newest releases; where they differ from requirements/dev.txt:" >&2
  "$VENV/bin/python" - <<'EOF' >&2
import re
from importlib.metadata import distributions

locked = {}
for line in open("requirements/dev.txt", encoding="utf-8"):
    match = re.match(r"^([A-Za-z0-9._-]+)==([^ ;\\]+)", line)
    if match:
        locked.setdefault(match[1].lower().replace("_", "-").replace(".", "-"), match[2])
newer = []
for dist in distributions():
    name = dist.metadata["Name"].lower().replace("_", "-").replace(".", "-")
    if name in locked and locked[name] != dist.version:
        newer.append(f"  {name}: locked {locked[name]}, now {dist.version}")
print("\n".join(sorted(newer)) or "  (none: the lock is current)")
EOF
else
  if [ "$(cat "$VENV/.fingerprint" 2>/dev/null)" != "$fingerprint" ]; then
    "${PIP[@]}" install -q --require-hashes -r requirements/build.txt
    "${PIP[@]}" install -q --require-hashes -r requirements/dev.txt
    echo "$fingerprint" >"$VENV/.fingerprint"
  fi
  "${PIP[@]}" install -q --no-deps --no-build-isolation -e .
  # A dependency pyproject.toml names that the lock lacks, or a version outside its bounds:
  # say so here (tests/unit/test_lock.py fails on it too); `make lock` brings the lock up to date.
  if ! problems=$("${PIP[@]}" check 2>&1); then
    echo "venv: warning: the lock does not satisfy pyproject.toml; run 'make lock':" >&2
    echo "$problems" >&2
  fi
fi
# Bytecode for the editable package, so that every `trailguard` start skips compiling it
# (pip compiles the dependencies it installs; an environment with PYTHONDONTWRITEBYTECODE=1
# would otherwise recompile trailguard on every run: ~70 ms).
"$VENV/bin/python" -m compileall -q daemon >/dev/null
