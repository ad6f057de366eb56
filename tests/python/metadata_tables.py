"""Writes and changes the Iceberg tables of the metadata-sensor tests with PyIceberg, an
independent writer (the iceberg crate writes others in the Rust test itself).

Usage: metadata_tables.py <dir> <command> [table]

Commands (the SQL catalog `default` is `<dir>/catalog.db`, the warehouse `<dir>/warehouse`):
  create            namespace `it` and these tables, with backdated snapshot times:
                    it.steady       13 daily appends of ~1000 rows, the last one hour ago
                    it.dropped      the same history, then an append 60 % below the mean
                    it.compacted    10 daily appends ending 3 days ago, then two compactions
                                    (`replace` snapshots) 30 and 10 minutes ago
                    it.deletes      10 daily appends ending 2 days ago, then `delete(...)`
                                    and `overwrite(...)` now
                    it.retention    10 daily appends ending 3 days ago, then a retention
                                    `delete` of the oldest day's file 25 minutes ago
                    it.empty_tail   10 daily appends ending 2 hours ago, then an empty
                                    append now (PyIceberg writes no `added-records` for it)
                    it.refreshed    a full-refresh table: 11 `overwrite()`s in a row (PyIceberg
                                    commits each as `delete` + `append`), ~2540 rows each,
                                    the newest 1017
                    it.short        3 appends (less than min_history)
                    it.evolving     6 appends; its schema is changed by `evolve`
  evolve            on it.evolving: rename `qty` → `quantity`, drop `legacy`, promote
                    `amount` int → long, add `venue`, add `scratch` and drop it again (back
                    to the same schema id); each its own schema update; then an append with
                    the new schema
  compact <table>   one `replace` snapshot that rewrites every live data file into one
  corrupt <table>   overwrites the table's current metadata JSON with garbage

Prints one JSON line describing what it did (snapshot ids, operations, metadata paths).

Snapshot times: PyIceberg stamps a snapshot with `time.time()` of `pyiceberg.table.snapshots`
(and a new table with `datetime_to_millis` of `pyiceberg.table.metadata`); `at(ms)` swaps those
two clocks so a history of days is written in a second. Nothing else is patched: metadata,
manifests and data are PyIceberg's own.
"""

import contextlib
import json
import sys
import time
import types

import pyarrow as pa
import pyiceberg.table.metadata as metadata_module
import pyiceberg.table.snapshots as snapshots_module
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.io.pyarrow import _dataframe_to_data_files
from pyiceberg.table.snapshots import Operation, Summary
from pyiceberg.table.update.snapshot import _OverwriteFiles
from pyiceberg.types import LongType, StringType

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
# Daily variation of the steady tables (about ±5 % around 1000).
NORMAL_ROWS = [1000, 1080, 950, 1020, 990, 1050, 970, 1010, 1030, 960, 1040, 985]

SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64()),
        pa.field("qty", pa.int32()),
        pa.field("legacy", pa.string()),
        pa.field("amount", pa.int32()),
    ]
)


def catalog(directory):
    return SqlCatalog(
        "default",
        uri=f"sqlite:///{directory}/catalog.db",
        warehouse=f"file://{directory}/warehouse",
    )


@contextlib.contextmanager
def at(ms):
    """Snapshots and new tables created inside get `ms` as their time (a table's creation
    time must precede its snapshots': readers reject an unsorted metadata log)."""
    real_time, real_millis = snapshots_module.time, metadata_module.datetime_to_millis
    snapshots_module.time = types.SimpleNamespace(time=lambda: ms / 1000.0)
    metadata_module.datetime_to_millis = lambda _: ms
    try:
        yield
    finally:
        snapshots_module.time, metadata_module.datetime_to_millis = real_time, real_millis


def create_table(cat, name, first_snapshot_ms):
    with at(first_snapshot_ms - 60_000):
        return cat.create_table(name, SCHEMA)


def now_ms():
    return int(time.time() * 1000)


def batch(first_id, rows):
    return pa.Table.from_pydict(
        {
            "id": pa.array(range(first_id, first_id + rows), pa.int64()),
            "qty": pa.array([(i % 7) + 1 for i in range(rows)], pa.int32()),
            "legacy": pa.array([f"l{i % 3}" for i in range(rows)], pa.string()),
            "amount": pa.array([i % 100 for i in range(rows)], pa.int32()),
        },
        schema=SCHEMA,
    )


def append_history(table, rows_per_append, last_ms, spacing_ms=DAY_MS):
    """Appends `rows_per_append` in order, one per `spacing_ms`, the last at `last_ms`."""
    next_id = 0
    count = len(rows_per_append)
    for index, rows in enumerate(rows_per_append):
        with at(last_ms - (count - 1 - index) * spacing_ms):
            table.append(batch(next_id, rows))
        next_id += rows
    return next_id


class _ReplaceFiles(_OverwriteFiles):
    """PyIceberg's overwrite producer, committing its snapshot as `replace`: its summary
    helper refuses to total a `replace`, so the totals are computed as for an overwrite (the
    same files in and out) and the operation is set afterwards."""

    def _summary(self, snapshot_properties=None):
        summary = super()._summary(snapshot_properties or {})
        return Summary(Operation.REPLACE, **summary.additional_properties)


def compact(table):
    """A real `replace` commit: reads every live row, writes it as one new data file, and
    commits a snapshot that deletes the old files and adds the new one (what a compaction
    does). PyIceberg 0.12 has no public rewrite API; this uses its own overwrite snapshot
    producer with the operation set to `replace`."""
    data = table.scan().to_arrow()
    files = [task.file for task in table.scan().plan_files()]
    with table.transaction() as transaction:
        producer = _ReplaceFiles(operation=Operation.OVERWRITE, transaction=transaction, io=table.io)
        with producer:
            for data_file in _dataframe_to_data_files(
                table_metadata=transaction.table_metadata,
                df=data,
                io=table.io,
                write_uuid=producer.commit_uuid,
            ):
                producer.append_data_file(data_file)
            for data_file in files:
                producer.delete_data_file(data_file)
    return table.refresh()


def describe(table):
    return [
        {
            "snapshot_id": snapshot.snapshot_id,
            "operation": snapshot.summary.operation.value,
            "timestamp_ms": snapshot.timestamp_ms,
            "added_records": int(snapshot.summary.additional_properties.get("added-records", 0)),
            "deleted_records": int(snapshot.summary.additional_properties.get("deleted-records", 0)),
            "total_records": int(snapshot.summary.additional_properties.get("total-records", 0)),
        }
        for snapshot in sorted(table.metadata.snapshots, key=lambda snapshot: snapshot.sequence_number)
    ]


def create(directory):
    cat = catalog(directory)
    cat.create_namespace("it")
    now = now_ms()
    out = {}

    steady = create_table(cat, "it.steady", now - 14 * DAY_MS)
    append_history(steady, NORMAL_ROWS + [1025], now - HOUR_MS)
    out["it.steady"] = describe(steady.refresh())

    dropped = create_table(cat, "it.dropped", now - 14 * DAY_MS)
    append_history(dropped, NORMAL_ROWS + [400], now - HOUR_MS)
    out["it.dropped"] = describe(dropped.refresh())

    compacted = create_table(cat, "it.compacted", now - 14 * DAY_MS)
    append_history(compacted, NORMAL_ROWS[:10], now - 3 * DAY_MS)
    with at(now - 30 * 60_000):
        compact(compacted)
    with at(now - 10 * 60_000):
        compacted = compact(compacted)
    out["it.compacted"] = describe(compacted)

    deletes = create_table(cat, "it.deletes", now - 14 * DAY_MS)
    next_id = append_history(deletes, NORMAL_ROWS[:10], now - 2 * DAY_MS)
    deletes.delete("id < 500")  # rewrites part of the first file: an `overwrite`
    deletes.delete("id >= 1000 and id < 2080")  # the second file whole: a `delete`
    # Replaces everything with 200 rows: PyIceberg commits a `delete` and an `append` at once.
    deletes.overwrite(batch(next_id, 200))
    out["it.deletes"] = describe(deletes.refresh())

    retention = create_table(cat, "it.retention", now - 14 * DAY_MS)
    append_history(retention, NORMAL_ROWS[:10], now - 3 * DAY_MS)
    with at(now - 25 * 60_000):
        retention.delete(f"id < {NORMAL_ROWS[0]}")  # the oldest append's file, whole: a `delete`
    out["it.retention"] = describe(retention.refresh())

    empty_tail = create_table(cat, "it.empty_tail", now - 14 * DAY_MS)
    next_id = append_history(empty_tail, NORMAL_ROWS[:10], now - 2 * HOUR_MS)
    empty_tail.append(batch(next_id, 0))
    out["it.empty_tail"] = describe(empty_tail.refresh())

    # Real commit times, not `at()`: the two snapshots of one overwrite must not share a time,
    # or its `delete` half looks published on its own.
    refreshed = create_table(cat, "it.refreshed", now - 14 * DAY_MS)
    for rows in [2540, 2610, 2480, 2555, 2500, 2590, 2525, 2570, 2495, 2545, 1017]:
        refreshed.overwrite(batch(0, rows))
    out["it.refreshed"] = describe(refreshed.refresh())

    short = create_table(cat, "it.short", now - 14 * DAY_MS)
    append_history(short, [1000, 1010, 990], now - HOUR_MS)
    out["it.short"] = describe(short.refresh())

    evolving = create_table(cat, "it.evolving", now - 14 * DAY_MS)
    append_history(evolving, NORMAL_ROWS[:6], now - 2 * HOUR_MS)
    out["it.evolving"] = describe(evolving.refresh())
    return out


def evolve(directory):
    table = catalog(directory).load_table("it.evolving")
    with table.update_schema() as update:
        update.rename_column("qty", "quantity")
    with table.update_schema() as update:
        update.delete_column("legacy")
    with table.update_schema() as update:
        update.update_column("amount", field_type=LongType())
    with table.update_schema() as update:
        update.add_column("venue", StringType())
    # A column added and dropped again: PyIceberg goes back to the previous schema's id.
    with table.update_schema() as update:
        update.add_column("scratch", StringType())
    with table.update_schema() as update:
        update.delete_column("scratch")
    table = table.refresh()
    rows = 1000
    table.append(
        pa.Table.from_pydict(
            {
                "id": pa.array(range(100_000, 100_000 + rows), pa.int64()),
                "quantity": pa.array([3] * rows, pa.int32()),
                "amount": pa.array([5_000_000_000] * rows, pa.int64()),
                "venue": pa.array(["XNYS"] * rows, pa.string()),
            },
            schema=table.schema().as_arrow(),
        )
    )
    table = table.refresh()
    return {
        "schemas": [schema.schema_id for schema in table.metadata.schemas],
        "current_schema_id": table.metadata.current_schema_id,
        "columns": [field.name for field in table.schema().fields],
    }


def corrupt(directory, name):
    table = catalog(directory).load_table(name)
    location = table.metadata_location
    path = location[len("file://") :] if location.startswith("file://") else location
    with open(path, "w") as file:
        file.write("this is not table metadata {")
    return {"metadata_location": path}


def main():
    directory, command = sys.argv[1], sys.argv[2]
    if command == "create":
        result = create(directory)
    elif command == "evolve":
        result = evolve(directory)
    elif command == "compact":
        result = describe(compact(catalog(directory).load_table(sys.argv[3])))
    elif command == "corrupt":
        result = corrupt(directory, sys.argv[3])
    else:
        sys.exit(f"unknown command {command!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
