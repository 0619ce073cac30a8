#!/usr/bin/env bash
# Generates the Python stubs for runlens.v1 from proto/ into the package
# (src/runlens/v1/, committed). Needs grpcio-tools (requirements.txt).
#
#   gen_stubs.sh [PYTHON]          regenerate in place (after changing proto/)
#   gen_stubs.sh --check [PYTHON]  fail if the committed stubs differ from proto/
#
# Why committed rather than built at install time: `pip install ./sdk-examples/python` then
# needs only grpcio and protobuf (no grpcio-tools, no protoc, no proto/ outside the package
# folder), and the check keeps the committed copy honest in CI.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
check=false
if [ "${1:-}" = "--check" ]; then check=true; shift; fi
python=${1:-python3}
pkg=$here/src/runlens/v1
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$python" -m grpc_tools.protoc -I "$root/proto" \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  "$root"/proto/runlens/v1/*.proto
if $check; then
  if ! diff -r -x __init__.py -x __pycache__ "$out/runlens/v1" "$pkg" >/dev/null; then
    diff -r -x __init__.py -x __pycache__ "$out/runlens/v1" "$pkg" | head -20 || true
    echo "the committed Python stubs in $pkg differ from proto/: run sdk-examples/python/gen_stubs.sh and commit" >&2
    exit 1
  fi
  echo "python stubs match proto/"
else
  rm -f "$pkg"/*_pb2.py "$pkg"/*_pb2.pyi "$pkg"/*_pb2_grpc.py
  cp "$out"/runlens/v1/* "$pkg"/
  echo "stubs written to $pkg"
fi
