#!/usr/bin/env bash
# CI check: the fleet's Parquet files (`runlens export parquet`) read by the engines fleets
# run - DuckDB, Spark (pyspark in local mode, on Debian's Java 17) and ClickHouse's engine
# (chdb) - with the same row counts as the SQLite file, and the planted step's p95 and
# Spearman rho equal to `runlens report`'s; the same export to an S3 emulator (moto in
# server mode) read back by `runlens report --from s3://...`. See
# scripts/check_fleet_parquet.py. Installs what it needs (pinned in
# scripts/fleet-requirements.txt) into target/fleet-venv; uses target/debug/runlens (built
# if missing) unless RUNLENS_BIN names another binary.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if ! command -v java >/dev/null; then
  echo "== installing Java 17 for Spark (Debian package)"
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq openjdk-17-jre-headless >/dev/null
fi
java -version 2>&1 | head -1

venv=$root/target/fleet-venv
stamp=$venv/.requirements
if ! cmp -s "$root/scripts/fleet-requirements.txt" "$stamp" 2>/dev/null; then
  echo "== installing DuckDB, pyspark, chdb and moto (PyPI, pinned)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/scripts/fleet-requirements.txt"
  cp "$root/scripts/fleet-requirements.txt" "$stamp"
fi
RUNLENS_BIN=${RUNLENS_BIN:-$root/target/debug/runlens}
[ -x "$RUNLENS_BIN" ] || (cd "$root" && cargo build -p runlens-sidecar)
export SPARK_LOCAL_IP=127.0.0.1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$venv/bin/python" "$root/scripts/check_fleet_parquet.py" "$RUNLENS_BIN" "$work"
