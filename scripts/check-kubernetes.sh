#!/usr/bin/env bash
# CI check of deploy/kubernetes: every manifest validates in strict mode against the
# Kubernetes 1.33 schemas (kubernetes-validate, pinned, from PyPI into
# target/k8s-venv), and every runlens container runs as written (scripts/check_manifests.py:
# its flags, RUNLENS_* variables, ports and gRPC probes against the real binary). Uses
# target/debug/runlens (built if missing) unless RUNLENS_BIN names another binary.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$root/target/k8s-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/deploy/kubernetes/requirements.txt"
RUNLENS_BIN=${RUNLENS_BIN:-$root/target/debug/runlens}
[ -x "$RUNLENS_BIN" ] || (cd "$root" && cargo build -p runlens-sidecar)

echo "== kubernetes-validate --strict -k 1.33.0"
"$venv/bin/kubernetes-validate" --strict -k 1.33.0 "$root"/deploy/kubernetes/*.yaml
echo "== each runlens container as written"
"$venv/bin/python" "$root/scripts/check_manifests.py" "$RUNLENS_BIN" "$root"/deploy/kubernetes/*.yaml
echo "kubernetes check passed"
