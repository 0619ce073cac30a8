"""The fleet's Parquet files read by the engines fleets run, against the SQLite file.

Run by scripts/check-fleet-parquet.sh with the environment it makes:
  check_fleet_parquet.py RUNLENS_BIN WORKDIR

1. A synthetic history with a planted effect (llm_call slower when GPU memory is short)
   is exported with `runlens export parquet`.
2. DuckDB reads every table by glob with hive partitioning: row counts equal the SQLite
   file's, every `source` is the pod, and llm_call's p95 and Spearman's rho against GPU
   free memory at span start equal `runlens report`'s.
3. Spark (pyspark, local mode) and ClickHouse's engine (chdb) read the same files and
   count the same rows.
4. The same export to an S3 emulator (moto in server mode): the objects follow the layout
   and `runlens report --from s3://...` is `runlens report --db`'s JSON.
"""

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time

RUNLENS, WORK = sys.argv[1], sys.argv[2]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHAPTER = os.path.join(ROOT, "docs/src/fleet.md")
DB = os.path.join(WORK, "history.db")
OUT = os.path.join(WORK, "fleet")  # the chapter's examples read ./fleet
POD = "agent-pod-0"
TABLES = ["runs", "spans", "snapshots", "gpu_samples"]
FAILURES = []


def check(ok, what):
    print(("PASS " if ok else "FAIL ") + what, flush=True)
    if not ok:
        FAILURES.append(what)


def runlens(*args, env=None):
    done = subprocess.run(
        [RUNLENS, *args], capture_output=True, text=True, env=env, timeout=300
    )
    if done.returncode != 0:
        sys.exit(f"runlens {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def report(*args, env=None):
    data = json.loads(runlens("report", "--format", "json", *args, env=env))
    data.pop("generated_at_ns", None)
    return data


def sqlite_counts():
    conn = sqlite3.connect(f"file:{DB}?mode=ro", uri=True)
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def glob(table, root=OUT):
    return f"{root}/{table}/*/*/*.parquet"


def chapter_block(info):
    """The ```info block of docs/src/fleet.md, as the book shows it."""
    with open(CHAPTER) as f:
        blocks = re.findall(r"^```" + info + r"\n(.*?)^```", f.read(), re.S | re.M)
    assert len(blocks) == 1, f"one {info} block in the fleet chapter, found {len(blocks)}"
    return blocks[0]


def duckdb_checks(expected, from_db):
    import duckdb

    con = duckdb.connect()
    for table in TABLES:
        n = con.execute(
            f"SELECT count(*) FROM read_parquet('{glob(table)}', hive_partitioning = true)"
        ).fetchone()[0]
        check(n == expected[table], f"DuckDB: {table} has {n} rows, SQLite {expected[table]}")
    sources = con.execute(
        f"SELECT DISTINCT source FROM read_parquet('{glob('spans')}', hive_partitioning = true)"
    ).fetchall()
    check(sources == [(POD,)], f"DuckDB: the source partition is the pod ({sources})")
    kind = con.execute(
        f"SELECT typeof(started_at_ns) FROM read_parquet('{glob('spans')}') LIMIT 1"
    ).fetchone()[0]
    check(kind.startswith("TIMESTAMP"), f"DuckDB: span times are timestamps ({kind})")
    # The book's query (```duckdb in docs/src/fleet.md), as shown, from ./fleet.
    rows = con.execute(chapter_block("duckdb")).fetchall()
    llm = [r for r in rows if r[1] == "llm_call"]
    p95 = next(x for x in from_db["latency"] if x["name"] == "llm_call")["p95_ms"]
    check(
        len(llm) == 1 and llm[0][0] == POD and abs(llm[0][3] - p95) < 1e-6 and llm[0][4] < 0,
        f"DuckDB: the book's query runs ({len(rows)} rows; llm_call {llm[:1]})",
    )

    # llm_call's p95 (nearest rank) and Spearman's rho (Pearson's r of average ranks)
    # against the tightest GPU's free memory at span start, as the report computes them.
    spans = f"read_parquet('{glob('spans')}', hive_partitioning = true)"
    p95_ns = con.execute(
        f"""
        WITH s AS (SELECT duration_ns FROM {spans}
                   WHERE name = 'llm_call' AND ended_at_ns IS NOT NULL),
             ranked AS (SELECT duration_ns, row_number() OVER (ORDER BY duration_ns) AS k,
                               count(*) OVER () AS n FROM s)
        SELECT duration_ns FROM ranked WHERE k = greatest(ceil(n * 0.95), 1)
        """
    ).fetchone()[0]
    rho = con.execute(
        f"""
        WITH s AS (SELECT duration_ns AS d, start_gpu_memory_free_min_bytes AS f FROM {spans}
                   WHERE name = 'llm_call' AND ended_at_ns IS NOT NULL
                     AND start_gpu_memory_free_min_bytes IS NOT NULL),
             r AS (SELECT (rank() OVER (ORDER BY d) + count(*) OVER (PARTITION BY d) * 0.5 - 0.5)
                              AS rd,
                          (rank() OVER (ORDER BY f) + count(*) OVER (PARTITION BY f) * 0.5 - 0.5)
                              AS rf
                   FROM s)
        SELECT corr(rd, rf) FROM r
        """
    ).fetchone()[0]
    latency = next(x for x in from_db["latency"] if x["name"] == "llm_call")
    correlation = next(
        x
        for x in from_db["correlations"]
        if x["name"] == "llm_call" and x["resource"] == "gpu_free_memory"
    )
    check(
        abs(p95_ns / 1e6 - latency["p95_ms"]) < 1e-6,
        f"DuckDB: llm_call p95 {p95_ns / 1e6:.3f} ms, report {latency['p95_ms']:.3f} ms",
    )
    check(
        abs(rho - correlation["rho"]) < 1e-9 and correlation["rho"] < -0.3,
        f"DuckDB: llm_call rho vs GPU free {rho:.6f}, report {correlation['rho']:.6f}",
    )


def spark_checks(expected):
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[1]")
        .appName("runlens-fleet-check")
        .config("spark.ui.enabled", "false")
        # Spark reads Parquet's TIMESTAMP(NANOS) only as longs (nanoseconds since 1970).
        .config("spark.sql.legacy.parquet.nanosAsLong", "true")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    try:
        for table in TABLES:
            frame = spark.read.option("basePath", f"{OUT}/{table}").parquet(f"{OUT}/{table}")
            n = frame.count()
            check(n == expected[table], f"Spark: {table} has {n} rows, SQLite {expected[table]}")
        spans = spark.read.parquet(f"{OUT}/spans")
        pods = [r[0] for r in spans.select("source").distinct().collect()]
        check(pods == [POD], f"Spark: the source partition is the pod ({pods})")
        # The book's snippet (```pyspark in docs/src/fleet.md), as shown, from ./fleet.
        scope = {"SparkSession": SparkSession}
        exec(chapter_block("pyspark"), scope)
        check(scope["spans"].count() == expected["spans"], "Spark: the book's snippet runs")
    finally:
        spark.stop()


def chdb_checks(expected):
    import chdb

    for table in TABLES:
        out = chdb.query(
            f"SELECT count() FROM file('{glob(table)}', Parquet)", "CSV"
        ).bytes().decode().strip()
        check(int(out) == expected[table], f"ClickHouse (chdb): {table} has {out} rows")
    out = chdb.query(
        f"SELECT DISTINCT source FROM file('{glob('spans')}', Parquet) "
        "SETTINGS use_hive_partitioning = 1",
        "CSV",
    ).bytes().decode().strip()
    check(out == f'"{POD}"', f"ClickHouse (chdb): the source partition is the pod ({out})")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def s3_checks(from_db):
    import boto3

    port = free_port()
    server = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "moto_server"), "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        credentials = dict(aws_access_key_id="test", aws_secret_access_key="test")
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **credentials)
        s3.create_bucket(Bucket="fleet")
        env = dict(
            os.environ,
            AWS_ACCESS_KEY_ID="test",
            AWS_SECRET_ACCESS_KEY="test",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ENDPOINT=endpoint,
            AWS_ALLOW_HTTP="true",
        )
        runlens("export", "parquet", "--db", DB, "--out", "s3://fleet/prod", "--source", POD, env=env)
        keys = [
            o["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket="fleet")
            for o in page.get("Contents", [])
        ]
        laid_out = all(
            k.startswith("prod/") and f"/source={POD}/" in k and k.endswith(".parquet")
            for k in keys
        )
        check(laid_out and len(keys) >= 4, f"S3 emulator: {len(keys)} objects in the layout")
        from_s3 = report("--from", "s3://fleet/prod", env=env)
        check(from_s3 == from_db, "S3 emulator: report --from s3:// is report --db's JSON")
    finally:
        server.terminate()
        server.wait(timeout=10)


def main():
    os.chdir(WORK)
    runlens("bench", "report", "--spans", "20000", "--db", DB)
    summary = runlens("export", "parquet", "--db", DB, "--out", OUT, "--source", POD)
    print(summary.strip().splitlines()[-1], flush=True)
    expected = sqlite_counts()
    from_db = report("--db", DB)
    check(report("--from", OUT) == from_db, "report --from DIR is report --db's JSON")
    duckdb_checks(expected, from_db)
    chdb_checks(expected)
    spark_checks(expected)
    s3_checks(from_db)
    if FAILURES:
        sys.exit(f"{len(FAILURES)} check(s) failed")
    print("fleet Parquet: every engine read what the database holds")


main()
