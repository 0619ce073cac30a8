"""Spans per second from one Python process: the seed's in-process emitter (psutil at each
span boundary, JSON lines appended to a file) against the runlens helper (spans streamed
to a real sidecar, stored durably in SQLite with snapshots, every one acknowledged).

Usage: bench_python.py [--spans N]   (starts its own `runlens serve`; see tests/sidecar.py)
"""

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "tests"))

from runlens import Client  # noqa: E402
from sidecar import RUNLENS, Sidecar  # noqa: E402


def seed_emitter(n: int, path: str) -> float:
    """The seed's approach: emit() appends a JSON line; CPU and RAM from psutil at each
    span start and end. Returns spans per second."""
    with open(path, "a") as out:
        def emit(kind, **fields):
            out.write(json.dumps({"ts": time.time(), "kind": kind, **fields}) + "\n")

        def system_metrics():
            mem = psutil.virtual_memory()
            return {"cpu_load_1m": psutil.getloadavg()[0], "ram_used_mb": mem.used / 2**20,
                    "ram_free_mb": mem.available / 2**20}

        start = time.perf_counter()
        for i in range(n):
            emit("span_start", name="llm_call", span=i, **system_metrics())
            emit("span_end", name="llm_call", span=i, status="ok", **system_metrics())
        out.flush()
        return n / (time.perf_counter() - start)


def runlens_helper(n: int, addr: str, db: str) -> tuple[float, float]:
    """Spans through the helper; returns (spans/s recorded, spans/s until acknowledged)."""
    client = Client(addr, flush_at_exit=0)
    run = client.run("bench")
    start = time.perf_counter()
    for i in range(n):
        with run.span("llm_call", i=i):
            pass
    recorded = time.perf_counter() - start
    run.end()
    if not client.flush(timeout=120):
        raise SystemExit(f"not acknowledged: {client.unacknowledged} ({client.last_error})")
    durable = time.perf_counter() - start
    stored = sqlite3.connect(db).execute(
        "select count(*) from spans where status = 'ok' and start_snapshot_id is not null "
        "and end_snapshot_id is not null").fetchone()[0]
    if stored != n:
        raise SystemExit(f"stored {stored} spans, expected {n}")
    client.close()
    return n / recorded, n / durable


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spans", type=int, default=20000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        seed = seed_emitter(args.spans, os.path.join(d, "events.jsonl"))
        with Sidecar(interval="1s") as s:
            recorded, durable = runlens_helper(args.spans, s.addr, s.db)
    print(f"binary: {RUNLENS}")
    print(f"seed psutil + JSON-lines emitter: {seed:10,.0f} spans/s (no database, no query)")
    print(f"runlens helper, recording:        {recorded:10,.0f} spans/s")
    print(f"runlens helper, until durable:    {durable:10,.0f} spans/s "
          f"(stored in SQLite with snapshots, every span verified)")
    print(f"ratio (until durable / seed):     {durable / seed:10.2f}x")


if __name__ == "__main__":
    main()
