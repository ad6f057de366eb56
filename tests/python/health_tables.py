"""Writes the Iceberg tables of the health-sensor tests with PyIceberg (an independent writer).

Usage: health_tables.py <dir> <command> [args]

Commands (the SQL catalog `default` is `<dir>/catalog.db`, the warehouse `<dir>/warehouse`):
  create              namespace `it` and `it.tiny`: 150 appends of 3 rows each (one small
                      data file and one small manifest each), one per hour, the last one an
                      hour ago, so the oldest snapshots are more than 6 days old
  compact <table>     one `replace` snapshot that rewrites every live data file into one
  delete <table> <n>  a merge-on-read delete: one position delete file that marks the first
                      `n` rows of each live data file deleted, committed as a `delete`
                      snapshot (PyIceberg 0.12 writes no delete files itself: its `delete()`
                      falls back to copy-on-write; this uses its own manifest writer and
                      snapshot producer, with the manifest's content set to `deletes`)
  expire <table>      PyIceberg's `expire_snapshots` of every snapshot older than 5 days
                      but the current one

Prints one JSON line describing the table afterwards (snapshots, data and delete files).
"""

import datetime
import json
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat, ManifestContent, ManifestWriterV2
from pyiceberg.table.snapshots import Operation
from pyiceberg.table.update.snapshot import _FastAppendFiles
from pyiceberg.typedef import Record

from metadata_tables import DAY_MS, append_history, catalog, compact, create_table, now_ms

HOUR_MS = 3_600_000

# The reserved field ids of a position delete file (Iceberg spec, "Position Delete Files").
POSITION_DELETE_SCHEMA = pa.schema(
    [
        pa.field("file_path", pa.string(), nullable=False, metadata={"PARQUET:field_id": "2147483546"}),
        pa.field("pos", pa.int64(), nullable=False, metadata={"PARQUET:field_id": "2147483545"}),
    ]
)


def create(directory):
    cat = catalog(directory)
    cat.create_namespace("it")
    last_ms = now_ms() - HOUR_MS
    appends = 150
    table = create_table(cat, "it.tiny", last_ms - (appends - 1) * HOUR_MS)
    append_history(table, [3] * appends, last_ms, spacing_ms=HOUR_MS)
    return table.refresh()


class _DeleteManifestWriter(ManifestWriterV2):
    """PyIceberg's v2 manifest writer, writing a manifest of delete files."""

    def content(self):
        return ManifestContent.DELETES

    @property
    def _meta(self):
        return {**super()._meta, "content": "deletes"}


class _RowDelta(_FastAppendFiles):
    """A fast append whose added files are delete files: the new manifest is a delete manifest,
    every existing manifest is kept, and the summary counts the deletes."""

    def new_manifest_writer(self, spec):
        return _DeleteManifestWriter(
            spec=spec,
            schema=self.schema(),
            output_file=self.new_manifest_output(),
            snapshot_id=self._snapshot_id,
            avro_compression=self._compression,
        )


def delete_rows(table, rows_per_file):
    files = [task.file for task in table.scan().plan_files()]
    paths, positions = [], []
    for data_file in sorted(files, key=lambda data_file: data_file.file_path):
        for position in range(min(rows_per_file, data_file.record_count)):
            paths.append(data_file.file_path)
            positions.append(position)
    location = table.metadata.location
    local = location[len("file://") :] if location.startswith("file://") else location
    os.makedirs(f"{local}/data", exist_ok=True)
    name = f"data/position-deletes-{now_ms()}.parquet"
    pq.write_table(pa.table({"file_path": paths, "pos": positions}, schema=POSITION_DELETE_SCHEMA), f"{local}/{name}")
    delete_file = DataFile.from_args(
        content=DataFileContent.POSITION_DELETES,
        file_path=f"{location}/{name}",
        file_format=FileFormat.PARQUET,
        partition=Record(),
        record_count=len(positions),
        file_size_in_bytes=os.path.getsize(f"{local}/{name}"),
        sort_order_id=None,
        spec_id=table.metadata.default_spec_id,
        equality_ids=None,
        key_metadata=None,
    )
    with table.transaction() as transaction:
        with _RowDelta(operation=Operation.DELETE, transaction=transaction, io=table.io) as producer:
            producer.append_data_file(delete_file)
    return table.refresh()


def expire(table):
    cutoff = datetime.datetime.fromtimestamp((now_ms() - 5 * DAY_MS) / 1000, tz=datetime.timezone.utc)
    table.maintenance.expire_snapshots().older_than(cutoff).commit()
    return table.refresh()


def describe(table):
    snapshot = table.current_snapshot()
    summary = snapshot.summary.additional_properties if snapshot else {}
    return {
        "snapshots": len(table.metadata.snapshots),
        "data_files": int(summary.get("total-data-files", 0)),
        "delete_files": int(summary.get("total-delete-files", 0)),
        "position_deletes": int(summary.get("total-position-deletes", 0)),
        "records": int(summary.get("total-records", 0)),
        "manifests": len(snapshot.manifests(table.io)) if snapshot else 0,
        "operation": snapshot.summary.operation.value if snapshot else None,
    }


def main():
    directory, command = sys.argv[1], sys.argv[2]
    if command == "create":
        table = create(directory)
    else:
        table = catalog(directory).load_table(sys.argv[3])
        if command == "compact":
            table = compact(table)
        elif command == "delete":
            table = delete_rows(table, int(sys.argv[4]))
        elif command == "expire":
            table = expire(table)
        else:
            sys.exit(f"unknown command {command!r}")
    print(json.dumps(describe(table)))


if __name__ == "__main__":
    main()
