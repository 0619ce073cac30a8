#!/usr/bin/env bash
# Regenerates the book's pictures from the real thing: `runlens top` as text, captured
# from tmux by scripts/check-top.sh while the example agent works against the fake 4-GPU
# machine, and the HTML report as a headless Chromium screenshot by
# scripts/check-report-html.sh. Writes docs/src/images/{top.txt,report.png}; commit them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build -p runlens-sidecar -p runlens-fake-nvml -p example-agent
scripts/check-top.sh >/dev/null
scripts/check-report-html.sh >/dev/null
mkdir -p docs/src/images
# The screen once a run failed with GPU 0 nearly full (marked likely OOM).
sed -e 's/[[:space:]]*$//' target/top-check/oom.txt >docs/src/images/top.txt
cp target/report-check/report.png docs/src/images/report.png
echo "written: docs/src/images/top.txt, docs/src/images/report.png"
