#!/usr/bin/env bash
# CI check with a real Prometheus (Debian's package, installed here if missing): it scrapes
# a sidecar playing the fake 4-GPU scenario every second; through Prometheus's HTTP API the
# GPU series must equal the scenario's values and the span counters the stored counts;
# `promtool check metrics` must pass on the exposition. Uses target/debug/runlens (built if
# missing) unless RUNLENS_BIN names another binary.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  echo "== installing prometheus (Debian package)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
fi
prometheus --version 2>&1 | head -1

RUNLENS_BIN=${RUNLENS_BIN:-$root/target/debug/runlens}
bindir=$(dirname "$RUNLENS_BIN")
[ -x "$RUNLENS_BIN" ] || (cd "$root" && cargo build -p runlens-sidecar)
[ -f "$bindir/librunlens_fake_nvml.so" ] || (cd "$root" && cargo build -p runlens-fake-nvml)
[ -x "$bindir/example-agent" ] || (cd "$root" && cargo build -p example-agent)
scenario=$root/crates/fake-nvml/scenarios/demo-4gpu.json
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
fail() { echo "FAIL: $1"; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

source "$root/scripts/lib/serve.sh"
RUNLENS_FAKE_NVML_SCENARIO=$scenario serve_start "$work" --listen 127.0.0.1:0 --db "$work/p.db" \
  --sample-interval 1s --nvml-lib "$bindir/librunlens_fake_nvml.so" \
  --otlp-grpc-listen off --otlp-http-listen off --metrics-listen 127.0.0.1:0
pids+=("$pid")
metrics=$(sed -n 's/.*; metrics \([^ ]*\).*/\1/p' "$work/serve.out")
[ -n "$metrics" ] || { cat "$work/serve.err"; fail "runlens serve did not say its metrics address"; }
"$bindir/example-agent" --endpoint "http://$addr" --runs 6 >/dev/null

echo "== promtool check metrics"
curl -sf "http://$metrics/metrics" | promtool check metrics

port=$(free_port)
# The scrape configuration the book shows (docs/src/prometheus.md), with this sidecar's
# address and a 1 s interval so the check is quick.
awk '/^```yaml/{p=1; next} /^```/{p=0} p' "$root/docs/src/prometheus.md" \
  | sed -e "s/127.0.0.1:9464/$metrics/" -e 's/scrape_interval: 15s/scrape_interval: 1s/' \
  >"$work/prometheus.yml"
grep -q "job_name: runlens" "$work/prometheus.yml" || fail "docs/src/prometheus.md shows no scrape configuration"
promtool check config "$work/prometheus.yml" >/dev/null
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$port" >"$work/prometheus.log" 2>&1 &
pids+=($!)
api="http://127.0.0.1:$port/api/v1/query"
query() { curl -sf --get --data-urlencode "query=$1" "$api"; }

echo "== waiting for Prometheus to scrape runlens"
for _ in $(seq 60); do
  if query 'count(hw_gpu_memory_usage_bytes)' 2>/dev/null | grep -q '"4"'; then break; fi
  sleep 0.5
done
query 'count(hw_gpu_memory_usage_bytes)' | grep -q '"4"' || { tail "$work/prometheus.log"; fail "Prometheus did not see 4 GPUs"; }

echo "== GPU series equal the scenario"
query 'hw_gpu_memory_usage_bytes' >"$work/gpu.json"
python3 - "$scenario" "$work/gpu.json" <<'PY'
import json, sys
scenario = json.load(open(sys.argv[1]))["devices"]
result = json.load(open(sys.argv[2]))["data"]["result"]
seen = {r["metric"]["hw_id"]: float(r["value"][1]) for r in result}
for d in scenario:
    got = seen.get(d["uuid"])
    assert got == float(d["memory_used_bytes"]), (d["uuid"], got, d["memory_used_bytes"])
    print(f"ok {d['uuid']} memory used {int(got)}")
PY

echo "== span counters equal the stored counts"
stored=$("$RUNLENS_BIN" query --db "$work/p.db" --format csv "select count(*) from spans where status <> 'running'" | tail -1)
for _ in $(seq 20); do
  scraped=$(query 'sum(runlens_spans_total)' | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(int(float(r[0]["value"][1])) if r else -1)')
  [ "$scraped" = "$stored" ] && break
  sleep 0.5
done
echo "stored $stored, Prometheus sum(runlens_spans_total) $scraped"
[ "$scraped" = "$stored" ] || fail "span counters differ from the database"
echo "prometheus check passed"
