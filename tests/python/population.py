"""Writes, with PyIceberg, the population of the false-alarm budget test: healthy tables of many
realistic kinds, and a matching set with one injected problem each. Seeded: the same seed writes
the same histories (snapshot ids aside).

Usage: population.py <dir> [--seed N] [--healthy N] [--broken-per-problem N] [--workers N]

Kinds (UTC; every table has weeks of backdated history ending in the past day):
  daily_cycle    an append every 6 h for 21 days, ±40–70 % daily cycle, ±8 % noise
  weekly_cycle   an append every 8 h for 28 days, weekends at 10–40 % of weekdays
  weekday_only   loads at 09:05, 13:05, 17:05 on weekdays only, 28 days
  growth         an append every 8 h for 21 days, compounding 2–5 % a day, with a daily cycle
  jittered       an append every 6 h ± 90 min for 21 days
  heavy_tailed   an append every 8 h for 21 days, lognormal batch sizes (σ 0.25)
  tiny           1–8 rows every 12 h for 21 days
  retention      an append every 8 h for 21 days, and each day a `delete` of the oldest day
  full_refresh   a daily `overwrite()` for 28 days (PyIceberg: `delete` + `append`), ±5 %

Problems, injected once at about 85 % of a table's history: drop (10 % of the usual rows),
spike (5× the table's 90th-percentile batch), duplicate_load (the batch written twice in its commit, 2×; only on kinds with
noise of at most ~10 %), zero_rows (not on full refreshes: an empty `overwrite()` only deletes) (an empty append), stale (6 usual intervals without an
arrival; for weekday loads two working days), sigma_blowup (batches of 3.5×, 0.25×, 3×, 0.3×; not on tiny tables, whose 1 to 8 rows
already swing by 8×).

Writes `<dir>/catalog.db` (SQL catalog `default`, namespace `pop`), `<dir>/warehouse`,
`<dir>/sensors.toml` (each table's freshness and volume sensors, no other key: nothing is tuned)
and `<dir>/population.json`: per table its kind, and for a broken one its problem, the sensor
that must report it and the moment of the replayed check that must (`backtest`'s
`checked_at_ms`: the append, or 1 ms before the arrival that ends a stale gap).

Workers write separate catalogs (SQLite takes one writer at a time), merged at the end.
"""

import argparse
import json
import warnings
import math
import os
import random
import sqlite3
import sys
import time
from multiprocessing import Pool

import pyarrow as pa
from pyiceberg.expressions import LessThan

from metadata_tables import at, catalog
from seasonal_tables import fast_metadata

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
WEEK_MS = 7 * DAY_MS

SCHEMA = pa.schema(
    [pa.field("id", pa.int64()), pa.field("day", pa.int64()), pa.field("amount", pa.float64())]
)

KINDS = [
    "daily_cycle",
    "weekly_cycle",
    "weekday_only",
    "growth",
    "jittered",
    "heavy_tailed",
    "tiny",
    "retention",
    "full_refresh",
]
PROBLEMS = ["drop", "spike", "duplicate_load", "zero_rows", "stale", "sigma_blowup"]
# Kinds whose batch-to-batch noise leaves a doubled batch visible.
LOW_NOISE = {"daily_cycle", "weekly_cycle", "weekday_only", "growth", "jittered", "retention", "full_refresh"}


def monday_before(ms):
    return ms - (ms - 4 * DAY_MS) % WEEK_MS


def plan(kind, rng, end_ms):
    """The table's history as operations, oldest first: ("append", ms, rows), ("delete", ms,
    day) or ("overwrite", ms, rows). Also the usual interval between arrivals."""
    ops = []
    noise = lambda spread: 1.0 + rng.uniform(-spread, spread)
    if kind == "daily_cycle":
        amplitude, base, phase = rng.uniform(0.4, 0.7), rng.randint(200, 5000), rng.uniform(0, 24)
        start = end_ms - 21 * DAY_MS
        for step in range(21 * 4):
            ms = start + step * 6 * HOUR_MS
            hour = (ms % DAY_MS) / HOUR_MS
            rows = base * (1 + amplitude * math.sin((hour - phase) * 2 * math.pi / 24)) * noise(0.08)
            ops.append(("append", ms, rows))
        return ops, 6 * HOUR_MS
    if kind == "weekly_cycle":
        weekend, base = rng.uniform(0.1, 0.4), rng.randint(500, 5000)
        start = monday_before(end_ms) - 4 * WEEK_MS
        for step in range(28 * 3):
            ms = start + step * 8 * HOUR_MS
            level = weekend if (ms - start) % WEEK_MS >= 5 * DAY_MS else 1.0
            ops.append(("append", ms, base * level * noise(0.08)))
        return ops, 8 * HOUR_MS
    if kind == "weekday_only":
        base = rng.randint(100, 3000)
        start = monday_before(end_ms) - 4 * WEEK_MS
        for day in range(28):
            if day % 7 >= 5:
                continue
            for hour in (9, 13, 17):
                ops.append(("append", start + day * DAY_MS + hour * HOUR_MS + 5 * 60_000, base * noise(0.08)))
        return ops, 4 * HOUR_MS
    if kind == "growth":
        rate, base, amplitude = rng.uniform(0.02, 0.05), rng.randint(200, 2000), rng.uniform(0.2, 0.5)
        start = end_ms - 21 * DAY_MS
        for step in range(21 * 3):
            ms = start + step * 8 * HOUR_MS
            days = (ms - start) / DAY_MS
            hour = (ms % DAY_MS) / HOUR_MS
            cycle = 1 + amplitude * math.sin(hour * 2 * math.pi / 24)
            ops.append(("append", ms, base * math.exp(rate * days) * cycle * noise(0.06)))
        return ops, 8 * HOUR_MS
    if kind == "jittered":
        base = rng.randint(200, 5000)
        start = end_ms - 21 * DAY_MS
        for step in range(21 * 4):
            ms = start + step * 6 * HOUR_MS + int(rng.uniform(-1.5, 1.5) * HOUR_MS)
            ops.append(("append", ms, base * noise(0.08)))
        return ops, 6 * HOUR_MS
    if kind == "heavy_tailed":
        base = rng.randint(200, 5000)
        start = end_ms - 21 * DAY_MS
        for step in range(21 * 3):
            ops.append(("append", start + step * 8 * HOUR_MS, base * math.exp(rng.gauss(0, 0.25))))
        return ops, 8 * HOUR_MS
    if kind == "tiny":
        start = end_ms - 21 * DAY_MS
        for step in range(21 * 2):
            ops.append(("append", start + step * 12 * HOUR_MS, rng.randint(1, 8)))
        return ops, 12 * HOUR_MS
    if kind == "retention":
        base, keep = rng.randint(200, 3000), rng.randint(5, 10)
        start = end_ms - 21 * DAY_MS
        for step in range(21 * 3):
            ms = start + step * 8 * HOUR_MS
            ops.append(("append", ms, base * noise(0.08)))
            day = (ms - start) // DAY_MS
            if step % 3 == 2 and day >= keep:
                ops.append(("delete", ms + 30 * 60_000, day - keep))
        return ops, 8 * HOUR_MS
    if kind == "full_refresh":
        base = rng.randint(1000, 20000)
        start = end_ms - 28 * DAY_MS
        for day in range(28):
            ops.append(("overwrite", start + day * DAY_MS + 3 * HOUR_MS, base * (1 + 0.002 * day) * noise(0.05)))
        return ops, DAY_MS
    raise ValueError(kind)


def inject(kind, ops, interval_ms, problem):
    """`ops` with `problem` at about 85 % of the history, and the check that must report it."""
    writes = [index for index, op in enumerate(ops) if op[0] in ("append", "overwrite")]
    target = writes[int(len(writes) * 0.85)]
    op, ms, rows = ops[target]
    if problem in ("drop", "spike", "duplicate_load", "zero_rows"):
        factor = {"drop": 0.1, "spike": 5.0, "duplicate_load": 2.0, "zero_rows": 0.0}[problem]
        if problem == "spike":
            # Five times the table's large batches (its 90th percentile): a tiny table's random
            # 2 rows times 5 is within its usual 1 to 8.
            usual = sorted(ops[index][2] for index in writes)[len(writes) * 9 // 10]
            rows = max(rows, usual)
        ops[target] = (op, ms, rows * factor)
        return ops, {"sensor": "volume", "checked_at_ms": ms}
    if problem == "sigma_blowup":
        for offset, factor in enumerate([3.5, 0.25, 3.0, 0.3]):
            index = writes[writes.index(target) + offset]
            o, m, r = ops[index]
            ops[index] = (o, m, r * factor)
        return ops, {"sensor": "volume", "checked_at_ms": ms}
    if problem == "stale":
        silence = 2 * DAY_MS + 16 * HOUR_MS if kind == "weekday_only" else 6 * interval_ms
        if kind == "weekday_only":
            # From a Monday's last load to Thursday morning: two working days without a load.
            is_monday_evening = lambda ms: ((ms - 4 * DAY_MS) % WEEK_MS) // DAY_MS == 0 and (ms % DAY_MS) // HOUR_MS == 17
            starts = [index for index in writes if is_monday_evening(ops[index][1])]
            target = next((index for index in starts if index >= target), starts[-2])
            ms = ops[target][1]
        # The silence must end before the history does, with an arrival after it.
        last_ms = ops[writes[-1]][1]
        if ms + silence >= last_ms:
            target = max(index for index in writes if ops[index][1] + silence < last_ms)
            ms = ops[target][1]
        end = ms + silence
        kept = [op for op in ops if not (ms < op[1] < end and op[0] in ("append", "overwrite"))]
        arrival = next(op[1] for op in kept if op[1] > ms and op[0] in ("append", "overwrite"))
        return kept, {"sensor": "freshness", "checked_at_ms": arrival - 1}
    raise ValueError(problem)


def batch(first_id, rows, day):
    return pa.Table.from_pydict(
        {
            "id": pa.array(range(first_id, first_id + rows), pa.int64()),
            "day": pa.array([day] * rows, pa.int64()),
            "amount": pa.array([float(i % 89) for i in range(rows)], pa.float64()),
        },
        schema=SCHEMA,
    )


def write(cat, name, ops):
    start = ops[0][1]
    with at(start - 60_000):
        table = cat.create_table(name, SCHEMA)
    next_id = 0
    for op, ms, value in ops:
        day = (ms - start) // DAY_MS
        with at(ms):
            if op == "append":
                rows = max(0, int(round(value)))
                table.append(batch(next_id, rows, day))
                next_id += rows
            elif op == "overwrite":
                rows = max(0, int(round(value)))
                table.overwrite(batch(next_id, rows, day))
                next_id += rows
            else:
                table.delete(LessThan("day", value + 1))


def specs(seed, healthy, broken_per_problem, end_ms):
    rng = random.Random(seed)
    tables = []
    for index in range(healthy):
        kind = KINDS[index % len(KINDS)]
        tables.append({"name": f"pop.h{index:03d}_{kind}", "kind": kind, "seed": rng.randrange(1 << 30)})
    for problem in PROBLEMS:
        compatible = [
            kind
            for kind in KINDS
            if (problem != "duplicate_load" or kind in LOW_NOISE)
            # Batches of 1 to 8 rows already swing by 8×: no blow-up stands out.
            and not (problem == "sigma_blowup" and kind == "tiny")
            # An empty `overwrite()` only deletes: there is no refresh to judge, the table is empty.
            and not (problem == "zero_rows" and kind == "full_refresh")
        ]
        for index in range(broken_per_problem):
            kind = compatible[(index + PROBLEMS.index(problem)) % len(compatible)]
            tables.append(
                {"name": f"pop.b_{problem}_{index}_{kind}", "kind": kind, "problem": problem, "seed": rng.randrange(1 << 30)}
            )
    for table in tables:
        table["end_ms"] = end_ms
    return tables


def work(job):
    directory, tables = job
    # A retention delete of a day whose rows an earlier delete took already matches nothing.
    warnings.filterwarnings("ignore", message="Delete operation did not match any records")
    fast_metadata()
    os.makedirs(directory, exist_ok=True)
    cat = catalog(directory)
    cat.create_namespace("pop")
    described = {}
    for spec in tables:
        rng = random.Random(spec["seed"])
        ops, interval = plan(spec["kind"], rng, spec["end_ms"])
        entry = {"kind": spec["kind"]}
        if "problem" in spec:
            ops, expected = inject(spec["kind"], ops, interval, spec["problem"])
            entry.update({"problem": spec["problem"], **expected})
        write(cat, spec["name"], ops)
        described[spec["name"]] = entry
    return described


def merge(directory, parts):
    """Copies the table rows of each worker's catalog into `<directory>/catalog.db`."""
    target = sqlite3.connect(os.path.join(directory, "catalog.db"))
    for part in parts[1:]:
        target.execute("ATTACH DATABASE ? AS part", (os.path.join(part, "catalog.db"),))
        target.execute("INSERT INTO iceberg_tables SELECT * FROM part.iceberg_tables")
        target.commit()
        target.execute("DETACH DATABASE part")
    target.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--seed", type=int, default=20261203)
    parser.add_argument("--healthy", type=int, default=200)
    parser.add_argument("--broken-per-problem", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    started = time.time()
    # Histories end at the last midnight, so the population is the same all day.
    end_ms = int(time.time() * 1000) // DAY_MS * DAY_MS
    tables = specs(args.seed, args.healthy, args.broken_per_problem, end_ms)
    workers = max(1, args.workers)
    parts = [args.dir] + [os.path.join(args.dir, f"part{index}") for index in range(1, workers)]
    jobs = [(parts[index], tables[index::workers]) for index in range(workers)]
    with Pool(workers) as pool:
        results = pool.map(work, jobs)
    merge(args.dir, parts)
    described = {}
    for result in results:
        described.update(result)
    with open(os.path.join(args.dir, "population.json"), "w") as out:
        json.dump({"seed": args.seed, "end_ms": end_ms, "tables": described}, out, indent=1, sort_keys=True)
    lines = [
        '[catalog]\ntype = "sql"\nuri = "sqlite://catalog.db"\nwarehouse = "warehouse"\nname = "default"\n',
        '[history]\npath = "history.db"\n',
    ]
    for name in sorted(described):
        lines.append(f'[tables."{name}".freshness]\n[tables."{name}".volume]\n')
    with open(os.path.join(args.dir, "sensors.toml"), "w") as out:
        out.write("\n".join(lines))
    print(json.dumps({"tables": len(described), "seconds": round(time.time() - started, 1)}))


if __name__ == "__main__":
    main()
