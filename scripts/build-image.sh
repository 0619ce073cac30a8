#!/usr/bin/env bash
# Builds the runlens image FROM scratch with buildah (Debian's, installed if missing) out of
# a local release build: the stripped binary, exactly the shared libraries `ldd` names (with
# the dynamic loader: NVML is loaded with dlopen, so the binary is dynamically linked), an
# /etc/passwd with the non-root user 65532, and the socket and database directories. The
# same layout as deploy/container/Containerfile, for machines where base images cannot be
# pulled.
#
# Then checks it as CI can: `podman run` may be refused there, so the image's root
# filesystem is mounted and each command runs chrooted into it: --version, snapshot --format
# json, doctor --no-gpu, and serve answering a gRPC health check. Prints the image size.
#
#   scripts/build-image.sh [TAG]      (default runlens:dev)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tag=${1:-runlens:dev}
if ! command -v buildah >/dev/null; then
  echo "== installing buildah (Debian package)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah >/dev/null
fi
export STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}   # works inside containers and without fuse
buildah --version

(cd "$root" && cargo build --release -p runlens-sidecar)
bin=$root/target/release/runlens
version=$("$bin" --version | awk '{print $2}')

ctr=$(buildah from scratch)
work=$(mktemp -d)
cleanup() {
  kill "${serve_pid:-}" 2>/dev/null || true
  if [ -n "${checkroot:-}" ]; then umount "$checkroot/proc" "$checkroot/sys" 2>/dev/null || true; fi
  for c in "${ctrs[@]:-}"; do
    [ -n "$c" ] || continue
    buildah umount "$c" >/dev/null 2>&1 || true
    buildah rm "$c" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
ctrs=("$ctr")
trap cleanup EXIT
mnt=$(buildah mount "$ctr")

echo "== the layout"
install -D -m 0755 /dev/null "$mnt/usr/local/bin/runlens"
strip -o "$mnt/usr/local/bin/runlens" "$bin"
# Every library ldd resolves, and the loader (the line without "=>"), at the same paths.
ldd "$bin" | awk '/=>/ && $3 ~ /^\// {print $3} !/=>/ && $1 ~ /^\// {print $1}' | while read -r lib; do
  install -D -m 0644 "$(readlink -f "$lib")" "$mnt$lib"
  echo "  $lib"
done
chmod 0755 "$mnt"/lib64/ld-linux-*.so.* 2>/dev/null || true
mkdir -p "$mnt/etc" "$mnt/tmp" "$mnt/run/runlens" "$mnt/var/lib/runlens" "$mnt/proc" "$mnt/sys"
chmod 1777 "$mnt/tmp"
echo "root:x:0:0:root:/:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin" >"$mnt/etc/passwd"
echo "root:x:0:
nonroot:x:65532:" >"$mnt/etc/group"
chown 65532:65532 "$mnt/run/runlens" "$mnt/var/lib/runlens"
buildah umount "$ctr" >/dev/null

buildah config \
  --entrypoint '["/usr/local/bin/runlens"]' \
  --cmd '' \
  --user 65532:65532 \
  --env NVIDIA_VISIBLE_DEVICES=all \
  --env NVIDIA_DRIVER_CAPABILITIES=utility \
  --volume /var/lib/runlens \
  --port 50552 --port 9464 \
  --label org.opencontainers.image.title=runlens \
  --label "org.opencontainers.image.description=GPU-aware resource sidecar for LLM agents" \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  --label "org.opencontainers.image.version=$version" \
  "$ctr"
# The same default command as the Containerfile's CMD.
buildah config --cmd '["serve", "--listen=unix:///run/runlens/runlens.sock", "--listen=127.0.0.1:50551", "--health-listen=0.0.0.0:50552", "--db=/var/lib/runlens/runlens.db", "--otlp-grpc-listen=127.0.0.1:4317", "--otlp-http-listen=127.0.0.1:4318", "--metrics-listen=0.0.0.0:9464"]' "$ctr"
buildah commit --quiet "$ctr" "$tag" >/dev/null
buildah rm "$ctr" >/dev/null
ctrs=()

echo "== checks inside the image's root filesystem (chroot)"
check=$(buildah from "$tag")
ctrs=("$check")
checkroot=$(buildah mount "$check")
# sysinfo reads /proc, the cgroup probe /sys: as a container runtime would provide them.
mount --bind /proc "$checkroot/proc"
mount --bind /sys "$checkroot/sys"
in_image() { chroot --userspec=65532:65532 "$checkroot" /usr/local/bin/runlens "$@"; }
fail() { echo "FAIL: $1"; exit 1; }

in_image --version | tee "$work/version"
grep -q "^runlens $version" "$work/version" || fail "--version"
in_image snapshot --format json >"$work/snapshot.json"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["host"]["cpu_count"] > 0, d; print("snapshot: cpu_count", d["host"]["cpu_count"], "gpu available:", d["gpu"]["available"])' "$work/snapshot.json"
in_image doctor --no-gpu >"$work/doctor" || { cat "$work/doctor"; fail "doctor --no-gpu"; }
tail -3 "$work/doctor"
# serve as the image's default command would, on free ports, its database in the volume.
# (chroot itself in the background, not the function: $! must be runlens, which chroot execs)
chroot --userspec=65532:65532 "$checkroot" /usr/local/bin/runlens serve --listen 127.0.0.1:0 --listen unix:///run/runlens/runlens.sock \
  --db /var/lib/runlens/runlens.db --otlp-grpc-listen off --otlp-http-listen off \
  --metrics-listen off >"$work/serve.out" 2>"$work/serve.err" &
serve_pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$work/serve.out")
[ -n "$addr" ] || { cat "$work/serve.err"; fail "serve did not start in the image"; }
[ -S "$checkroot/run/runlens/runlens.sock" ] || fail "no socket at /run/runlens/runlens.sock"
venv=$root/target/k8s-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/deploy/kubernetes/requirements.txt"
"$venv/bin/python" - "$addr" <<'PY'
import sys, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
with grpc.insecure_channel(sys.argv[1]) as ch:
    status = health_pb2_grpc.HealthStub(ch).Check(
        health_pb2.HealthCheckRequest(service="runlens.v1.Runlens"), timeout=5).status
assert status == health_pb2.HealthCheckResponse.SERVING, status
print("serve in the image: grpc.health.v1 SERVING at", sys.argv[1])
PY
kill -TERM "$serve_pid"
code=0; wait "$serve_pid" || code=$?
[ "$code" = 0 ] || { tail -5 "$work/serve.err"; fail "serve exited with $code on SIGTERM"; }
serve_pid=

size=$(buildah images --format '{{.Size}}' "$tag" | head -1)
echo "image $tag: $size (binary $(du -h "$checkroot/usr/local/bin/runlens" | cut -f1))"
echo "image check passed"
