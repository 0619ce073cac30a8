#!/usr/bin/env bash
# CI check: agents whose clock is off, for real. A stock OpenTelemetry SDK agent and an
# agent on the runlens Python package run under Debian's `faketime` (installed here if
# missing) shifted by +30 s, -30 s, +1 h and +200 ms against one `runlens serve`; the
# estimates, warnings, gauge, doctor check and matching are checked by
# scripts/check_clock_skew.py, then --clock-skew-correction on a second sidecar.
# Uses the Python environment sdk-examples/python/check.sh made (made here if missing) and
# target/debug/runlens (built if missing) unless RUNLENS_BIN names another binary.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if ! command -v faketime >/dev/null; then
  echo "== installing faketime (Debian package)"
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq faketime >/dev/null
fi
dpkg-query -W faketime 2>/dev/null || true

venv=$root/sdk-examples/python/.venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/sdk-examples/python/requirements.txt"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "$root/sdk-examples/python"
fi
RUNLENS_BIN=${RUNLENS_BIN:-$root/target/debug/runlens}
[ -x "$RUNLENS_BIN" ] || (cd "$root" && cargo build -p runlens-sidecar)
"$venv/bin/python" "$root/scripts/check_clock_skew.py" "$RUNLENS_BIN"
