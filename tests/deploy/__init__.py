"""Deployment tests: the container image built and run, the systemd unit booted (make test-deploy).

* ``test_image.py``: a stand-in for the Dockerfile's ``PYTHON_IMAGE`` (Debian bookworm from
  debootstrap, with python3.11, its headers and this machine's CA certificates, imported into
  Docker) and the real Dockerfile built on it with BuildKit and with the classic builder; the
  image run as README says against the moto server, on the host network and loopback only.
* ``test_systemd_unit.py``: a debootstrapped bookworm booted by systemd-nspawn (a real systemd
  252 as its PID 1), trailguard installed by README's own steps, the unit run as shipped.

They need root, Docker's daemon (started by scripts/dockerd.sh when it is not running),
debootstrap and systemd-nspawn (scripts/ci-deps.sh installs them); where the machine lacks one
they skip with the reason, and fail under CI=true.  The debootstrapped trees and the base image
are cached across runs under ``$TRAILGUARD_TEST_CACHE`` (default ``~/.cache/trailguard-tests``),
keyed by what they are made from; Docker's own build cache keeps the image's layers.  Durations
are measured and printed at the end of the run, never asserted.
"""
