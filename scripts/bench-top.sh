#!/usr/bin/env bash
# Benchmark: what `runlens top` costs. A sidecar plays the fake 4-GPU machine (1 s
# samples, no agents); its CPU is measured over SECONDS with no watcher, then with N
# `runlens top` screens open (in tmux, refreshing every second), alternately ROUNDS
# times. Prints the sidecar's CPU per watcher and each top's own CPU, as shares of a core.
#
# Usage: scripts/bench-top.sh [SECONDS=60] [N=10] [ROUNDS=2]   (release build)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}; n=${2:-10}; rounds=${3:-2}
bin=$root/target/release
out=$(mktemp -d)
export RUNLENS_FAKE_NVML_SCENARIO=$out/scenario.json
cp "$root/crates/fake-nvml/scenarios/demo-4gpu.json" "$RUNLENS_FAKE_NVML_SCENARIO"
RUNLENS_BIN=$bin/runlens
# shellcheck source=lib/serve.sh
. "$root/scripts/lib/serve.sh"
serve_start "$out" --listen 127.0.0.1:0 --db "$out/b.db" --nvml-lib "$bin/librunlens_fake_nvml.so" \
  --otlp-grpc-listen off --otlp-http-listen off --metrics-listen off
cleanup() { for i in $(seq "$n"); do tmux kill-session -t "bench-top-$i" 2>/dev/null || true; done; kill "$pid" 2>/dev/null || true; }
trap cleanup EXIT
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime, in ticks
share() { awk -v d="$1" -v s="$seconds" -v t="$ticks" 'BEGIN { printf "%.3f", 100 * d / t / s }'; }
sleep 3
for round in $(seq "$rounds"); do
  a=$(cpu "$pid"); sleep "$seconds"; b=$(cpu "$pid")
  idle=$((b - a))
  for i in $(seq "$n"); do
    tmux new-session -d -s "bench-top-$i" -x 100 -y 34 "$bin/runlens top --endpoint http://$addr --interval 1s"
  done
  sleep 3
  pids=$(pgrep -f "^$bin/runlens top --endpoint http://$addr" || true)
  a=$(cpu "$pid"); declare -A t0; for p in $pids; do t0[$p]=$(cpu "$p"); done
  sleep "$seconds"
  b=$(cpu "$pid"); watched=$((b - a)); tops=0
  for p in $pids; do tops=$((tops + $(cpu "$p") - ${t0[$p]})); done
  count=$(echo "$pids" | wc -w)
  for i in $(seq "$n"); do tmux kill-session -t "bench-top-$i"; done
  per_watcher=$(awk -v w="$watched" -v i="$idle" -v n="$count" 'BEGIN { print (w - i) / n }')
  per_top=$(awk -v t="$tops" -v n="$count" 'BEGIN { print t / n }')
  echo "round $round: sidecar idle $(share "$idle")% of a core; with $count top screens $(share "$watched")%;" \
       "per watcher $(share "$per_watcher")%; each top itself $(share "$per_top")% (${seconds} s windows)"
  sleep 2
done
