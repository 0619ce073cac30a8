#!/usr/bin/env bash
# Real-GPU check of per-agent GPU attribution, for a machine with an NVIDIA GPU and Python
# with torch: an agent (example-agent) whose child process (python + torch) holds 2 GiB on
# GPU 0. Expects the agent's rows in process_gpu_samples when NVML's PIDs are visible here
# (same PID namespace), and the report to take GPU 0 as the agent's either way (from the
# processes, else from the agent's CUDA_VISIBLE_DEVICES).
#
# Usage: scripts/gpu-agent-check.sh [DIR]   DIR holds `runlens` and `example-agent`
# (default: target/release). Prints PASS/FAIL/INFO lines; not run by CI (no GPU there).
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
D=${1:-$root/target/release}
W=$(mktemp -d)
PORT=50998
"$D/runlens" serve --listen 127.0.0.1:$PORT --db "$W/a.db" --sample-interval 200ms --otlp-grpc-listen off --otlp-http-listen off --metrics-listen off >"$W/serve.log" 2>&1 &
SP=$!
sleep 2
cat >"$W/alloc.py" <<'PY'
import time, torch
x = torch.empty(2 * 1024**3, dtype=torch.uint8, device="cuda:0")
x.fill_(1)
torch.cuda.synchronize()
print("allocated", flush=True)
time.sleep(45)
PY
uuid=$(nvidia-smi --query-gpu=uuid --format=csv,noheader -i 0)
# sh forks python, then becomes the agent (exec keeps its PID): python is the agent's child.
CUDA_VISIBLE_DEVICES=$uuid sh -c "python3 '$W/alloc.py' >'$W/alloc.log' 2>&1 & \
  for i in \$(seq 60); do grep -q allocated '$W/alloc.log' 2>/dev/null && break; sleep 0.5; done; \
  exec '$D/example-agent' --endpoint http://127.0.0.1:$PORT --runs 15 --step-ms 200" >"$W/agent.log" 2>&1
echo "INFO agent exit $? ; alloc: $(tail -1 "$W/alloc.log")"
kill -INT $SP; wait $SP
q() { "$D/runlens" query --db "$W/a.db" --format csv "$1" | tail -n +2; }
echo "INFO gpu_processes pids: $(q 'SELECT group_concat(DISTINCT pid) FROM gpu_processes')"
echo "INFO agent pids: $(q 'SELECT group_concat(DISTINCT pid) FROM process_samples')"
per_gpu=$(q "SELECT max(used_memory_bytes) FROM process_gpu_samples WHERE gpu_index = 0")
echo "INFO process_gpu_samples GPU 0 max bytes: ${per_gpu:-none}"
if [ -n "$per_gpu" ] && [ "$per_gpu" != "" ] && [ "$per_gpu" -ge $((2 * 1024 * 1024 * 1024)) ] 2>/dev/null; then
  echo "PASS the agent's child's 2 GiB on GPU 0 counts for the agent"
else
  echo "INFO no per-agent GPU rows: NVML's PIDs are not this namespace's (see doctor)"
fi
"$D/runlens" report --db "$W/a.db" --format json >"$W/r.json"
python3 - "$W/r.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ok = r["agent_gpus"] == [0] and r["agent_gpus_from"] in ("processes", "cuda_visible_devices")
print(("PASS" if ok else "FAIL"), "report agent_gpus", r["agent_gpus"], "from", r["agent_gpus_from"])
PY
"$D/runlens" doctor 2>&1 | grep -A2 "gpu pids" | head -3
pkill -f alloc.py 2>/dev/null; true
