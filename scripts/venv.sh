#!/usr/bin/env bash
# Create or refresh the project's virtual environment in .venv (called by make).
# Works on a fresh Debian machine with python3 >= 3.11: when the stdlib venv module cannot
# bootstrap pip (Debian ships ensurepip separately, as python3.X-venv), it installs that package
# when running as root, or says exactly what to install.
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: trailguard needs Python >= 3.11; '$PYTHON' is $("$PYTHON" --version 2>&1)" >&2
  exit 1
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
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
# The C scanner is optional for users (no compiler: msgspec does the work); CI must build it.
if [ "${CI:-}" = true ]; then export TRAILGUARD_REQUIRE_SCANNER=1; fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]'
# Bytecode for the editable package, so that every `trailguard` start skips compiling it
# (pip compiles the dependencies it installs; an environment with PYTHONDONTWRITEBYTECODE=1
# would otherwise recompile trailguard on every run: ~70 ms).
"$VENV/bin/python" -m compileall -q daemon >/dev/null
