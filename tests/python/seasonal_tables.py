"""Writes, with PyIceberg, the tables of the seasonality tests: weeks of backdated history with
daily and weekly cycles, and the problems an untuned config must still find.

Usage: seasonal_tables.py <dir>

Tables (SQL catalog `default` at `<dir>/catalog.db`, namespace `seasonal`; times in UTC):
  seasonal.daily_drop      an append every 2 hours for 10 days with a ±66 % daily cycle,
                           then one 60 % below what is usual at its hour (at the cycle's peak)
  seasonal.weekly_volume   an append every 3 hours for 4 weeks, 1000 rows on weekdays and 100
                           at weekends; on the Tuesday of the last week one append of weekend
                           size at 12:00
  seasonal.weekday_loads   loads at 09:05, 13:05 and 17:05 on weekdays only, for 5 weeks; on
                           the Tuesday of the last week the 13:05 load is missing

Prints one JSON line: per table its snapshots (id, time, rows) and the moments the tests look at.
The history ends in the past week, so `check` (which uses the clock) sees the newest commit as
recent enough and `backtest` (which does not) replays it all.
"""

import json
import sys
import time

import pyarrow as pa
import pyiceberg.table as table_module
import pyiceberg.table.update as update_module

from metadata_tables import at, catalog

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
WEEK_MS = 7 * DAY_MS

SCHEMA = pa.schema([pa.field("id", pa.int64()), pa.field("amount", pa.float64())])


def fast_metadata():
    """PyIceberg deep-copies the whole table metadata (every snapshot) each time a transaction
    reads it, about twenty times per append, which makes writing a history of n commits cost n²
    (a 500-commit table took minutes). Our writers never mutate metadata in place, so the
    copy is skipped; what is written (data files, manifests, metadata JSON) is unchanged."""
    original = update_module.update_table_metadata

    def update_table_metadata(base_metadata, updates, enforce_validation=False, metadata_location=None):
        if enforce_validation:
            return original(base_metadata, updates, enforce_validation, metadata_location)
        context = update_module._TableMetadataUpdateContext()
        new_metadata = base_metadata
        for update in updates:
            new_metadata = update_module._apply_table_update(update, new_metadata, context)
        if context.has_changes():
            if metadata_location:
                new_metadata = update_module._update_table_metadata_log(
                    new_metadata, metadata_location, base_metadata.last_updated_ms
                )
            if base_metadata.last_updated_ms == new_metadata.last_updated_ms:
                now_ms = update_module.datetime_to_millis(update_module.datetime.now().astimezone())
                new_metadata = new_metadata.model_copy(update={"last_updated_ms": now_ms})
        return new_metadata

    update_module.update_table_metadata = update_table_metadata
    table_module.update_table_metadata = update_table_metadata
    import pyiceberg.catalog as catalog_module

    catalog_module.update_table_metadata = update_table_metadata


def batch(first_id, rows):
    return pa.Table.from_pydict(
        {
            "id": pa.array(range(first_id, first_id + rows), pa.int64()),
            "amount": pa.array([float(i % 97) for i in range(rows)], pa.float64()),
        },
        schema=SCHEMA,
    )


def jitter(index):
    """A deterministic factor in [0.92, 1.08]."""
    return 0.92 + 0.16 * ((index * 2654435761) % 1000) / 1000.0


def write_history(cat, name, commits):
    """`commits`: (time ms, rows), oldest first; returns the snapshots written."""
    with at(commits[0][0] - 60_000):
        table = cat.create_table(name, SCHEMA)
    next_id = 0
    for at_ms, rows in commits:
        with at(at_ms):
            table.append(batch(next_id, rows))
        next_id += rows
    table = cat.load_table(name)
    return [
        {"snapshot_id": snapshot.snapshot_id, "timestamp_ms": snapshot.timestamp_ms}
        for snapshot in table.metadata.snapshots
    ]


def monday_before(ms):
    """00:00 UTC of the Monday at or before `ms` (1970-01-05 was a Monday)."""
    monday = 4 * DAY_MS
    return ms - (ms - monday) % WEEK_MS


def daily_cycle(hour_of_day):
    import math

    return 1000.0 * (1.0 + 0.66 * math.sin((hour_of_day - 0.0) * 2 * math.pi / 24.0))


def main():
    directory = sys.argv[1]
    fast_metadata()
    cat = catalog(directory)
    cat.create_namespace("seasonal")
    now_ms = int(time.time() * 1000)
    described = {}

    # Ten days every two hours, ending at the last 06:00 before now (the cycle's peak).
    last_peak = now_ms - (now_ms - 6 * HOUR_MS) % DAY_MS
    start = last_peak - 10 * DAY_MS
    commits = [(start + step * 2 * HOUR_MS, int(daily_cycle(((start + step * 2 * HOUR_MS) % DAY_MS) / HOUR_MS) * jitter(step))) for step in range(5 * 24)]
    commits.append((last_peak, int(daily_cycle(6) * 0.4)))
    described["seasonal.daily_drop"] = {"snapshots": write_history(cat, "seasonal.daily_drop", commits), "dropped_ms": last_peak}

    # Four weeks every three hours, the last week ending before now; Tuesday 12:00 of week 4 low.
    first_monday = monday_before(now_ms) - 4 * WEEK_MS
    tuesday_noon = first_monday + 3 * WEEK_MS + DAY_MS + 12 * HOUR_MS
    commits = []
    for step in range(4 * 7 * 8):
        at_ms = first_monday + step * 3 * HOUR_MS
        weekend = (at_ms - first_monday) % WEEK_MS >= 5 * DAY_MS
        rows = 100 if weekend or at_ms == tuesday_noon else 1000
        commits.append((at_ms, int(rows * (jitter(step) if at_ms != tuesday_noon else 1.0))))
    weekend_commits = [at_ms for at_ms, _ in commits if (at_ms - first_monday) % WEEK_MS >= 5 * DAY_MS and at_ms >= first_monday + 3 * WEEK_MS]
    described["seasonal.weekly_volume"] = {
        "snapshots": write_history(cat, "seasonal.weekly_volume", commits),
        "low_tuesday_ms": tuesday_noon,
        "last_weekend_ms": weekend_commits,
    }

    # Five weeks of weekday loads at 09:05, 13:05, 17:05; the last Tuesday's 13:05 is missing.
    first_monday = monday_before(now_ms) - 5 * WEEK_MS
    missing = first_monday + 4 * WEEK_MS + DAY_MS + 13 * HOUR_MS + 5 * 60_000
    commits = []
    for day in range(5 * 7 - 2):
        if day % 7 >= 5:
            continue
        for hour in (9, 13, 17):
            at_ms = first_monday + day * DAY_MS + hour * HOUR_MS + 5 * 60_000
            if at_ms != missing:
                commits.append((at_ms, int(500 * jitter(day * 3 + hour))))
    described["seasonal.weekday_loads"] = {
        "snapshots": write_history(cat, "seasonal.weekday_loads", commits),
        # The arrival that ends the last weekend, and the one after the missing load.
        "after_last_weekend_ms": first_monday + 4 * WEEK_MS + 9 * HOUR_MS + 5 * 60_000,
        "after_missing_ms": missing + 4 * HOUR_MS,
    }
    print(json.dumps(described))


if __name__ == "__main__":
    main()
