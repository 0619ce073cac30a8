"""Agents whose clock is off, run for real under `faketime` (scripts/check-clock-skew.sh).

Two kinds of agent, each with its clock shifted by +30 s, -30 s, +1 h and +200 ms: a stock
OpenTelemetry SDK agent (batch span processor, OTLP/gRPC) and one using the runlens Python
package (runlens.v1 session). Against one `runlens serve`:

- each agent's estimated offset is stored in `clients` (near its shift), and in
  /metrics as runlens_client_clock_offset_seconds;
- the three shifts beyond the matching window are warned about once each, flagged
  skewed, named by `runlens doctor`, and their boundaries get no snapshot once the
  estimate is trusted; the +200 ms agents get no warning and their spans are matched;
- a second sidecar with --clock-skew-correction matches the last spans of a -30 s and a
  +1 h agent to the sample nearest their corrected times.

Usage: check_clock_skew.py RUNLENS_BIN            (the check)
       check_clock_skew.py agent KIND NAME ADDR   (one agent; run under faketime)
"""

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

S = 1_000_000_000
WINDOW_NS = 2 * S  # twice --sample-interval 1s
SECONDS = 8.0  # each agent works this long: the estimate is trusted after ~5 s
SHIFTS = {"plus30s": ("+30s", 30 * S), "minus30s": ("-30s", -30 * S),
          "plus1h": ("+1h", 3600 * S), "plus200ms": ("+0.2s", S // 5)}
KINDS = ("otel", "runlens")


def fail(message):
    print(f"FAIL: {message}")
    sys.exit(1)


# ---- the agents ----------------------------------------------------------------------

def otel_agent(name, addr):
    """A stock OpenTelemetry agent: one root span with a child every ~250 ms."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=f"http://{addr}", insecure=True)))
    tracer = provider.get_tracer("clock-skew-check")
    end = time.monotonic() + SECONDS
    i = 0
    while time.monotonic() < end:
        i += 1
        with tracer.start_as_current_span(f"task-{i}"):
            with tracer.start_as_current_span("step"):
                time.sleep(0.2)
        # Each task exported as it ends: under faketime the batch processor's own timer
        # does not fire (libfaketime and timed condition waits), so it would send once.
        provider.force_flush()
        time.sleep(0.05)
    provider.shutdown()


def runlens_agent(name, addr):
    """An agent on the runlens package: one run with a span every ~250 ms."""
    import runlens

    client = runlens.configure(addr, name=name, linger_ms=50)
    end = time.monotonic() + SECONDS
    i = 0
    while time.monotonic() < end:
        i += 1
        with runlens.run(f"task-{i}"):
            with runlens.span("step"):
                time.sleep(0.2)
        # Sent as each task ends: under faketime the client's linger timer does not fire
        # (libfaketime and timed condition waits), so it would send once, at exit.
        runlens.flush(timeout=5)
        time.sleep(0.05)
    if not runlens.flush(timeout=30):
        print(f"{name}: not acknowledged ({client.last_error})", file=sys.stderr)
        sys.exit(1)


# ---- the check -----------------------------------------------------------------------

def serve(runlens, work, db, *extra):
    """Starts `runlens serve`; returns (process, runlens.v1 addr, OTLP gRPC addr, metrics)."""
    out = open(os.path.join(work, "serve.out"), "w")
    err = open(os.path.join(work, "serve.err"), "w")
    proc = subprocess.Popen(
        [runlens, "serve", "--listen", "127.0.0.1:0", "--db", db, "--sample-interval", "1s",
         "--otlp-grpc-listen", "127.0.0.1:0", "--otlp-http-listen", "off",
         "--metrics-listen", "127.0.0.1:0", "--nvml-lib", "none", *extra],
        stdout=out, stderr=err)
    for _ in range(100):
        text = open(out.name).read()
        if "listening on" in text:
            line = text.splitlines()[0]
            addr = line.split("listening on ")[1].split()[0]
            grpc = line.split("OTLP: gRPC ")[1].split(",")[0].split()[0]
            metrics = line.split("; metrics ")[1].split()[0].rstrip(",;)")
            return proc, addr, grpc, metrics
        time.sleep(0.1)
    proc.kill()
    fail("runlens serve did not start: " + open(err.name).read())


def stop(proc, work):
    proc.send_signal(2)
    proc.wait(timeout=30)
    return open(os.path.join(work, "serve.err")).read()


def run_agents(agents, addr, grpc):
    """Runs (kind, shift) agents at once, each under faketime; returns their names."""
    procs = []
    for kind, shift in agents:
        name = f"{kind}-{shift}"
        target = grpc if kind == "otel" else addr
        procs.append((name, subprocess.Popen(
            ["faketime", "-f", SHIFTS[shift][0], sys.executable, __file__, "agent", kind, name,
             target], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    for name, p in procs:
        out, _ = p.communicate(timeout=120)
        if p.returncode != 0:
            fail(f"agent {name} exited {p.returncode}:\n{out}")
    return [name for name, _ in procs]


def client_id(conn, name):
    row = conn.execute("SELECT client_id FROM clients WHERE client_name = ?", (name,)).fetchone()
    if row is None:
        fail(f"no clients row for {name}")
    return row[0]


def span_ends(conn, cid):
    """(end, end sample's time) of a client's spans, oldest first."""
    return conn.execute(
        "SELECT p.ended_at_ns, s.taken_at_ns FROM spans p JOIN runs r USING (run_id) "
        "LEFT JOIN snapshots s ON s.snapshot_id = p.end_snapshot_id "
        "WHERE r.client_id = ? AND p.ended_at_ns IS NOT NULL ORDER BY p.ended_at_ns",
        (cid,)).fetchall()


def check_default(runlens):
    work = tempfile.mkdtemp()
    db = os.path.join(work, "skew.db")
    proc, addr, grpc, metrics_addr = serve(runlens, work, db)
    try:
        names = run_agents([(k, s) for k in KINDS for s in SHIFTS], addr, grpc)
        time.sleep(1.5)  # the last exports committed, the estimates stored
        metrics = urllib.request.urlopen(f"http://{metrics_addr}/metrics").read().decode()
    finally:
        log = stop(proc, work)
    conn = sqlite3.connect(db)
    for name in names:
        shift = name.split("-", 1)[1]
        want = SHIFTS[shift][1]
        cid = client_id(conn, name)
        offset, skewed = conn.execute(
            "SELECT clock_offset_ns, clock_skewed FROM clients WHERE client_id = ?",
            (cid,)).fetchone()
        if offset is None:
            fail(f"{name}: no clock estimate stored")
        # A lower bound, late by the quickest delivery (an export as each task ends),
        # and faketime's shift starts when the interpreter does.
        if not -0.6 * S <= offset - want <= 0.3 * S:
            fail(f"{name}: estimated {offset / S:+.3f}s, shifted {want / S:+.3f}s")
        beyond = abs(want) > WINDOW_NS
        if bool(skewed) != beyond:
            fail(f"{name}: clock_skewed={skewed}, offset {offset / S:+.3f}s")
        series = [l for l in metrics.splitlines()
                  if l.startswith("runlens_client_clock_offset_seconds{") and
                  f'client_id="{cid}"' in l]
        if not series or abs(float(series[0].rsplit(" ", 1)[1]) - offset / S) > 0.2:
            fail(f"{name}: gauge {series} for an estimate of {offset / S:+.3f}s")
        warned = [l for l in log.splitlines() if "clock runs" in l and cid in l]
        if len(warned) != (1 if beyond else 0):
            fail(f"{name}: {len(warned)} clock warnings: {warned}")
        ends = span_ends(conn, cid)
        if len(ends) < 20:
            fail(f"{name}: only {len(ends)} spans stored")
        if beyond:
            # Once trusted (the last few), never a sample: none exists at its times or it
            # would be another moment's.
            if any(sample is not None for _, sample in ends[-5:]):
                fail(f"{name}: skewed spans got samples: {ends[-5:]}")
        elif not all(s is not None and abs(s - e) <= WINDOW_NS for e, s in ends):
            fail(f"{name}: spans within the window left unmatched: {ends}")
        print(f"ok: {name}: estimated {offset / S:+.3f}s, skewed={bool(skewed)}, "
              f"{len(ends)} spans, warned {len(warned)}x")
    doctor = subprocess.run([runlens, "doctor", "--no-gpu", "--nvml-lib", "none",
                             "--format", "json", "--db", db], capture_output=True, text=True)
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    clocks = checks.get("clocks") or fail(f"doctor has no clocks check: {doctor.stdout}")
    if clocks["status"] != "warn":
        fail(f"doctor clocks: {clocks}")
    for name in names:
        if ("plus200ms" in name) == (name in clocks["detail"]):
            fail(f"doctor clocks detail and {name}: {clocks['detail']}")
    print(f"ok: doctor: {clocks['detail']}")


def check_correction(runlens):
    work = tempfile.mkdtemp()
    db = os.path.join(work, "corrected.db")
    proc, addr, grpc, _ = serve(runlens, work, db, "--clock-skew-correction")
    try:
        names = run_agents([("otel", "minus30s"), ("runlens", "plus1h")], addr, grpc)
        time.sleep(1.5)
    finally:
        stop(proc, work)
    conn = sqlite3.connect(db)
    for name in names:
        cid = client_id(conn, name)
        (offset,) = conn.execute("SELECT clock_offset_ns FROM clients WHERE client_id = ?",
                                 (cid,)).fetchone()
        ends = span_ends(conn, cid)
        for end, sample in ends[-5:]:
            if sample is None or abs(sample - (end - offset)) > WINDOW_NS:
                fail(f"{name}: end {end}, corrected {end - offset}, sample {sample}")
        print(f"ok: {name} with --clock-skew-correction: the last spans matched at "
              f"their corrected times ({offset / S:+.3f}s)")


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "agent":
        _, _, kind, name, addr = sys.argv
        (otel_agent if kind == "otel" else runlens_agent)(name, addr)
        return
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    check_default(sys.argv[1])
    check_correction(sys.argv[1])
    print("clock skew check: passed")


if __name__ == "__main__":
    main()
