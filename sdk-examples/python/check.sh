#!/usr/bin/env bash
# CI check: Python stubs generated from proto/ drive a real `runlens serve`.
# Creates sdk-examples/python/.venv, installs requirements.txt, generates the stubs,
# starts the sidecar (target/debug/runlens, built if missing) on a free port with a
# temporary database, runs stub_smoke.py, and stops the sidecar.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=$here/.venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
"$here/gen_stubs.sh" "$venv/bin/python"

bin=${RUNLENS_BIN:-$root/target/debug/runlens}
[ -x "$bin" ] || (cd "$root" && cargo build -p runlens-sidecar)
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
"$bin" serve --listen 127.0.0.1:0 --db "$work/py.db" --sample-interval 200ms \
  >"$work/serve.out" 2>"$work/serve.err" &
pid=$!
for _ in $(seq 100); do
  grep -q "listening on" "$work/serve.out" 2>/dev/null && break
  sleep 0.1
done
addr=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$work/serve.out")
[ -n "$addr" ] || { echo "runlens serve did not start:"; cat "$work/serve.err"; exit 1; }
"$venv/bin/python" "$here/stub_smoke.py" "$addr" "$work/py.db"
kill -INT $pid
wait $pid
echo "python stub check: passed"
