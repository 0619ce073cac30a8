#!/usr/bin/env bash
# CI check: `runlens report --format html` is a well-formed, self-contained page whose SVG
# charts load in headless Chromium without errors. Installs Debian's chromium if missing.
# Leaves the page and a screenshot in target/report-check/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${RUNLENS_BIN:-$root/target/debug/runlens}
out=$root/target/report-check
mkdir -p "$out"
rm -f "$out"/history.db* "$out"/report.html "$out"/report.png

if ! command -v chromium >/dev/null 2>&1; then
  echo "== installing chromium (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq chromium >/dev/null
fi

"$bin" bench report --spans 20000 --db "$out/history.db" --build-only
"$bin" report --db "$out/history.db" --format html --out "$out/report.html"

python3 - "$out/report.html" <<'PY'
import sys
from html.parser import HTMLParser

VOID = {"meta", "br", "img", "input", "link", "hr", "polyline", "line", "circle", "rect", "path"}

class Check(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.svgs, self.errors = [], 0, []
    def handle_starttag(self, tag, attrs):
        if tag == "svg":
            self.svgs += 1
        if tag == "script":
            self.errors.append("page has a script")
        for _, value in attrs:
            if value and ("http://" in value or "https://" in value):
                self.errors.append(f"external reference {value}")
        if tag not in VOID:
            self.stack.append(tag)
    def handle_startendtag(self, tag, attrs):
        if tag == "svg":
            self.svgs += 1
    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unbalanced </{tag}> (open: {self.stack[-3:]})")
        else:
            self.stack.pop()

c = Check()
c.feed(open(sys.argv[1], encoding="utf-8").read())
if c.stack:
    c.errors.append(f"unclosed tags: {c.stack}")
if c.svgs < 6:
    c.errors.append(f"only {c.svgs} SVG charts")
if c.errors:
    sys.exit("report.html: " + "; ".join(c.errors[:5]))
print(f"report.html parsed: {c.svgs} SVG charts, tags balanced, no scripts or external references")
PY

flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
  --disable-background-networking --disable-component-update --disable-sync
  --user-data-dir="$out/chromium-profile" --enable-logging=stderr --v=0)
timeout 120 chromium "${flags[@]}" --window-size=1100,2400 --screenshot="$out/report.png" \
  "file://$out/report.html" 2>"$out/chromium.log"
timeout 120 chromium "${flags[@]}" --dump-dom "file://$out/report.html" >"$out/dom.html" 2>>"$out/chromium.log"
if grep -E "CONSOLE.*(Uncaught|Error)|Failed to load resource" "$out/chromium.log"; then
  echo "chromium reported page errors (above)"; exit 1
fi
svgs=$(grep -o "<svg" "$out/dom.html" | wc -l)
[ "$svgs" -ge 6 ] || { echo "chromium's DOM has only $svgs SVG elements"; exit 1; }
# Charts a person can read: axes with units and wall-clock ticks, one legend entry per GPU,
# a tooltip on every run bar and scatter point.
gpus=$("$bin" report --db "$out/history.db" --format json \
  | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["charts"]["gpu_memory"]))')
legend=$(grep -oE 'class="legend-entry"><rect[^>]*/?>(</rect>)?<text[^>]*>GPU [0-9]+ ' "$out/dom.html" | wc -l)
[ "$legend" -eq "$gpus" ] || { echo "legend has $legend GPU entries, the report has $gpus GPUs"; exit 1; }
for unit in "MiB" "load/core" "ms" "time (UTC)" "GPU free at start, MiB"; do
  grep -qF "class=\"axis-label\" x=" "$out/dom.html" && grep -qF ">$unit</text>" "$out/dom.html" \
    || { echo "no axis labelled \"$unit\""; exit 1; }
done
clock=$(grep -oE 'class="tick-label"[^>]*>[0-9]{2}:[0-9]{2}:[0-9]{2}<' "$out/dom.html" | wc -l)
[ "$clock" -ge 9 ] || { echo "only $clock wall-clock tick labels"; exit 1; }
titles=$(grep -o "<title>" "$out/dom.html" | wc -l)
[ "$titles" -ge 100 ] || { echo "only $titles tooltips"; exit 1; }
echo "charts: $gpus GPU legend entries, axes with units, $clock wall-clock ticks, $titles tooltips"
size=$(stat -c %s "$out/report.png")
[ "$size" -gt 20000 ] || { echo "screenshot too small ($size bytes)"; exit 1; }
echo "report html check: passed (chromium loaded it: $svgs SVG charts, screenshot $out/report.png, $size bytes)"
