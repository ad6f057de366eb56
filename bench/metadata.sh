#!/usr/bin/env bash
# Benchmark of the metadata sensors: one check pass of freshness + volume + schema over
# $TABLES tables (each with $SNAPSHOTS appends) in a local SQL catalog, and the same reads done
# by a peer, PyIceberg, on the same tables.
#
#   bench/metadata.sh                      # 1000 tables x 20 snapshots
#   TABLES=100 SNAPSHOTS=20 bench/metadata.sh
#
# Prints per-table times, peak memory (VmHWM of the example and max RSS from /usr/bin/time -v)
# and the ratio to the peer. The warehouse is written once (iceberg crate, several minutes for
# 1000 tables) into $BENCH_DIR and reused; delete that folder to rewrite it.
set -euo pipefail

cd "$(dirname "$0")/.."
TABLES=${TABLES:-1000}
SNAPSHOTS=${SNAPSHOTS:-20}
CONCURRENCY=${CONCURRENCY:-4}
COUNT_SAMPLE=${COUNT_SAMPLE:-100}
BENCH_DIR=${BENCH_DIR:-/var/tmp/icewatch-bench-metadata-${TABLES}x${SNAPSHOTS}}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/icewatch-release}
VENV=${ICEWATCH_VENV:-$HOME/.cache/icewatch/venv}

cargo build --release --example metadata_bench
mkdir -p "$BENCH_DIR"
TIME_LOG="$BENCH_DIR/time.log"
RESULT="$BENCH_DIR/result.json"
RUST_LOG=${RUST_LOG:-error} /usr/bin/time -v -o "$TIME_LOG" \
    "$CARGO_TARGET_DIR/release/examples/metadata_bench" \
    --dir "$BENCH_DIR" --tables "$TABLES" --snapshots "$SNAPSHOTS" --concurrency "$CONCURRENCY" >"$RESULT"
MAX_RSS_KIB=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$TIME_LOG")

# The peer: PyIceberg loads each table and reads what the three sensors read (snapshot log and
# summaries, schemas), then counts rows by scanning a sample of tables (the `count(*)` way).
"$VENV/bin/python" - "$BENCH_DIR" "$TABLES" "$COUNT_SAMPLE" "$RESULT" "$MAX_RSS_KIB" <<'PY'
import json, resource, sys, time
from pyiceberg.catalog.sql import SqlCatalog

directory, tables, sample, result_path, max_rss_kib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
catalog = SqlCatalog("default", uri=f"sqlite:///{directory}/catalog.db", warehouse=f"file://{directory}/warehouse")
names = [f"bench.t{index:04d}" for index in range(tables)]

started = time.perf_counter()
checked = 0
for name in names:
    table = catalog.load_table(name)
    snapshots = sorted(table.metadata.snapshots, key=lambda snapshot: snapshot.sequence_number)
    data = [s for s in snapshots if s.summary.operation.value != "replace"]
    appends = [int(s.summary.additional_properties.get("added-records", 0)) for s in snapshots if s.summary.operation.value == "append"]
    last_commit_ms = data[-1].timestamp_ms if data else None
    columns = len(table.schema().fields)
    schemas = len(table.metadata.schemas)
    checked += bool(appends) and last_commit_ms is not None and columns > 0 and schemas > 0
metadata_seconds = time.perf_counter() - started

started = time.perf_counter()
rows = 0
for name in names[:sample]:
    rows += catalog.load_table(name).scan().to_arrow().num_rows
count_seconds = time.perf_counter() - started

result = json.loads(open(result_path).read())
peer_metadata_ms = metadata_seconds * 1000 / tables
peer_count_ms = count_seconds * 1000 / max(1, min(sample, tables))
warm, cold = result["warm_ms_per_table"], result["cold_ms_per_table"]
print(f"tables: {tables} x {result['snapshots_per_table']} snapshots, concurrency {result['concurrency']}"
      f" (setup {result['setup_seconds']:.0f} s when written now)")
print(f"icewatch warm pass (history present):   {warm:8.2f} ms/table  ({result['warm_pass_seconds']:.2f} s)")
print(f"icewatch cold pass (backfill history):  {cold:8.2f} ms/table  ({result['cold_pass_seconds']:.2f} s)")
print(f"  sensor time per table (ms, summed over {result['concurrency']} workers): warm {result['warm_sensor_ms_per_table']}, cold {result['cold_sensor_ms_per_table']}")
print(f"statuses: warm {result['warm_statuses']}, cold {result['cold_statuses']}")
print(f"peak memory: VmHWM {result['peak_rss_kib'] / 1024:.0f} MiB, /usr/bin/time max RSS {max_rss_kib / 1024:.0f} MiB")
print(f"peer PyIceberg metadata read:           {peer_metadata_ms:8.2f} ms/table  ({checked} tables read; "
      f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB max RSS)")
print(f"peer PyIceberg count by scan:           {peer_count_ms:8.2f} ms/table  ({min(sample, tables)} tables, {rows} rows)")
print(f"ratio peer metadata / icewatch warm:    {peer_metadata_ms / warm:8.1f}x")
print(f"ratio peer count scan / icewatch warm:  {peer_count_ms / warm:8.1f}x")
print(f"target under 5 ms/table (warm pass):    {'met' if warm < 5 else 'NOT met'}")
PY
