"""Drives a runlens sidecar from Python with nothing but stubs generated from proto/.

Usage: stub_smoke.py HOST:PORT DB_PATH
Exercises the unary calls (each answers with the snapshot it attached), a bad request
(INVALID_ARGUMENT), and the session stream (acknowledged ingest), then checks the rows in
the SQLite database. Exits non-zero with a message on any mismatch.
"""

import sqlite3
import sys

import grpc
from runlens.v1 import runlens_pb2 as pb  # the stubs, as the installed package ships them
from runlens.v1 import runlens_pb2_grpc as rpc


def check(cond, what):
    if not cond:
        sys.exit(f"stub_smoke: FAILED: {what}")
    print(f"ok  {what}")


def main():
    addr, db = sys.argv[1], sys.argv[2]
    channel = grpc.insecure_channel(addr)
    grpc.channel_ready_future(channel).result(timeout=10)
    stub = rpc.RunlensStub(channel)

    # Unary calls: the simplest way in.
    started = stub.StartRun(pb.StartRunRequest(run_id="py-run-1", name="python-task",
                                        attributes={"lang": "python"}))
    check(started.snapshot.snapshot_id > 0, "StartRun answers with its stored snapshot")
    check(started.snapshot.host.ram_total_bytes > 0, "snapshot carries host RAM")
    stub.StartSpan(pb.StartSpanRequest(run_id="py-run-1", span_id="py-span-1", name="llm_call",
                                fresh_snapshot=True))
    stub.RecordMetric(pb.Metric(run_id="py-run-1", span_id="py-span-1",
                                name="gen_ai.usage.output_tokens", value=42, unit="{token}"))
    stub.EndSpan(pb.EndSpanRequest(span_id="py-span-1", status=pb.END_STATUS_FAILED,
                            error="rate limited"))
    stub.EndRun(pb.EndRunRequest(run_id="py-run-1", status=pb.END_STATUS_FAILED,
                          error="llm_call failed: rate limited"))
    try:
        stub.RecordMetric(pb.Metric(run_id="py-run-1", name="x", value=float("nan")))
        check(False, "NaN metric must be rejected")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.INVALID_ARGUMENT, f"bad input gets {e.code().name}")

    # The session stream: ordered, acknowledged.
    def messages():
        yield pb.ClientMessage(seq=0, hello=pb.SessionHello(client_id="py-client",
                                                            client_name="stub_smoke"))
        yield pb.ClientMessage(seq=1, start_run=pb.StartRunRequest(run_id="py-run-2", name="streamed"))
        yield pb.ClientMessage(seq=2, start_span=pb.StartSpanRequest(run_id="py-run-2",
                                                              span_id="py-span-2", name="plan"))
        yield pb.ClientMessage(seq=3, end_span=pb.EndSpanRequest(span_id="py-span-2",
                                                          status=pb.END_STATUS_OK))
        yield pb.ClientMessage(seq=4, end_run=pb.EndRunRequest(run_id="py-run-2",
                                                        status=pb.END_STATUS_OK))

    acked = 0
    for reply in stub.Session(messages(), timeout=30):
        if reply.HasField("ack"):
            acked = max(acked, reply.ack.committed_seq)
        elif reply.HasField("error"):
            check(False, f"session error: {reply.error.message}")
    check(acked == 4, f"session acknowledged through seq {acked}")

    con = sqlite3.connect(db)
    rows = con.execute("select run_id, status, error from runs order by run_id").fetchall()
    check(rows == [("py-run-1", "failed", "llm_call failed: rate limited"),
                   ("py-run-2", "ok", None)], f"runs stored: {rows}")
    spans = con.execute(
        "select name, status, error, start_snapshot_id is not null, end_snapshot_id is not null "
        "from spans order by span_id").fetchall()
    check(spans == [("llm_call", "failed", "rate limited", 1, 1), ("plan", "ok", None, 1, 1)],
          f"spans stored with snapshots: {spans}")
    value = con.execute("select value from events where name = 'gen_ai.usage.output_tokens'"
                        ).fetchone()
    check(value == (42.0,), "metric stored")
    print("stub_smoke: all checks passed")


if __name__ == "__main__":
    main()
