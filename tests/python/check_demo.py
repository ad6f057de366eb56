"""Checks the demo warehouse with PyIceberg, an independent reader.

Usage: check_demo.py <demo dir> [--days N] [--min-bronze-snapshots N]

Loads the SQL catalog `default` the demo wrote and checks: the three tables exist with the
expected columns and types; row counts read through a full scan equal the sum of `added-records`
and the current snapshot's `total-records`; snapshot times are strictly increasing, in the past
and span at least days - 1 days; bronze's schema history holds `quantity` as int and then as
long, and `venue` appears part-way. Prints one JSON line of facts and exits 1 on a failed check.
"""

import argparse
import json
import sys
import time

from pyiceberg.catalog.sql import SqlCatalog

EXPECTED = {
    "bronze.raw_trades": {
        "trade_id": "long",
        "symbol": "string",
        "side": "string",
        "price": "double",
        "quantity": "long",
        "ts": "timestamptz",
        "venue": "string",
    },
    "silver.cleaned_trades": {
        "trade_id": "long",
        "symbol": "string",
        "side": "string",
        "price": "double",
        "quantity": "long",
        "ts": "timestamptz",
        "venue": "string",
        "notional": "double",
    },
    "gold.trade_summary_daily": {
        "trade_date": "date",
        "symbol": "string",
        "trades": "long",
        "volume": "double",
        "vwap": "double",
    },
}

problems = []


def check(condition, message):
    if not condition:
        problems.append(message)
    return condition


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--min-bronze-snapshots", type=int, default=0)
    args = parser.parse_args()

    catalog = SqlCatalog(
        "default",
        uri=f"sqlite:///{args.dir}/catalog.db",
        warehouse=f"file://{args.dir}/warehouse",
    )
    facts = {}
    now_ms = time.time() * 1000
    for name, columns in EXPECTED.items():
        table = catalog.load_table(name)
        schema = {field.name: str(field.field_type) for field in table.schema().fields}
        check(schema == columns, f"{name}: schema {schema} != {columns}")

        snapshots = sorted(table.snapshots(), key=lambda snapshot: snapshot.sequence_number)
        times = [snapshot.timestamp_ms for snapshot in snapshots]
        check(all(a < b for a, b in zip(times, times[1:])), f"{name}: snapshot times not strictly increasing")
        check(times[-1] < now_ms, f"{name}: last snapshot in the future")
        span_days = (times[-1] - times[0]) / 86_400_000
        check(span_days >= args.days - 1, f"{name}: snapshots span {span_days:.2f} days < {args.days - 1}")
        log = [entry.timestamp_ms for entry in table.metadata.snapshot_log]
        check(log == times, f"{name}: snapshot log does not match the snapshots")

        added = sum(int(snapshot.summary["added-records"]) for snapshot in snapshots)
        total = int(table.current_snapshot().summary["total-records"])
        rows = table.scan().to_arrow()
        check(rows.num_rows == added == total, f"{name}: scan {rows.num_rows}, added {added}, total {total}")
        check(all(s.summary.operation.value == "append" for s in snapshots), f"{name}: non-append snapshot")
        facts[name] = {
            "snapshots": len(snapshots),
            "rows": rows.num_rows,
            "span_days": round(span_days, 3),
            "first_ms": times[0],
            "last_ms": times[-1],
        }

        if name == "bronze.raw_trades":
            check(len(snapshots) >= args.min_bronze_snapshots, f"bronze: {len(snapshots)} snapshots")
            schemas = table.schemas()  # schema id -> schema
            quantity_types = []
            venue_present = []
            for snapshot in snapshots:
                schema = schemas[snapshot.schema_id]
                names = {field.name: str(field.field_type) for field in schema.fields}
                quantity_types.append(names["quantity"])
                venue_present.append("venue" in names)
            # int first, long later, never back; the widening keeps the field id
            first_long = quantity_types.index("long") if "long" in quantity_types else None
            check(quantity_types[0] == "int", "bronze: quantity did not start as int")
            check(first_long is not None and all(t == "long" for t in quantity_types[first_long:]),
                  f"bronze: quantity history {sorted(set(quantity_types))}")
            ids = {schema.find_field("quantity").field_id for schema in schemas.values()}
            check(len(ids) == 1, f"bronze: quantity field ids {ids}")
            first_venue = venue_present.index(True) if True in venue_present else None
            check(first_venue is not None and first_venue > 0 and all(venue_present[first_venue:]),
                  "bronze: venue not added part-way")
            # rows written before venue existed read back as null venue
            check(rows.column("venue").null_count > 0, "bronze: no null venue in early rows")
            # older int files are promoted on read
            check(str(rows.schema.field("quantity").type) == "int64", "bronze: quantity not read as int64")
            facts[name]["quantity_long_from_snapshot"] = first_long
            facts[name]["venue_from_snapshot"] = first_venue
            added_records = [int(s.summary["added-records"]) for s in snapshots]
            facts[name]["added_records_min"] = min(added_records)
            facts[name]["added_records_max"] = max(added_records)

            # the volume drop: one commit far below its neighbours
            ratios = []
            for index in range(2, len(added_records) - 2):
                neighbours = added_records[index - 2:index] + added_records[index + 1:index + 3]
                ratios.append(added_records[index] / (sum(neighbours) / 4))
            check(min(ratios) < 0.5, f"bronze: no volume drop (lowest ratio {min(ratios):.2f})")
            facts[name]["lowest_volume_ratio"] = round(min(ratios), 3)

            # the null spike, from the manifests' per-file null counts of `price`
            price_id = table.schema().find_field("price").field_id
            entries = table.inspect.entries().to_pylist()
            nulls, records = {}, {}
            for entry in entries:
                data_file = entry["data_file"]
                counts = dict(data_file["null_value_counts"] or [])
                snapshot_id = entry["snapshot_id"]
                nulls[snapshot_id] = nulls.get(snapshot_id, 0) + counts.get(price_id, 0)
                records[snapshot_id] = records.get(snapshot_id, 0) + data_file["record_count"]
            rates = sorted(nulls[s] / records[s] for s in records if records[s] > 0)
            median = rates[len(rates) // 2]
            check(rates[-1] > 0.2 and median < 0.05, f"bronze: price null rates median {median:.3f} max {rates[-1]:.3f}")
            facts[name]["price_null_rate_median"] = round(median, 4)
            facts[name]["price_null_rate_max"] = round(rates[-1], 4)

        if name == "silver.cleaned_trades":
            gaps = [b - a for a, b in zip(times, times[1:])]
            check(max(gaps) >= 8 * 3_600_000, f"silver: longest gap {max(gaps) / 3_600_000:.1f} h < 8 h")
            facts[name]["longest_gap_hours"] = round(max(gaps) / 3_600_000, 2)
            check(rows.column("price").null_count == 0, "silver: null prices")
            check(len(set(rows.column("trade_id").to_pylist())) == rows.num_rows, "silver: duplicate trade ids")

    print(json.dumps(facts))
    if problems:
        for problem in problems:
            print("FAILED:", problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
