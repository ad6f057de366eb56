"""Independent statistics for the distribution sensor's test: DuckDB over the Parquet files
each snapshot of `db.events` added (found through PyIceberg's manifests).

Usage: distribution_expected.py <dir>   (the directory distribution_write.py wrote)

Prints JSON {snapshot_id: {"files": n, "columns": {column: {statistic: value}}}}. Numeric
statistics ignore nulls and NaN; percentages are of all rows; lengths are in characters;
quantiles are DuckDB's quantile_cont (linear interpolation).
"""

import json
import math
import sys
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.manifest import ManifestEntryStatus

NUMERIC = ["id", "amount", "qty", 'we"ird col']
QUANTILES = {"p01": 0.01, "p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95, "p99": 0.99}


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def added_files(table, snapshot) -> list[str]:
    files = []
    for manifest in snapshot.manifests(table.io):
        if manifest.added_snapshot_id != snapshot.snapshot_id:
            continue
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            if entry.status == ManifestEntryStatus.ADDED and entry.snapshot_id == snapshot.snapshot_id:
                files.append(entry.data_file.file_path.removeprefix("file://"))
    return files


def numeric(con, source: str, column: str) -> dict:
    c = quote(column)
    rows, nulls, nans, zeros = con.execute(
        f"select count(*), count(*) - count({c}), count(*) filter (where isnan({c}::double)),"
        f" count(*) filter (where {c} = 0) from {source}"
    ).fetchone()
    finite = f"from {source} where {c} is not null and not isnan({c}::double)"
    mean, total, stddev, low, high = con.execute(
        f"select avg({c}::double), sum({c}::double), stddev_samp({c}::double), min({c}::double), max({c}::double) {finite}"
    ).fetchone()
    levels = list(QUANTILES.values())
    quantiles = con.execute(f"select quantile_cont({c}::double, {levels}) {finite}").fetchone()[0]
    values = [row[0] for row in con.execute(f"select {c}::double from {source} where {c} is not null").fetchall()]
    distinct = len({"nan" if math.isnan(value) else value + 0.0 for value in values})
    result = {
        "row_count": rows,
        "null_count": nulls,
        "null_percent": 100.0 * nulls / rows,
        "nan_percent": 100.0 * nans / rows,
        "zero_percent": 100.0 * zeros / rows,
        "mean": mean,
        "sum": total,
        "stddev": stddev,
        "min": low,
        "max": high,
        "distinct_count": distinct,
    }
    result.update(dict(zip(QUANTILES, quantiles)))
    return result


def text(con, source: str, column: str) -> dict:
    c = quote(column)
    rows, nulls, empties, low, high, mean = con.execute(
        f"select count(*), count(*) - count({c}), count(*) filter (where {c} = ''),"
        f" min(length({c})), max(length({c})), avg(length({c})) from {source}"
    ).fetchone()
    distinct = con.execute(f"select count(distinct {c}) from {source}").fetchone()[0]
    return {
        "row_count": rows,
        "null_count": nulls,
        "null_percent": 100.0 * nulls / rows,
        "empty_percent": 100.0 * empties / rows,
        "min_length": low,
        "max_length": high,
        "mean_length": mean,
        "distinct_count": distinct,
    }


def physical_names(path: str, schema) -> dict[str, str]:
    by_id = {}
    for field in pq.read_schema(path):
        field_id = (field.metadata or {}).get(b"PARQUET:field_id")
        if field_id is not None:
            by_id[int(field_id)] = field.name
    return {field.name: by_id[field.field_id] for field in schema.fields}


def main() -> None:
    root = Path(sys.argv[1]).resolve()
    catalog = SqlCatalog("default", uri=f"sqlite:///{root / 'catalog.db'}", warehouse=f"file://{root / 'warehouse'}")
    table = catalog.load_table("db.events")
    con = duckdb.connect()
    expected = {}
    for snapshot in table.snapshots():
        files = added_files(table, snapshot)
        source = "read_parquet([" + ", ".join("'" + path.replace("'", "''") + "'" for path in files) + "])"
        # PyIceberg sanitizes Parquet column names (`we"ird col` is stored as `we_x22ird_x20col`):
        # find each column by its Iceberg field id, as a reader must.
        physical = physical_names(files[0], table.schema())
        columns = {column: numeric(con, source, physical[column]) for column in NUMERIC}
        columns["label"] = text(con, source, physical["label"])
        expected[str(snapshot.snapshot_id)] = {"files": len(files), "columns": columns}
    print(json.dumps(expected))


if __name__ == "__main__":
    main()
