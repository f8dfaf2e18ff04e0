#!/usr/bin/env bash
# Make sure Debian's `prometheus` and `promtool` are installed (tests and `make run` use the real one).
set -euo pipefail
command -v prometheus >/dev/null && command -v promtool >/dev/null && exit 0
"$(dirname "$0")/ensure-tools.sh" prometheus=prometheus promtool=prometheus
# The package's own service is not wanted here: we start Prometheus ourselves with the project's config.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
