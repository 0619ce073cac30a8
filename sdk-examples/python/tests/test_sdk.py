"""The package's implicit API against a real `runlens serve`: nesting through contextvars in
asyncio tasks and threads, decorators on sync and async functions, flushing without
blocking the event loop, and the default client from the environment."""

import asyncio
import concurrent.futures
import os
import sqlite3
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import runlens  # noqa: E402  (the installed package: check.sh installs it)
from sidecar import Sidecar  # noqa: E402


def rows(db, sql):
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def tree(db):
    """{run name: sorted [(span name, parent span name or None, status, error)]}."""
    out = {}
    for run, name, parent, status, error in rows(db, """
            select r.name, s.name, p.name, s.status, s.error from spans s
            join runs r on r.run_id = s.run_id
            left join spans p on p.span_id = s.parent_span_id"""):
        out.setdefault(run, []).append((name, parent, status, error))
    return {run: sorted(spans, key=str) for run, spans in out.items()}


class Nesting(unittest.TestCase):
    def setUp(self):
        self.sidecar = Sidecar()
        self.client = runlens.configure(self.sidecar.addr, name="sdk-test", flush_at_exit=0)

    def tearDown(self):
        self.client.close()
        self.sidecar.__exit__(None, None, None)

    def test_interleaved_asyncio_runs_each_keep_their_own_spans(self):
        async def task(i):
            with runlens.run(f"task-{i}") as run:
                with runlens.span("plan"):
                    await asyncio.sleep(0.01 * (3 - i))
                    with runlens.span("llm_call", fresh_snapshot=True) as llm:
                        await asyncio.sleep(0.01 * i)
                        self.assertIs(runlens.current(), llm)
                        self.assertEqual(llm.run_id, run.id)
                    await asyncio.sleep(0.005)
                    async with runlens.span("tool_call"):
                        await asyncio.sleep(0.001)

        async def main():
            await asyncio.gather(*(task(i) for i in range(3)))
            self.assertIsNone(runlens.current())
            self.assertTrue(await runlens.aflush(timeout=20))

        asyncio.run(main())
        got = tree(self.sidecar.db)
        self.assertEqual(sorted(got), ["task-0", "task-1", "task-2"])
        for run in got.values():
            self.assertEqual(run, [("llm_call", "plan", "ok", None),
                                   ("plan", None, "ok", None),
                                   ("tool_call", "plan", "ok", None)])

    def test_threads_in_a_pool_keep_their_own_current_span(self):
        def work(i):
            with runlens.run(f"thread-{i}"):
                for step in range(5):
                    with runlens.span("step", i=step):
                        time.sleep(0.002)      # the other threads run meanwhile
                        with runlens.span("inner"):
                            pass
            return i

        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            self.assertEqual(sorted(pool.map(work, range(8))), list(range(8)))
        self.assertTrue(runlens.flush(timeout=20))
        # Every inner span's parent is a step of the same run, every step is top-level.
        self.assertEqual(rows(self.sidecar.db, """
            select count(*) from spans c join spans p on p.span_id = c.parent_span_id
            where c.name = 'inner' and p.name = 'step' and p.run_id = c.run_id"""), [(40,)])
        self.assertEqual(rows(self.sidecar.db, """
            select count(*) from spans where name = 'step' and parent_span_id is null"""),
            [(40,)])
        self.assertEqual(rows(self.sidecar.db, "select count(*) from runs"), [(8,)])

    def test_decorators_on_sync_and_async_functions_fail_with_the_exception(self):
        @runlens.traced("tool_call", tool="search")
        def search(fail):
            if fail:
                raise TimeoutError("search timed out")
            return "found"

        @runlens.traced
        async def think(fail):
            await asyncio.sleep(0.001)
            if fail:
                raise ValueError("no idea")
            return search(False)

        with runlens.run("sync"):
            self.assertEqual(search(False), "found")
            with self.assertRaises(TimeoutError):
                search(True)

        async def main():
            with runlens.run("async"):
                self.assertEqual(await think(False), "found")
                with self.assertRaises(ValueError):
                    await think(True)
            return await runlens.aflush(timeout=20)

        self.assertTrue(asyncio.run(main()))
        got = tree(self.sidecar.db)
        self.assertEqual(got["sync"], [
            ("tool_call", None, "failed", "TimeoutError: search timed out"),
            ("tool_call", None, "ok", None)])
        qual = think.__qualname__
        self.assertEqual(got["async"], sorted([
            (qual, None, "failed", "ValueError: no idea"),
            (qual, None, "ok", None),
            ("tool_call", qual, "ok", None)], key=str))
        self.assertEqual(rows(self.sidecar.db, """
            select distinct json_extract(attributes, '$.tool') from spans
            where name = 'tool_call'"""), [("search",)])
        self.assertEqual(think.__name__, "think", "functools.wraps keeps the name")

    def test_a_span_outside_any_run_opens_a_run_and_metrics_need_a_current(self):
        self.assertFalse(runlens.metric("orphan", 1))
        with runlens.span("lonely") as lonely:
            self.assertIsInstance(lonely, runlens.Run)
            self.assertTrue(runlens.metric("tokens", 7))
        self.assertTrue(runlens.flush(timeout=20))
        self.assertEqual(rows(self.sidecar.db, "select name, status from runs"),
                         [("lonely", "ok")])
        self.assertEqual(rows(self.sidecar.db, "select name, value from events"),
                         [("tokens", 7.0)])

    def test_aflush_does_not_block_the_event_loop(self):
        async def main():
            ticks = 0

            async def ticker():
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.001)

            beat = asyncio.create_task(ticker())
            with runlens.run("many"):
                for i in range(3000):
                    runlens.metric("m", i)
            done = await runlens.aflush(timeout=20)
            beat.cancel()
            return done, ticks

        done, ticks = asyncio.run(main())
        self.assertTrue(done)
        self.assertGreater(ticks, 0, "the loop ran other tasks while aflush waited")
        self.assertEqual(rows(self.sidecar.db, "select count(*) from events"), [(3000,)])

    def test_aflush_times_out_without_losing_anything(self):
        # A client pointed at nothing: aflush gives up after its timeout, the data stays.
        lost = runlens.Client("127.0.0.1:9", flush_at_exit=0)

        async def main():
            with lost.run("waiting"):
                pass
            start = time.monotonic()
            ok = await lost.aflush(timeout=0.3)
            return ok, time.monotonic() - start

        ok, took = asyncio.run(main())
        self.assertFalse(ok)
        self.assertLess(took, 5)
        self.assertEqual(lost.unacknowledged, 2)
        with self.assertWarns(RuntimeWarning):
            lost.close(0.1)


class DefaultClient(unittest.TestCase):
    def test_five_lines_with_runlens_endpoint_record_nested_runs_and_flush_at_exit(self):
        # The README's quick start, in a fresh interpreter: no configure(), no flush():
        # the endpoint comes from RUNLENS_ENDPOINT and the exit flushes.
        script = (
            "import runlens\n"
            "with runlens.run('answer-question', model='llama-3-8b'):\n"
            "    with runlens.span('llm_call', fresh_snapshot=True) as llm:\n"
            "        llm.metric('gen_ai.usage.output_tokens', 512, unit='{token}')\n")
        with Sidecar() as s:
            out = subprocess.run(
                [os.environ.get("RUNLENS_PYTHON", sys.executable), "-c", script],
                capture_output=True, text=True, timeout=60,
                env={**os.environ, "RUNLENS_ENDPOINT": "http://" + s.addr,
                     "RUNLENS_CLIENT_NAME": "five-lines",
                     "NVIDIA_VISIBLE_DEVICES": "GPU-8f3c"})
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertEqual(out.stderr, "")
            self.assertEqual(tree(s.db), {"answer-question": [("llm_call", None, "ok", None)]})
            self.assertEqual(rows(s.db, "select client_name, nvidia_visible_devices "
                                        "from clients"), [("five-lines", "GPU-8f3c")])


class Token(unittest.TestCase):
    """A sidecar started with --token-file stores only what carries its token."""

    TOKEN = "py-token-0123456789abcdef"

    def test_token_option_and_environment(self):
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            token_file = os.path.join(tmp, "token")
            with open(token_file, "w") as f:
                f.write(self.TOKEN + "\n")
            with Sidecar(extra=("--token-file", token_file)) as s:
                good = runlens.Client(s.addr, name="with-token", token=self.TOKEN,
                                      flush_at_exit=0)
                with good.run("guarded"):
                    pass
                self.assertTrue(good.flush(10))
                good.close()
                wrong = runlens.Client(s.addr, name="wrong-token", token="x" * 24,
                                       flush_at_exit=0)
                with wrong.run("refused"):
                    pass
                self.assertFalse(wrong.flush(2), "never acknowledged")
                self.assertIn("bearer token", wrong.last_error)
                with self.assertWarns(RuntimeWarning):
                    wrong.close(0.1)
                # The default client takes RUNLENS_TOKEN, as a deployment would set it.
                code = ("import runlens\n"
                        "with runlens.run('from-env'):\n    pass\n"
                        "assert runlens.flush(10)\n")
                out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                     text=True, timeout=60,
                                     env={**os.environ, "RUNLENS_ENDPOINT": s.addr,
                                          "RUNLENS_TOKEN": self.TOKEN})
                self.assertEqual(out.returncode, 0, out.stderr)
                self.assertEqual(sorted(r[0] for r in rows(s.db, "select name from runs")),
                                 ["from-env", "guarded"])


class Tls(unittest.TestCase):
    """An https:// endpoint with the CA file: a self-signed certificate made by openssl."""

    def test_https_endpoint_with_a_ca_file(self):
        import shutil
        import tempfile
        if shutil.which("openssl") is None:
            self.skipTest("no openssl to make a certificate")
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key,
                            "-out", cert, "-days", "1", "-subj", "/CN=localhost",
                            "-addext", "subjectAltName=DNS:localhost"],
                           check=True, capture_output=True)
            with Sidecar(extra=("--tls-cert", cert, "--tls-key", key)) as s:
                port = s.addr.rsplit(":", 1)[1]
                client = runlens.Client(f"https://localhost:{port}", name="tls", ca_file=cert,
                                        flush_at_exit=0)
                with client.run("encrypted"):
                    pass
                self.assertTrue(client.flush(10), client.last_error)
                client.close()
                # Without the CA, the certificate is not trusted and nothing is stored.
                stranger = runlens.Client(f"https://localhost:{port}", name="no-ca",
                                          flush_at_exit=0)
                with stranger.run("refused"):
                    pass
                self.assertFalse(stranger.flush(2))
                with self.assertWarns(RuntimeWarning):
                    stranger.close(0.1)
                self.assertEqual(rows(s.db, "select name from runs"), [("encrypted",)])


if __name__ == "__main__":
    unittest.main(verbosity=2)
