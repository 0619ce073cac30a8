#!/usr/bin/env bash
# CI check for Python users: the `runlens` package drives a real `runlens serve`.
# Creates sdk-examples/python/.venv (requirements.txt and the package), checks the
# committed stubs against proto/, installs the package into a fresh virtual environment as
# a user would, runs the raw-stub smoke check and the package's tests (the example agent
# from the fresh environment, asyncio and thread nesting, decorators, stress tests,
# sidecar restart). Uses target/debug/runlens (built if missing) unless
# RUNLENS_BIN names another binary.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=$here/.venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
echo "== the committed stubs match proto/"
"$here/gen_stubs.sh" --check "$venv/bin/python"
echo "== mypy: the package's type hints hold (py.typed promises them)"
(cd "$here" && "$venv/bin/python" -m mypy src/runlens --exclude 'v1/' --follow-imports=silent)
# The package as the tests use it (reinstalled: the folder may have changed).
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --force-reinstall "$here"

echo "== pip install ./sdk-examples/python into a fresh virtual environment, as a user would"
userenv=$(mktemp -d)
python3 -m venv "$userenv"
(cd "$root" && "$userenv/bin/pip" install --quiet --disable-pip-version-check ./sdk-examples/python)
rm -rf "$here/build" "$here"/src/*.egg-info   # what the two in-tree builds left behind
# The example agent test runs with this interpreter (tests/test_runlens.py, test_sdk.py).
export RUNLENS_PYTHON=$userenv/bin/python
(cd / && "$RUNLENS_PYTHON" -c 'import runlens, runlens.v1.runlens_pb2; print("installed runlens", runlens.__version__, "from", runlens.__file__)')

export RUNLENS_BIN=${RUNLENS_BIN:-$root/target/debug/runlens}
[ -x "$RUNLENS_BIN" ] || (cd "$root" && cargo build -p runlens-sidecar)
# The fake NVML library sits next to the binary (the GPU stress test loads it).
[ -f "$(dirname "$RUNLENS_BIN")/librunlens_fake_nvml.so" ] || (cd "$root" && cargo build -p runlens-fake-nvml)
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work" "$userenv"' EXIT
source "$root/scripts/lib/serve.sh"
serve_start "$work" --listen 127.0.0.1:0 --db "$work/py.db" --sample-interval 200ms \
  --otlp-grpc-listen off --otlp-http-listen off --metrics-listen off
"$venv/bin/python" "$here/stub_smoke.py" "$addr" "$work/py.db"
kill -INT $pid
wait $pid

echo "== gpu_stress.py without a GPU says so"
if "$venv/bin/python" "$here/gpu_stress.py" --mib 1 --seconds 0 2>"$work/gpu.err"; then
  echo "gpu_stress.py claimed a GPU allocation on a machine without CUDA"; exit 1
fi
grep -qE "torch is not installed|no CUDA device" "$work/gpu.err"

echo "== helper tests"
"$venv/bin/python" -m unittest discover -s "$here/tests" -v
echo "python checks: passed"
