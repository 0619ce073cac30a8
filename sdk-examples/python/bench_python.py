"""Spans per second from one Python process: the seed's in-process emitter (psutil at each
span boundary, JSON lines appended to a file) against the runlens package (spans streamed
to a real sidecar, stored durably in SQLite with snapshots, every one acknowledged).

Usage: bench_python.py [--spans N] | --rate R [--seconds S]   (starts its own `runlens serve`; see tests/sidecar.py)
"""

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "tests"))

import runlens  # noqa: E402  (the installed package)
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


def runlens_package(n: int, addr: str, db: str, before: int) -> tuple[float, float]:
    """Spans through the package's implicit API (`runlens.span()` nesting under the current
    run); returns (spans/s recorded, spans/s until acknowledged). `before` spans are
    already stored from earlier rounds."""
    client = runlens.configure(addr, name="bench", flush_at_exit=0)
    start = time.perf_counter()
    with runlens.run("bench"):
        for i in range(n):
            with runlens.span("llm_call", i=i):
                pass
        recorded = time.perf_counter() - start
    if not runlens.flush(timeout=120):
        raise SystemExit(f"not acknowledged: {client.unacknowledged} ({client.last_error})")
    durable = time.perf_counter() - start
    stored = sqlite3.connect(db).execute(
        "select count(*) from spans where status = 'ok' and start_snapshot_id is not null "
        "and end_snapshot_id is not null").fetchone()[0]
    if stored != before + n:
        raise SystemExit(f"stored {stored - before} spans, expected {n}")
    return n / recorded, n / durable


def at_rate(addr: str, rate: int, seconds: float) -> tuple[float, int]:
    """The agent shape at a steady rate: a run of three spans (plan, llm_call with fresh
    snapshots, tool_call) every 3/rate s. Returns (CPU µs of this process per span, all
    threads, the sender included; spans)."""
    client = runlens.configure(addr, name="bench-rate", flush_at_exit=0)
    spans, start = 0, time.monotonic()
    cpu = time.process_time()
    while time.monotonic() - start < seconds:
        due = start + spans / rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        with runlens.run("task"):
            with runlens.span("plan"):
                with runlens.span("llm_call", fresh_snapshot=True):
                    runlens.metric("gen_ai.usage.output_tokens", 5)
                with runlens.span("tool_call"):
                    pass
        spans += 3
    if not runlens.flush(timeout=60):
        raise SystemExit(f"not acknowledged: {client.unacknowledged} ({client.last_error})")
    return (time.process_time() - cpu) * 1e6 / spans, spans


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spans", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians printed")
    p.add_argument("--rate", type=int, default=0,
                   help="instead: spans/s of the agent shape for --seconds (twice), CPU per "
                        "span of this process")
    p.add_argument("--seconds", type=float, default=10)
    args = p.parse_args()
    if args.rate:
        with Sidecar(interval="1s") as s:
            for _ in range(2):
                us, n = at_rate(s.addr, args.rate, args.seconds)
                print(f"{args.rate} spans/s of the agent shape: {us:7.1f} µs CPU per span "
                      f"(this process, all threads; {n} spans)")
        return
    seeds, recs, durs = [], [], []
    with tempfile.TemporaryDirectory() as d, Sidecar(interval="1s") as s:
        for r in range(args.rounds):
            seeds.append(seed_emitter(args.spans, os.path.join(d, "events.jsonl")))
            rec, dur = runlens_package(args.spans, s.addr, s.db, r * args.spans)
            recs.append(rec)
            durs.append(dur)
    seed, recorded, durable = (statistics.median(v) for v in (seeds, recs, durs))
    rounds = lambda v: ", ".join(f"{x:,.0f}" for x in v)  # noqa: E731
    print(f"binary: {RUNLENS}; {args.spans} spans a round, {args.rounds} rounds (medians)")
    print(f"seed psutil + JSON-lines emitter: {seed:10,.0f} spans/s (no database, no query; "
          f"{rounds(seeds)})")
    print(f"runlens package, recording:       {recorded:10,.0f} spans/s ({rounds(recs)})")
    print(f"runlens package, until durable:   {durable:10,.0f} spans/s "
          f"(stored in SQLite with snapshots, every span verified; {rounds(durs)})")
    print(f"ratio (until durable / seed):     {durable / seed:10.2f}x")


if __name__ == "__main__":
    main()
