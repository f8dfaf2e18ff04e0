#!/usr/bin/env bash
# Print the path of a working `uv`, installing it from PyPI first when missing.
# Works on a fresh Debian 12 with only python3: falls back to apt's python3-pip when pip is absent.
set -euo pipefail

find_uv() {
  for candidate in "$(command -v uv 2>/dev/null || true)" "$HOME/.local/bin/uv" /usr/local/bin/uv; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then echo "$candidate"; return 0; fi
  done
  return 1
}

if find_uv; then exit 0; fi

echo "uv not found: installing it from PyPI" >&2
if ! python3 -m pip --version >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >&2
  else
    echo "error: neither uv nor pip is available; install python3-pip (sudo apt-get install python3-pip)" >&2
    exit 1
  fi
fi
python3 -m pip install --user --quiet uv >&2 2>/dev/null \
  || python3 -m pip install --user --quiet --break-system-packages uv >&2
find_uv
