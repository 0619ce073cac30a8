#!/usr/bin/env bash
# CI check of the wire contract every language builds from:
# - `buf lint` (proto/buf.yaml) and `buf breaking` against the released contract
#   (proto/released/runlens-v1.binpb), so runlens.v1 never breaks a generated client.
#   buf comes from npm (@bufbuild/buf, pinned) into target/buf.
# - every code-generation command the docs show for other languages, run as written
#   in a scratch copy of proto/ (Go: Debian's protobuf-compiler, protoc-gen-go and
#   protoc-gen-go-grpc, installed if missing).
# After a deliberate, compatible release of the contract, refresh the baseline with
#   target/buf/node_modules/.bin/buf build proto -o proto/released/runlens-v1.binpb
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

tools=$root/target/buf
buf=$tools/node_modules/.bin/buf
if [ ! -x "$buf" ]; then
  command -v npm >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q npm; }
  mkdir -p "$tools"
  (cd "$tools" && npm install --silent --no-audit --no-fund --prefix "$tools" @bufbuild/buf@1.75.0)
fi
"$buf" --version
(cd "$root/proto" && "$buf" lint && "$buf" breaking --against released/runlens-v1.binpb)
echo "buf lint and buf breaking: passed"

if ! command -v protoc >/dev/null || ! command -v protoc-gen-go >/dev/null \
   || ! command -v protoc-gen-go-grpc >/dev/null; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q protobuf-compiler protoc-gen-go protoc-gen-go-grpc
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$root/proto" "$work/proto"
# The docs' Go command, exactly as a reader copies it.
# (sed reads every line: a reader that stops early would kill grep with SIGPIPE)
go_cmd=$(grep -h '^protoc -I proto --go_out' "$root/README.md" "$root"/docs/src/*.md | sed -n '1{s/ *#.*$//;p}')
[ -n "$go_cmd" ] || { echo "the docs show no Go generation command"; exit 1; }
echo "running: $go_cmd"
(cd "$work" && eval "$go_cmd")
for f in resources.pb.go runlens.pb.go runlens_grpc.pb.go; do
  found=$(find "$work" -name "$f" | head -1)
  [ -n "$found" ] || { echo "Go generation did not write $f"; exit 1; }
  grep -q '^package runlensv1$' "$found" || { echo "$f is not package runlensv1"; exit 1; }
done
echo "docs code generation: passed"
