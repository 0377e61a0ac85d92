#!/usr/bin/env bash
# Make sure a Docker daemon answers on the default socket; start one when none does.
#
# Used by tests/deploy (the image built and run) and so by `make test-deploy` and .ci/run.  On a
# machine whose init starts Docker (systemd's docker.service) this is a no-op.  Where nothing
# starts it (a container, a CI VM whose PID 1 is not systemd), it starts Debian's dockerd in the
# background, as root, and leaves it running for later runs, like the service it stands in for.
#
# The daemon it starts has no bridge network and touches no iptables rule (--bridge=none
# --iptables=false): the tests only ever use the host network and loopback addresses, and a
# build needs nothing more (docker build --network host).
#
# Usage: scripts/dockerd.sh    exit 0 once `docker info` answers; 1 with the reason otherwise.
# Its log: ${TRAILGUARD_DOCKERD_LOG:-/var/log/trailguard-dockerd.log}.
set -euo pipefail

DOCKER=${DOCKER:-docker}
LOG=${TRAILGUARD_DOCKERD_LOG:-/var/log/trailguard-dockerd.log}

if "$DOCKER" info >/dev/null 2>&1; then
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "dockerd.sh: no Docker daemon answers and dockerd is not installed" \
    "(Debian package docker.io: scripts/ci-deps.sh)" >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "dockerd.sh: no Docker daemon answers, and only root can start one" >&2
  exit 1
fi
if [ -S /var/run/docker.sock ] && pidof dockerd >/dev/null 2>&1; then
  echo "dockerd.sh: a dockerd runs but does not answer yet; waiting for it" >&2
else
  echo "dockerd.sh: starting dockerd (log: $LOG)" >&2
  # setsid + nohup: the daemon outlives the shell, the test run and make that started it.
  setsid nohup dockerd --bridge=none --iptables=false --ip-masq=false >>"$LOG" 2>&1 </dev/null &
fi
for _ in $(seq 1 120); do
  if "$DOCKER" info >/dev/null 2>&1; then
    echo "dockerd.sh: dockerd is up" >&2
    exit 0
  fi
  sleep 0.5
done
echo "dockerd.sh: dockerd did not answer within 60 s; the end of $LOG:" >&2
tail -n 30 "$LOG" >&2 || true
exit 1
