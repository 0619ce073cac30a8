#!/usr/bin/env bash
# Real-GPU check of the GPU performance figures (NVML's GPM, Hopper and newer), for a
# machine with an NVIDIA GPU and Python with torch: a tensor-heavy phase (large fp16
# matmuls) must show tensor activity well above a bandwidth-heavy phase (large
# device-to-device copies), and the copies must show memory bandwidth well above the
# matmuls. On a GPU without GPM it says SKIP and checks that the columns stay NULL.
#
# Usage: scripts/gpu-perf-check.sh [DIR]   DIR holds `runlens` (default: target/release).
# Prints PASS/FAIL/SKIP/INFO lines; not run by CI (no GPU there).
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
D=${1:-$root/target/release}
W=$(mktemp -d)
PORT=${PORT:-50997}
"$D/runlens" serve --listen 127.0.0.1:$PORT --db "$W/p.db" --sample-interval 200ms \
  --otlp-grpc-listen off --otlp-http-listen off --metrics-listen off >"$W/serve.log" 2>&1 &
SP=$!
sleep 2
python3 - "$W/phases.txt" <<'PY'
import sys, time, torch
out = open(sys.argv[1], "w")
def phase(name, seconds, work):
    torch.cuda.synchronize()
    start = time.time_ns()
    while time.time_ns() - start < seconds * 1e9:
        work()
    torch.cuda.synchronize()
    out.write(f"{name} {start} {time.time_ns()}\n")
    out.flush()
a = torch.randn(8192, 8192, device="cuda:0", dtype=torch.float16)
b = torch.randn(8192, 8192, device="cuda:0", dtype=torch.float16)
src = torch.empty(4 * 1024**3, dtype=torch.uint8, device="cuda:0")
dst = torch.empty_like(src)
time.sleep(1.0)
phase("tensor", 5, lambda: torch.matmul(a, b))
time.sleep(0.5)
phase("bandwidth", 5, lambda: dst.copy_(src))
PY
kill -INT $SP; wait $SP 2>/dev/null

python3 - "$W/p.db" "$W/phases.txt" <<'PY'
import sqlite3, sys
db, phases = sys.argv[1], sys.argv[2]
con = sqlite3.connect(db)
ok = True
def check(cond, msg):
    global ok
    print(("PASS " if cond else "FAIL ") + msg)
    ok &= bool(cond)
measured = con.execute(
    "select count(*) from gpu_samples where gpu_index = 0 and gpm_interval_seconds is not null"
).fetchone()[0]
if measured == 0:
    name = con.execute("select name from gpu_samples where gpu_index = 0 limit 1").fetchone()
    print(f"SKIP GPU 0 ({name[0] if name else '?'}) has no GPU performance monitoring (Hopper or newer needed)")
    nulls = con.execute(
        "select count(*) from gpu_samples where sm_active_ratio is not null or dram_bandwidth_ratio is not null"
    ).fetchone()[0]
    check(nulls == 0, "without GPM every performance column is NULL")
    sys.exit(0 if ok else 1)
figures = {}
for line in open(phases):
    name, start, end = line.split()
    # Samples whose interval lies inside the phase: taken after start + one interval.
    row = con.execute(
        """select avg(tensor_active_ratio), avg(dram_bandwidth_ratio), avg(sm_active_ratio), count(*)
           from gpu_samples g join snapshots s using (snapshot_id)
           where g.gpu_index = 0 and s.taken_at_ns > ? + 250000000 and s.taken_at_ns <= ?""",
        (int(start), int(end)),
    ).fetchone()
    figures[name] = row
    print(f"INFO {name} phase: tensor {row[0]:.2f}, memory bandwidth {row[1]:.2f}, SM active {row[2]:.2f} over {row[3]} samples")
t, b = figures["tensor"], figures["bandwidth"]
check(t[3] >= 10 and b[3] >= 10, f"samples in both phases ({t[3]}, {b[3]})")
check(t[0] > b[0] + 0.2, f"fp16 matmuls show tensor activity {t[0]:.2f} well above the copies' {b[0]:.2f}")
check(b[1] > t[1] + 0.2, f"copies show memory bandwidth {b[1]:.2f} well above the matmuls' {t[1]:.2f}")
sys.exit(0 if ok else 1)
PY
rc=$?
[ $rc -eq 0 ] && echo "ALL PASS" || echo "FAILED (log: $W/serve.log)"
exit $rc
