#!/usr/bin/env bash
# CI check: `runlens top` driven through tmux as a person would (send-keys, capture-pane),
# against a sidecar playing the fake NVML's 4-GPU machine while the example agent works:
# the screen shows the four GPUs with the scenario's figures, the agent's run and its
# current step; after GPU 0's free memory drops and a run fails, the failure is marked
# likely OOM; `?` shows the keys, `p` pauses; `q` quits with the terminal restored.
# Installs Debian's tmux if missing. Leaves the captures in target/top-check/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin_dir=${RUNLENS_BIN_DIR:-$root/target/debug}
out=$root/target/top-check
rm -rf "$out"; mkdir -p "$out"

if ! command -v tmux >/dev/null 2>&1; then
  echo "== installing tmux (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq tmux >/dev/null
fi

# shellcheck source=lib/serve.sh
. "$root/scripts/lib/serve.sh"
scenario=$out/scenario.json
cp "$root/crates/fake-nvml/scenarios/demo-4gpu.json" "$scenario"
export RUNLENS_FAKE_NVML_SCENARIO=$scenario
RUNLENS_BIN=$bin_dir/runlens
serve_start "$out" --listen 127.0.0.1:0 --db "$out/top.db" --sample-interval 200ms \
  --nvml-lib "$bin_dir/librunlens_fake_nvml.so" \
  --otlp-grpc-listen off --otlp-http-listen off --metrics-listen off
endpoint=http://$addr
session=runlens-top-check-$$
agent_pid=""
cleanup() {
  tmux kill-session -t "$session" 2>/dev/null || true
  [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null || true
  kill "$pid" 2>/dev/null || true
}
trap cleanup EXIT

fail() { echo "FAIL: $*"; echo "--- last screen:"; cat "$out/screen.txt" 2>/dev/null; exit 1; }
capture() { tmux capture-pane -p -t "$session" >"$out/screen.txt"; cp "$out/screen.txt" "$out/$1.txt"; }
# Waits until the screen shows $2 (a fixed string), up to 15 s.
wait_for() {
  for _ in $(seq 75); do
    capture "$1"
    grep -qF -- "$2" "$out/screen.txt" && return 0
    sleep 0.2
  done
  fail "the screen never showed \"$2\" ($1)"
}

# The agent: slow steps so a run is always open; every third run fails.
"$bin_dir/example-agent" --endpoint "$endpoint" --runs 400 --step-ms 150 >"$out/agent.log" 2>&1 &
agent_pid=$!

tmux new-session -d -s "$session" -x 100 -y 34 \
  "printf 'before-top\n'; '$bin_dir/runlens' top --endpoint '$endpoint' --interval 200ms; echo TOP-EXITED:\$?; sleep 60"
# Each looked for until it shows: a capture can catch the screen half redrawn (the first
# GPU drawn, the rest not yet), as it did once in CI.
for expected in "0 H100 80GB HBM3" "1 H100 80GB HBM3" "2 A100-SXM4-40GB" "3 GeForce RTX 4090" \
                "56.0 GiB/79.6 GiB" "512/700 W" "held: sw_power_cap" "mem bw 91%" "example-agent"; do
  wait_for gpus "$expected"
done
wait_for run "answer-question"
grep -qE "· (plan|llm_call|tool_call) [0-9.]+s" "$out/screen.txt" || wait_for step "· llm_call"
echo "top shows the GPUs, the agent and its run with the current step"

# GPU 0 nearly full: the next failed run is likely OOM.
python3 - "$scenario" <<'PY'
import json, os, sys
path = sys.argv[1]
s = json.load(open(path))
d = s["devices"][0]
d["memory_used_bytes"] = d["memory_total_bytes"] - d.get("memory_reserved_bytes", 0) - 100 * 2**20
tmp = path + ".tmp"
json.dump(s, open(tmp, "w"))
os.replace(tmp, path)
PY
wait_for oom "[likely OOM"
echo "a failure while GPU 0 had 100 MiB free is marked likely OOM"

tmux send-keys -t "$session" '?'
wait_for help "pause / resume updates"
tmux send-keys -t "$session" 'x'
tmux send-keys -t "$session" 'p'
wait_for paused "PAUSED"
tmux send-keys -t "$session" 'p'
resumed=""
for _ in $(seq 25); do
  sleep 0.2; capture resumed
  grep -qF "PAUSED" "$out/screen.txt" || { resumed=yes; break; }
done
[ -n "$resumed" ] || fail "p did not resume"
echo "? shows the keys, p pauses and resumes"

tmux send-keys -t "$session" 'q'
wait_for quit "TOP-EXITED:0"
grep -qF "before-top" "$out/screen.txt" || fail "the screen before top was not restored"
grep -qF "Work in progress" "$out/screen.txt" && fail "top's screen left behind after q"
echo "q quits with exit 0 and the terminal restored"
echo "top check: passed (captures in target/top-check/)"
