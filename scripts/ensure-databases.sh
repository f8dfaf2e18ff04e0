#!/usr/bin/env bash
# Make sure Debian's `postgresql` and `redis-server` are installed: the tests start private instances of both
# (scale-out: users and credits in PostgreSQL, cache and limits in Redis). Debian keeps PostgreSQL's server
# binaries off PATH, under /usr/lib/postgresql/<version>/bin, so that is where `initdb` is looked for.
set -euo pipefail
"$(dirname "$0")/ensure-tools.sh" '/usr/lib/postgresql/*/bin/initdb=postgresql' redis-server=redis-server
# The packages' own services are not wanted here: tests start their own on free loopback ports.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO systemctl disable --now postgresql redis-server >/dev/null 2>&1 || true
fi
