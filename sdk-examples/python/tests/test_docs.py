"""The Python blocks of the README and the documentation book (docs/src), run as written
against a real sidecar: the runlens package's quick start, the asyncio example, and the
plain OpenTelemetry agent (configured the OpenTelemetry way, by environment, as the book's
`export OTEL_…` lines say)."""

import os
import pathlib
import re
import sqlite3
import subprocess
import sys
import unittest

from sidecar import Sidecar

ROOT = pathlib.Path(__file__).resolve().parents[3]


def python_blocks():
    """(document, block) for every ```python block of the README and the book."""
    docs = [ROOT / "README.md"] + sorted((ROOT / "docs" / "src").glob("*.md"))
    out = []
    for path in docs:
        for block in re.findall(r"^```python\n(.*?)^```", path.read_text(), re.S | re.M):
            out.append((path.relative_to(ROOT), block))
    return out


# What a block leaves for its caller to do (it defines an agent's functions).
EPILOGUE = {
    "async def answer(question)": "\nimport asyncio\nasyncio.run(answer('why is the sky blue?'))\n",
}


def run_block(block, sidecar):
    script = block + "".join(tail for marker, tail in EPILOGUE.items() if marker in block)
    return subprocess.run(
        # This interpreter: the package and the OpenTelemetry SDK are both installed here.
        [sys.executable, "-c", script],
        capture_output=True, text=True, timeout=60,
        env={**os.environ,
             "RUNLENS_ENDPOINT": "http://" + sidecar.addr,
             "OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + sidecar.otlp_grpc,
             "OTEL_SERVICE_NAME": "support-agent"})


class DocsPythonBlocks(unittest.TestCase):
    def test_every_python_block_runs_and_records_its_runs(self):
        blocks = python_blocks()
        self.assertGreaterEqual(len(blocks), 4, blocks)
        # The same block may be shown twice (README and book): each is run once.
        seen = set()
        for path, block in blocks:
            if block in seen:
                continue
            seen.add(block)
            with self.subTest(document=str(path)), \
                    Sidecar(extra=("--otlp-grpc-listen", "127.0.0.1:0")) as s:
                out = run_block(block, s)
                self.assertEqual(out.returncode, 0, out.stderr)
                s.stop()
                runs = sqlite3.connect(s.db).execute(
                    "select count(*) from runs where status != 'running'").fetchone()[0]
                self.assertGreaterEqual(runs, 1, f"{path}: no run recorded\n{block}")
        self.assertGreaterEqual(len(seen), 3, "the quick start, asyncio, OpenTelemetry")


if __name__ == "__main__":
    unittest.main()
