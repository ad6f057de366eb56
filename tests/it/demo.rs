//! The demo warehouse: `prepare` writes it with the iceberg crate, PyIceberg (an independent
//! reader) and the iceberg crate read it back, then the live writer keeps appending to it.

use std::process::Command;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use iceberg::Catalog;
use iceberg::spec::{PrimitiveType, Type};
use iceberg::table::Table;
use icewatch::demo::{self, BRONZE_TABLE, DemoOptions, DemoWarehouse, GOLD_TABLE, SILVER_TABLE, table_ident};

use crate::common;

const DAYS: u32 = 5;

fn check_with_pyiceberg(warehouse: &DemoWarehouse) -> String {
    let script = common::repo_root().join("tests/python/check_demo.py");
    let (code, stdout, stderr) = common::run(Command::new(common::python()).arg(script).arg(&warehouse.dir).args([
        "--days",
        &DAYS.to_string(),
        "--min-bronze-snapshots",
        "100",
    ]));
    assert_eq!(code, 0, "check_demo.py failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    stdout
}

/// Snapshots oldest first with their `added-records`, and the current `total-records`.
fn snapshot_records(table: &Table) -> (Vec<(i64, u64)>, u64) {
    let mut snapshots: Vec<_> = table.metadata().snapshots().collect();
    snapshots.sort_by_key(|snapshot| snapshot.sequence_number());
    let added = snapshots
        .iter()
        .map(|snapshot| {
            let added = snapshot.summary().additional_properties["added-records"].parse().unwrap();
            (snapshot.timestamp_ms(), added)
        })
        .collect();
    let total =
        table.metadata().current_snapshot().unwrap().summary().additional_properties["total-records"].parse().unwrap();
    (added, total)
}

async fn scanned_rows(table: &Table) -> usize {
    let batches: Vec<_> = table.scan().build().unwrap().to_arrow().await.unwrap().try_collect().await.unwrap();
    batches.iter().map(|batch| batch.num_rows()).sum()
}

async fn snapshot_count(catalog: &dyn Catalog, name: &str) -> usize {
    catalog.load_table(&table_ident(name)).await.unwrap().metadata().snapshots().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_history_reads_back_everywhere_and_the_live_writer_extends_it() {
    let dir = tempfile::tempdir().unwrap();
    let options = DemoOptions { dir: dir.path().to_path_buf(), days: DAYS, seed: 7 };
    let started = Instant::now();
    let warehouse = demo::prepare(&options).await.unwrap();
    let elapsed = started.elapsed();
    println!("demo::prepare ({DAYS} days) took {:.1} s", elapsed.as_secs_f64());
    // A guard against a gross regression only (about 30 s on 2 idle cores): the figure is
    // printed above; a machine busy with other builds takes twice as long.
    assert!(elapsed < Duration::from_secs(180), "prepare took {elapsed:?}");
    assert!(warehouse.config_path.is_file());
    assert!(warehouse.dir.join("catalog.db").is_file());

    let facts = check_with_pyiceberg(&warehouse);
    println!("pyiceberg: {facts}");

    // The same facts through the iceberg crate.
    let catalog = warehouse.catalog().await.unwrap();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut last_history_ms = 0;
    for name in [BRONZE_TABLE, SILVER_TABLE, GOLD_TABLE] {
        let table = catalog.load_table(&table_ident(name)).await.unwrap();
        let (added, total) = snapshot_records(&table);
        let times: Vec<i64> = added.iter().map(|(time, _)| *time).collect();
        assert!(times.windows(2).all(|pair| pair[0] < pair[1]), "{name}: times not increasing");
        assert!(
            *times.last().unwrap() < now_ms && now_ms - times.last().unwrap() < 15 * 60_000,
            "{name}: history does not end just before now"
        );
        assert!(now_ms - times[0] >= i64::from(DAYS - 1) * 86_400_000, "{name}: history too short");
        assert_eq!(added.iter().map(|(_, rows)| rows).sum::<u64>(), total, "{name}");
        assert_eq!(scanned_rows(&table).await as u64, total, "{name}");
        last_history_ms = last_history_ms.max(*times.last().unwrap());
        if name == BRONZE_TABLE {
            assert!(added.len() > 100, "bronze has {} snapshots", added.len());
            let schema = table.metadata().current_schema();
            let quantity = schema.field_by_name("quantity").unwrap();
            assert_eq!(*quantity.field_type, Type::Primitive(PrimitiveType::Long));
            assert!(schema.field_by_name("venue").is_some());
            assert_eq!(table.metadata().schemas_iter().count(), 3, "created, venue added, quantity widened");
        }
    }

    // The live writer: a few quick ticks, then stop it.
    let before: Vec<usize> =
        futures::future::join_all([BRONZE_TABLE, SILVER_TABLE, GOLD_TABLE].map(|name| snapshot_count(&catalog, name)))
            .await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let writer_warehouse = warehouse.clone();
    let writer = tokio::spawn(async move {
        demo::run_writer(&writer_warehouse, Duration::from_millis(200), 11, async {
            let _ = stopped.await;
        })
        .await
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        // Gold commits every 6th tick: wait for one.
        if snapshot_count(&catalog, GOLD_TABLE).await > before[2] {
            break;
        }
        assert!(Instant::now() < deadline, "the live writer made no gold commit in 90 s");
        if writer.is_finished() {
            panic!("the live writer stopped early: {:?}", writer.await);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), writer).await.unwrap().unwrap().unwrap();

    let bronze = catalog.load_table(&table_ident(BRONZE_TABLE)).await.unwrap();
    let (added, total) = snapshot_records(&bronze);
    assert!(added.len() >= before[0] + 6, "bronze went from {} to {} snapshots", before[0], added.len());
    assert!(snapshot_count(&catalog, SILVER_TABLE).await >= before[1] + 6);
    assert!(added.last().unwrap().0 > last_history_ms, "live commits come after the history");
    assert_eq!(scanned_rows(&bronze).await as u64, total);
    check_with_pyiceberg(&warehouse);

    // `prepare` again replaces the demo instead of adding to it.
    let again = demo::prepare(&DemoOptions { days: 2, ..options }).await.unwrap();
    assert_eq!(again, warehouse);
    let catalog = again.catalog().await.unwrap();
    assert_eq!(snapshot_count(&catalog, BRONZE_TABLE).await, 96);
}
