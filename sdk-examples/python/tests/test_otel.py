"""A plain OpenTelemetry SDK agent (otel_agent.py, pinned opentelemetry-sdk and OTLP
exporters) pointed at runlens over gRPC and over HTTP: the trace becomes a run with nested
spans, token metrics, the failure's text, and the samples taken at each span's own start
and end."""

import os
import sqlite3
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from sidecar import Sidecar  # noqa: E402

AGENT = os.path.join(os.path.dirname(HERE), "otel_agent.py")
INTERVAL_NS = 100_000_000  # the sidecar samples every 100 ms


def rows(db, sql, *args):
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


class OtelAgent(unittest.TestCase):
    def run_agent(self, protocol, endpoint, service, headers=None):
        env = {**os.environ,
               "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{endpoint}",
               "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
               "OTEL_SERVICE_NAME": service,
               "OTEL_BSP_SCHEDULE_DELAY": "200"}
        if headers:
            env["OTEL_EXPORTER_OTLP_HEADERS"] = headers
        out = subprocess.run([sys.executable, AGENT, "--tasks", "4"], env=env,
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)

    def check(self, db, service):
        runs = rows(db, "SELECT run_id, name, status FROM runs WHERE client_id LIKE ?",
                    f"otlp/{service}/%")
        self.assertEqual(len(runs), 4, runs)
        self.assertTrue(all(r[1] == "invoke_agent support" and r[2] == "ok" for r in runs), runs)
        # Nested: the LLM and tool spans hang under the run's root span.
        nested = rows(db, """SELECT count(*) FROM spans c JOIN spans p ON p.span_id = c.parent_span_id
                             JOIN runs r ON r.run_id = c.run_id
                             WHERE r.client_id LIKE ? AND p.parent_span_id IS NULL""",
                      f"otlp/{service}/%")[0][0]
        self.assertEqual(nested, 8)
        # Tokens sum in SQL.
        tokens = rows(db, """SELECT sum(value) FROM events e JOIN runs r USING (run_id)
                             WHERE r.client_id LIKE ? AND e.name = 'gen_ai.usage.output_tokens'""",
                      f"otlp/{service}/%")[0][0]
        self.assertEqual(tokens, 200 + 201 + 202 + 203)
        # Failures with the exception's text.
        failed = rows(db, """SELECT s.error FROM spans s JOIN runs r USING (run_id)
                             WHERE r.client_id LIKE ? AND s.status = 'failed'""",
                      f"otlp/{service}/%")
        self.assertEqual(len(failed), 2)
        self.assertTrue(all("TimeoutError" in e[0] and "100 ms" in e[0] for e in failed), failed)
        # The machine at each span's own start and end, within one sampling interval,
        # though the SDK sent them later in a batch.
        gaps = rows(db, """SELECT s.started_at_ns - a.taken_at_ns, s.ended_at_ns - b.taken_at_ns
                           FROM spans s JOIN runs r USING (run_id)
                           JOIN snapshots a ON a.snapshot_id = s.start_snapshot_id
                           JOIN snapshots b ON b.snapshot_id = s.end_snapshot_id
                           WHERE r.client_id LIKE ?""", f"otlp/{service}/%")
        self.assertEqual(len(gaps), 12, "every span has both samples")
        for start_gap, end_gap in gaps:
            self.assertLessEqual(abs(start_gap), INTERVAL_NS)
            self.assertLessEqual(abs(end_gap), INTERVAL_NS)
        # The agent's process (process.pid) was watched like a session client's.
        pid = rows(db, "SELECT pid FROM clients WHERE client_id LIKE ?", f"otlp/{service}/%")[0][0]
        self.assertGreater(pid, 0)

    def test_over_grpc_and_over_http(self):
        with Sidecar(extra=("--otlp-grpc-listen", "127.0.0.1:0",
                            "--otlp-http-listen", "127.0.0.1:0")) as s:
            self.assertIsNotNone(s.otlp_grpc)
            self.assertIsNotNone(s.otlp_http)
            self.run_agent("grpc", s.otlp_grpc, "py-grpc-agent")
            self.run_agent("http/protobuf", s.otlp_http, "py-http-agent")
            self.check(s.db, "py-grpc-agent")
            self.check(s.db, "py-http-agent")

    def test_the_standard_headers_variable_carries_the_token(self):
        token = "otel-token-0123456789abcdef"
        with tempfile.TemporaryDirectory() as tmp:
            token_file = os.path.join(tmp, "token")
            with open(token_file, "w") as f:
                f.write(token + "\n")
            with Sidecar(extra=("--otlp-grpc-listen", "127.0.0.1:0",
                                "--otlp-http-listen", "127.0.0.1:0",
                                "--token-file", token_file)) as s:
                # The SDK's header syntax: key=value, the value URL-encoded.
                headers = f"authorization=Bearer%20{token}"
                self.run_agent("grpc", s.otlp_grpc, "py-grpc-token", headers)
                self.run_agent("http/protobuf", s.otlp_http, "py-http-token", headers)
                self.check(s.db, "py-grpc-token")
                self.check(s.db, "py-http-token")
                # Without it, the SDK's exports are refused and nothing is stored.
                self.run_agent("http/protobuf", s.otlp_http, "py-no-token")
                self.assertEqual(rows(s.db, "SELECT count(*) FROM runs WHERE client_id LIKE ?",
                                      "otlp/py-no-token/%")[0][0], 0)


if __name__ == "__main__":
    unittest.main()
