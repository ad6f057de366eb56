"""Data and the DuckDB side of the distribution benchmark (bench/distribution.sh).

  distribution_bench.py write <dir>    10M rows x 10 columns (deterministic: every value is a
                                       hash of the row number), appended to `bench.wide` with
                                       PyIceberg in 10 appends of 1M rows, then one append of
                                       100k rows (1 %) for the incremental measurement.
  distribution_bench.py duckdb <dir>   times DuckDB computing the same statistics over the
                                       Parquet files of the 10M-row snapshot.
"""

import json
import sys
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
from pyiceberg.catalog.sql import SqlCatalog

ROWS = 10_000_000
CHUNK = 1_000_000
NUMERIC = ["c0", "c1", "c2", "c3", "c4", "c5", "c8", "c9"]
TEXT = ["c6", "c7"]


def catalog(root: Path) -> SqlCatalog:
    return SqlCatalog("default", uri=f"sqlite:///{root / 'catalog.db'}", warehouse=f"file://{root / 'warehouse'}")


def chunk_sql(start: int, rows: int) -> str:
    # Values are functions of the row number only, so every run writes the same table.
    return f"""
        select
            i::bigint as c0,
            ((hash(i) % 1000000) / 1000000.0 + (hash(i + 7) % 1000000) / 1000000.0) * 50.0 as c1,
            case when hash(i + 1) % 50 = 0 then null
                 when hash(i + 1) % 997 = 0 then 'NaN'::double
                 else (hash(i + 2) % 100000) / 100.0 - 300.0 end as c2,
            (hash(i + 3) % 1000)::integer as c3,
            (hash(i + 4) % 100000000)::bigint as c4,
            case when hash(i + 5) % 10 = 0 then 0.0 else (hash(i + 5) % 1000003) / 7.0 end as c5,
            'category_' || (hash(i + 6) % 50)::varchar as c6,
            case when hash(i + 8) % 20 = 0 then null else repeat('x', (hash(i + 8) % 40)::integer) end as c7,
            (hash(i + 9) % 365)::integer as c8,
            (hash(i + 10) % 1000000) / 1000.0 as c9
        from range({start}, {start + rows}) t(i)
    """


def write(root: Path) -> None:
    (root / "warehouse").mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    warehouse = catalog(root)
    warehouse.create_namespace("bench")
    table = None
    for start in range(0, ROWS + CHUNK // 10, CHUNK):
        rows = CHUNK if start < ROWS else CHUNK // 10
        data = con.execute(chunk_sql(start, rows)).to_arrow_table()
        if table is None:
            table = warehouse.create_table("bench.wide", schema=data.schema)
        table.append(data)
        print(f"appended {rows} rows at {start}", file=sys.stderr)


def full_snapshot_files(root: Path) -> list[str]:
    table = catalog(root).load_table("bench.wide")
    snapshots = sorted(table.snapshots(), key=lambda snapshot: snapshot.sequence_number)
    full = snapshots[-2]  # the 10M-row snapshot, before the 1 % append
    files = []
    for manifest in full.manifests(table.io):
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            files.append(entry.data_file.file_path.removeprefix("file://"))
    return files


def time_duckdb(root: Path) -> None:
    files = full_snapshot_files(root)
    source = "read_parquet([" + ", ".join(f"'{path}'" for path in files) + "])"
    parts = ["count(*)"]
    for c in NUMERIC:
        finite = f"{c}::double) filter (where not isnan({c}::double)"
        parts += [
            f"count(*) - count({c})",
            f"count(*) filter (where {c} = 0)",
            f"count(*) filter (where isnan({c}::double))",
            f"avg({finite})",
            f"stddev_samp({finite})",
            f"min({finite})",
            f"max({finite})",
            f"sum({finite})",
            f"approx_count_distinct({c})",
            f"approx_quantile({c}::double, [0.05, 0.5, 0.95]) filter (where not isnan({c}::double))",
        ]
    for c in TEXT:
        parts += [
            f"count(*) - count({c})",
            f"count(*) filter (where {c} = '')",
            f"avg(length({c}))",
            f"max(length({c}))",
            f"approx_count_distinct({c})",
        ]
    query = f"select {', '.join(parts)} from {source}"
    con = duckdb.connect()
    threads = con.execute("select current_setting('threads')").fetchone()[0]
    started = time.perf_counter()
    row = con.execute(query).fetchone()
    elapsed = time.perf_counter() - started
    size = sum(Path(path).stat().st_size for path in files)
    print(json.dumps({"seconds": elapsed, "threads": threads, "files": len(files), "bytes": size, "rows": row[0]}))


if __name__ == "__main__":
    command, root = sys.argv[1], Path(sys.argv[2]).resolve()
    if command == "write":
        write(root)
    elif command == "duckdb":
        time_duckdb(root)
    else:
        sys.exit(f"unknown command {command}")
