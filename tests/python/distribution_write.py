"""Writes the distribution sensor's test table with PyIceberg (an independent writer).

Usage: distribution_write.py <dir>

Creates a SQL catalog on SQLite at <dir>/catalog.db with warehouse <dir>/warehouse and the
table `db.events`, then makes 8 appends of 400 rows (seeded, so every run writes the same
values). The first 7 appends share one distribution (`amount` about 2 % null); the 8th has
30 % nulls in `amount` and its mean shifted up by far more than 4 standard deviations of the
batch mean. Columns cover nulls, NaN, zeros, empty and non-ASCII strings and a name with a
quote and a space.
"""

import random
import sys
from pathlib import Path

import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog

WEIRD = 'we"ird col'


def batch(rng: random.Random, index: int, rows: int) -> pa.Table:
    last = index == 7
    null_rate = 0.30 if last else 0.02
    shift = 40.0 if last else 0.0
    ids, amounts, quantities, labels, weird = [], [], [], [], []
    for row in range(rows):
        ids.append(index * 100_000 + row)
        draw = rng.random()
        if draw < null_rate:
            amounts.append(None)
        elif draw < null_rate + 0.01:
            amounts.append(float("nan"))
        elif draw < null_rate + 0.03:
            amounts.append(0.0)
        else:
            amounts.append(rng.gauss(100.0 + shift, 15.0))
        quantities.append(None if rng.random() < 0.05 else rng.randint(-5, 20))
        labels.append(rng.choice([None, "", "alpha", "beta", "gamma", "délta", "x" * rng.randint(1, 30)]))
        weird.append(rng.uniform(-1.0, 1.0) if rng.random() > 0.1 else None)
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "amount": pa.array(amounts, pa.float64()),
            "qty": pa.array(quantities, pa.int32()),
            "label": pa.array(labels, pa.string()),
            WEIRD: pa.array(weird, pa.float64()),
        }
    )


def main() -> None:
    root = Path(sys.argv[1]).resolve()
    (root / "warehouse").mkdir(parents=True, exist_ok=True)
    catalog = SqlCatalog(
        "default",
        uri=f"sqlite:///{root / 'catalog.db'}",
        warehouse=f"file://{root / 'warehouse'}",
    )
    catalog.create_namespace("db")
    rng = random.Random(20240611)
    first = batch(rng, 0, 400)
    table = catalog.create_table("db.events", schema=first.schema)
    table.append(first)
    for index in range(1, 8):
        table.append(batch(rng, index, 400))
    print(len(table.metadata.snapshots))


if __name__ == "__main__":
    main()
