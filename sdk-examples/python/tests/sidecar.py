"""Starts and stops a real `runlens serve` for the Python tests."""

import os
import re
import signal
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
RUNLENS = os.environ.get("RUNLENS_BIN", os.path.join(ROOT, "target", "debug", "runlens"))
FAKE_NVML = os.path.join(os.path.dirname(RUNLENS), "librunlens_fake_nvml.so")
DEMO_SCENARIO = os.path.join(ROOT, "crates", "fake-nvml", "scenarios", "demo-4gpu.json")


class Sidecar:
    """A sidecar on a free port (or `listen`) with its own database."""

    def __init__(self, db=None, listen="127.0.0.1:0", interval="100ms", extra=(), env=None):
        self._dir = None
        if db is None:
            self._dir = tempfile.TemporaryDirectory()
            db = os.path.join(self._dir.name, "runlens.db")
        self.db = db
        # Several sidecars may run at once: OTLP only where a test asks for it.
        otlp = [arg for flag in ("--otlp-grpc-listen", "--otlp-http-listen", "--metrics-listen")
                if flag not in extra for arg in (flag, "off")]
        self.proc = subprocess.Popen(
            [RUNLENS, "serve", "--listen", listen, "--db", db, "--sample-interval", interval,
             *otlp, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={**os.environ, "RUNLENS_NVML_LIB": "none",
                 **(env or {})})
        line = self.proc.stdout.readline()
        if "listening on " not in line:
            raise RuntimeError(f"runlens serve did not start: {line!r}")
        self.addr = line.split("listening on ")[1].split()[0]
        # "... OTLP: gRPC 127.0.0.1:4317, HTTP off; metrics 127.0.0.1:9464"
        found = re.search(r"OTLP: gRPC (\S+), HTTP ([^;\s]+)(?:; metrics (\S+))?", line)
        addr = lambda i: None if not found or found.group(i) in (None, "off") else found.group(i)
        self.otlp_grpc, self.otlp_http, self.metrics = addr(1), addr(2), addr(3)

    def stop(self, sig=signal.SIGINT):
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=20)
        self.proc.stdout.close()
        return code

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.stop()
        if self._dir:
            self._dir.cleanup()
        return False
