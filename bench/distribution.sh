#!/usr/bin/env bash
# Distribution-sensor benchmark: a 10M-row, 10-column Iceberg table (deterministic, written by
# PyIceberg), profiled by icewatch (release build) and by DuckDB over the same Parquet files.
# Prints both times, their ratio, icewatch's peak memory (max RSS from /usr/bin/time -v) and
# the cost of an incremental pass over a 1 % append against a full-table pass.
#
#   bench/distribution.sh [data dir]      (default /var/tmp/icewatch-bench-distribution)
#
# The release build of this stack takes 20+ minutes on 2 cores; it goes to its own target dir.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA="${1:-/var/tmp/icewatch-bench-distribution}"
PYTHON="${ICEWATCH_VENV:-$HOME/.cache/icewatch/venv}/bin/python"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/icewatch-release}"

if [[ ! -f "$DATA/catalog.db" ]]; then
    mkdir -p "$DATA"
    echo "writing the 10M-row table to $DATA ..." >&2
    "$PYTHON" tests/python/distribution_bench.py write "$DATA"
fi

cargo build --release --example profile_bench >&2
BIN="$CARGO_TARGET_DIR/release/examples/profile_bench"

# Warm the page cache so neither side pays for the first read from disk.
cat "$DATA"/warehouse/bench/wide/data/* > /dev/null

TIMES="$(mktemp)"
trap 'rm -f "$TIMES"' EXIT
ICEWATCH_OUT="$(/usr/bin/time -v -o "$TIMES" "$BIN" "$DATA")"
DUCKDB_OUT="$("$PYTHON" tests/python/distribution_bench.py duckdb "$DATA")"
RSS_KB="$(awk -F': ' '/Maximum resident set size/ {print $2}' "$TIMES")"

"$PYTHON" - "$ICEWATCH_OUT" "$DUCKDB_OUT" "$RSS_KB" <<'PY'
import json, sys
passes = {p["pass"]: p for p in map(json.loads, sys.argv[1].splitlines())}
duckdb = json.loads(sys.argv[2])
rss_mib = int(sys.argv[3]) / 1024
full, incremental, after = passes["full_table_10m"], passes["incremental_1pct_append"], passes["full_table_after_append"]
print(f"rows profiled:          {full['rows']:,} ({full['files']} files, {full['scanned_bytes'] / 2**20:.0f} MiB read, {full['values']} statistics)")
print(f"icewatch full pass:     {full['seconds']:.2f} s")
print(f"duckdb same statistics: {duckdb['seconds']:.2f} s ({duckdb['threads']} threads)")
print(f"icewatch / duckdb:      {full['seconds'] / duckdb['seconds']:.2f}")
print(f"icewatch peak memory:   {rss_mib:.0f} MiB (max RSS, all three passes)")
print(f"incremental 1 % append: {incremental['seconds']:.3f} s, {incremental['scanned_rows']:,} rows, {incremental['scanned_bytes'] / 2**20:.1f} MiB read")
print(f"full pass after append: {after['seconds']:.2f} s, {after['scanned_rows']:,} rows, {after['scanned_bytes'] / 2**20:.0f} MiB read")
print(f"incremental / full:     {100 * incremental['seconds'] / after['seconds']:.1f} % of the time, "
      f"{100 * incremental['scanned_bytes'] / after['scanned_bytes']:.1f} % of the bytes, "
      f"{100 * incremental['scanned_rows'] / after['scanned_rows']:.1f} % of the rows")
PY
