#!/usr/bin/env bash
# Generates Python stubs for runlens.v1 from proto/ into sdk-examples/python/generated/.
# Needs grpcio-tools (see requirements.txt). Usage: gen_stubs.sh [PYTHON]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
python=${1:-python3}
out=$here/generated
rm -rf "$out"
mkdir -p "$out"
"$python" -m grpc_tools.protoc -I "$root/proto" \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  "$root"/proto/runlens/v1/*.proto
# The stubs import each other as `runlens.v1.x_pb2`: put "$out" on sys.path to use them.
echo "stubs written to $out (add it to sys.path / PYTHONPATH)"
