#!/usr/bin/env bash
# CI check: the documentation book (docs/) builds with mdBook (installed here, pinned, into
# target/tools if missing), and the commands the README and the book show run as written:
# the README's serve command (after scripts/build-image.sh built the release binary), the
# example agents in Rust and Python against it, the fake NVML snapshot, `cargo install`.
# The rest of the docs is checked by tests/tests/docs.rs (SQL, Rust, every `runlens`
# command's arguments, links) and sdk-examples/python/tests/test_docs.py (Python blocks).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
MDBOOK_VERSION=0.4.52
tools=$root/target/tools
if ! "$tools/bin/mdbook" --version 2>/dev/null | grep -q "v$MDBOOK_VERSION"; then
  echo "== installing mdbook $MDBOOK_VERSION (crates.io) into target/tools"
  cargo install --quiet --locked mdbook --version "$MDBOOK_VERSION" \
    --no-default-features --features search --root "$tools"
fi
echo "== mdbook build docs"
"$tools/bin/mdbook" build docs
[ -f target/book/index.html ] && [ -f target/book/sql.html ] || { echo "the book was not built"; exit 1; }

work=$(mktemp -d)
serve_pid=""
trap '[ -n "$serve_pid" ] && kill $serve_pid 2>/dev/null; rm -rf "$work"' EXIT
export RUNLENS_DB=$work/docs.db RUNLENS_NVML_LIB=none
echo "== the README's serve command, as written"
cargo build --release -p runlens-sidecar   # done already in CI (the image); the run starts at once
cargo run --release -p runlens-sidecar -- serve >"$work/serve.out" 2>"$work/serve.err" &
serve_pid=$!
# (cargo may still compile first: wait while it runs, up to 10 minutes)
for _ in $(seq 3000); do
  grep -q "listening on" "$work/serve.out" 2>/dev/null && break
  kill -0 $serve_pid 2>/dev/null || break
  sleep 0.2
done
grep -q "listening on 127.0.0.1:50551" "$work/serve.out" || { cat "$work/serve.err"; exit 1; }

echo "== the book's example agents against it"
cargo run -p example-agent -- --endpoint http://127.0.0.1:50551 --runs 5
(
  cd "$work"
  ln -s "$root/sdk-examples" sdk-examples
  python3 -m venv .venv && .venv/bin/pip install --quiet ./sdk-examples/python
  .venv/bin/python sdk-examples/python/example_agent.py --endpoint 127.0.0.1:50551 --runs 5
)
rm -rf "$root/sdk-examples/python/build" "$root"/sdk-examples/python/src/*.egg-info
target/release/runlens query "select name, status, duration_ns, delta_ram_used_bytes from span_resources limit 5"
kill -INT $serve_pid; wait $serve_pid; serve_pid=""

echo "== the fake NVML's snapshot, as written"
cargo build --release -p runlens-fake-nvml
RUNLENS_FAKE_NVML_SCENARIO=crates/fake-nvml/scenarios/demo-4gpu.json \
  target/release/runlens snapshot --nvml-lib target/release/librunlens_fake_nvml.so | grep -q "H100"

echo "== cargo install, as written (into a scratch root, reusing the release build)"
CARGO_TARGET_DIR=$root/target CARGO_INSTALL_ROOT=$work/install \
  cargo install --locked --path crates/sidecar --quiet
"$work/install/bin/runlens" --version
echo "docs check: passed"
