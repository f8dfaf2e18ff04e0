#!/usr/bin/env bash
# Install the Debian packages providing any missing command: `ensure-tools.sh COMMAND=PACKAGE ...`.
# A COMMAND with a `/` is a path glob instead (for binaries Debian keeps off PATH).
# With no argument: what the tests need besides Prometheus, i.e. docker-compose (its `config -q` validates
# docker-compose.yml offline; no Docker engine needed) and openssl (a self-signed certificate for the TLS
# tests of `telemetry.post_connection`).
set -euo pipefail
[ "$#" -gt 0 ] || set -- docker-compose=docker-compose openssl=openssl
missing=()
for pair in "$@"; do
  need="${pair%%=*}"
  if [[ "$need" == */* ]]; then
    compgen -G "$need" >/dev/null || missing+=("${pair#*=}")
  else
    command -v "$need" >/dev/null || missing+=("${pair#*=}")
  fi
done
[ "${#missing[@]}" -gt 0 ] || exit 0
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "error: ${missing[*]} missing and we are not root; run: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
echo "installing Debian's ${missing[*]}" >&2
$SUDO apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
