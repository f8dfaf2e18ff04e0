#!/usr/bin/env bash
# Make sure Debian's `prometheus` and `promtool` are installed (tests and `make run` use the real one).
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then exit 0; fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "error: prometheus is missing and we are not root; run: sudo apt-get install prometheus" >&2
    exit 1
  fi
fi
echo "installing Debian's prometheus package" >&2
$SUDO apt-get update -qq >&2
# The package's own service is not wanted here: we start Prometheus ourselves with the project's config.
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >&2
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
