//! The history store on real databases: round trips through a SQLite file and through a
//! throwaway PostgreSQL server, reopening to prove durability, and a writer killed with SIGKILL
//! at random moments that must never lose a committed batch nor leave half of one.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use icewatch::history::*;
use serde_json::json;

use crate::common;
use crate::postgres::{PostgresServer, postgres_bindir, random_u64};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

fn trades(metric: &str, labels: &[(&str, &str)]) -> SeriesKey {
    SeriesKey::new("bronze.raw_trades", "volume", metric, labels)
}

fn points(series: &SeriesKey, times: std::ops::Range<i64>) -> Vec<Point> {
    times
        .map(|t| Point {
            series: series.clone(),
            observed_at_ms: 1_700_000_000_000 + t * 60_000,
            snapshot_id: (t % 3 != 0).then_some(t * 1000 + 7),
            value: (t as f64).sin() * 100.0 + 1000.0,
        })
        .collect()
}

fn schema_event(table: &str, key: &str, at: i64) -> Event {
    Event {
        table: table.into(),
        kind: "schema_change".into(),
        key: key.into(),
        occurred_at_ms: at,
        payload: json!({"change_type": "column_added", "field_id": 7, "name": key}),
    }
}

/// Writes a known data set into an empty store and checks every read path against it.
async fn write_and_check(store: &HistoryStore) {
    let rows = trades("row_count", &[]);
    let nulls = trades("null_fraction", &[("column", "price"), ("partition_date", "2024-01-01")]);
    let rows_points = points(&rows, 0..40);
    let nulls_points = points(&nulls, 0..10);
    assert_eq!(store.append(&rows_points[..25]).await.unwrap(), 25);
    // Overlapping re-append (a re-run tick): only the 15 new points count.
    assert_eq!(store.append(&rows_points).await.unwrap(), 15);
    assert_eq!(store.append(&nulls_points).await.unwrap(), 10);
    assert_eq!(store.append(&nulls_points).await.unwrap(), 0);
    let events = vec![
        schema_event("bronze.raw_trades", "v2:add:7", 10),
        schema_event("bronze.raw_trades", "v3:add:8", 20),
        schema_event("silver.trades", "v2:add:3", 15),
    ];
    assert_eq!(store.record_events(&events).await.unwrap(), 3);
    assert_eq!(store.record_events(&events[..1]).await.unwrap(), 0);
    page_and_prune_events(store).await;
    check_contents(store).await;
}

/// Events of another kind read a page at a time and deleted in bounded steps, on either backend
/// (the `schema_change` events stay).
async fn page_and_prune_events(store: &HistoryStore) {
    let received: Vec<Event> =
        (1..=5).map(|at| Event { kind: "openlineage".into(), ..schema_event("", &format!("e{at}"), at) }).collect();
    assert_eq!(store.record_events(&received).await.unwrap(), 5);
    let first = store.events_page("openlineage", 2, None, 2).await.unwrap();
    let second = store.events_page("openlineage", 2, first.last().map(|event| event.cursor), 2).await.unwrap();
    let keys: Vec<&str> = first.iter().chain(&second).map(|event| event.key.as_str()).collect();
    assert_eq!(keys, ["e5", "e4", "e3", "e2"], "newest first, none before 2");
    assert!(second[0].payload.starts_with('{'), "{}", second[0].payload);
    assert_eq!(store.delete_events_before("openlineage", 4, 2).await.unwrap(), 2);
    assert_eq!(store.delete_events_before("openlineage", 4, 2).await.unwrap(), 1);
    let left = store.events_page("openlineage", 0, None, 10).await.unwrap();
    assert_eq!(left.iter().map(|event| event.key.as_str()).collect::<Vec<_>>(), ["e5", "e4"]);
    assert_eq!(store.delete_events_before("openlineage", i64::MAX, 10).await.unwrap(), 2);
}

/// Everything `write_and_check` wrote, read back (also after a reopen).
async fn check_contents(store: &HistoryStore) {
    let rows = trades("row_count", &[]);
    let nulls = trades("null_fraction", &[("partition_date", "2024-01-01"), ("column", "price")]);
    let rows_points = points(&rows, 0..40);
    assert_eq!(store.point_count().await.unwrap(), 50);
    let before = rows_points[30].observed_at_ms;
    assert_eq!(store.window(&rows, before, 5).await.unwrap(), rows_points[25..30].to_vec());
    assert_eq!(store.window(&rows, before, 1000).await.unwrap(), rows_points[..30].to_vec());
    assert_eq!(
        store.range(&rows, rows_points[3].observed_at_ms, rows_points[9].observed_at_ms).await.unwrap(),
        rows_points[3..9].to_vec()
    );
    assert_eq!(store.latest(&rows).await.unwrap(), Some(rows_points[39].clone()));
    assert_eq!(store.latest(&nulls).await.unwrap(), points(&nulls, 9..10).pop());
    for point in &rows_points {
        assert!(store.contains(&rows, point.observed_at_ms, point.snapshot_id).await.unwrap());
    }
    assert!(!store.contains(&rows, rows_points[1].observed_at_ms, None).await.unwrap());
    assert_eq!(store.series_for_table("bronze.raw_trades").await.unwrap(), vec![nulls, rows]);
    assert!(store.series_for_table("gold.nothing").await.unwrap().is_empty());
    let recent = store.events(None, "schema_change", 2).await.unwrap();
    let keys: Vec<&str> = recent.iter().map(|event| event.key.as_str()).collect();
    assert_eq!(keys, vec!["v3:add:8", "v2:add:3"]);
    assert_eq!(recent[0], schema_event("bronze.raw_trades", "v3:add:8", 20));
    let silver = store.events(Some("silver.trades"), "schema_change", 10).await.unwrap();
    assert_eq!(silver, vec![schema_event("silver.trades", "v2:add:3", 15)]);
    assert!(store.integrity_check().await.unwrap().is_empty());
}

#[test]
fn sqlite_file_round_trip_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    // The parent directories do not exist yet: `open` creates them.
    let location = HistoryLocation::Sqlite(dir.path().join("state/nested/history.db"));
    runtime().block_on(async {
        let store = HistoryStore::open(&location).await.unwrap();
        write_and_check(&store).await;
        store.close().await;
        let reopened = HistoryStore::open(&location).await.unwrap();
        check_contents(&reopened).await;
        reopened.close().await;
    });
}

#[test]
fn sqlite_open_failure_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-directory");
    std::fs::write(&blocker, "").unwrap();
    let location = HistoryLocation::Sqlite(blocker.join("history.db"));
    let error = runtime().block_on(HistoryStore::open(&location)).unwrap_err();
    assert!(error.to_string().contains("not-a-directory"), "{error}");
    assert!(std::error::Error::source(&error).is_some(), "{error:?}");
}

const CHILD_DB_ENV: &str = "ICEWATCH_KILL_CHILD_DB";
const BATCH: i64 = 50;

fn kill_series() -> SeriesKey {
    SeriesKey::new("bronze.raw_trades", "volume", "row_count", &[("writer", "child")])
}

/// The writer process of `sigkill_never_loses_a_committed_batch` (that test re-runs this test
/// binary with only this test selected). On its own it does nothing, hence `ignore`.
#[test]
#[ignore = "child process of sigkill_never_loses_a_committed_batch; needs ICEWATCH_KILL_CHILD_DB"]
fn kill_writer_child() {
    let Some(db) = std::env::var_os(CHILD_DB_ENV) else {
        eprintln!("{CHILD_DB_ENV} is not set: nothing to do outside the SIGKILL test");
        return;
    };
    runtime().block_on(async {
        let store = HistoryStore::open(&HistoryLocation::Sqlite(PathBuf::from(db))).await.unwrap();
        let series = kill_series();
        let first = match store.latest(&series).await.unwrap() {
            Some(point) => point.observed_at_ms / BATCH + 1,
            None => 0,
        };
        let mut stdout = std::io::stdout();
        // Bounded: the parent kills this process long before it gets here.
        for batch in first..first + 100_000 {
            let points: Vec<Point> = (0..BATCH)
                .map(|i| Point {
                    series: series.clone(),
                    observed_at_ms: batch * BATCH + i,
                    snapshot_id: Some(batch),
                    value: i as f64,
                })
                .collect();
            assert_eq!(store.append(&points).await.unwrap(), BATCH as usize);
            writeln!(stdout, "committed {batch}").unwrap();
            stdout.flush().unwrap();
        }
    });
}

#[test]
fn sigkill_never_loses_a_committed_batch() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let series = kill_series();
    let runtime = runtime();
    let mut reported: BTreeSet<i64> = BTreeSet::new();
    let mut killed_mid_run = 0;
    for round in 0..15 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["history::kill_writer_child", "--exact", "--nocapture", "--ignored"])
            .args(["--test-threads", "1"])
            .env(CHILD_DB_ENV, &db)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !lines.iter().any(|line: &String| line.starts_with("committed ")) {
            let left = deadline.saturating_duration_since(Instant::now());
            match receiver.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(error) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("round {round}: the writer never committed ({error}); output: {lines:?}");
                }
            }
        }
        let delay = Duration::from_micros(random_u64() % 150_000);
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        reader.join().unwrap();
        lines.extend(receiver.try_iter());
        assert!(status.code().is_none(), "round {round}: the writer exited by itself: {lines:?}");
        killed_mid_run += 1;
        let committed: Vec<i64> = lines
            .iter()
            .filter_map(|line| line.strip_prefix("committed "))
            .map(|batch| batch.trim().parse().unwrap())
            .collect();
        reported.extend(&committed);

        runtime.block_on(async {
            let store = HistoryStore::open(&HistoryLocation::Sqlite(db.clone())).await.unwrap();
            let problems = store.integrity_check().await.unwrap();
            assert!(problems.is_empty(), "round {round}: integrity_check: {problems:?}");
            let count = store.point_count().await.unwrap();
            assert_eq!(count % BATCH as u64, 0, "round {round}: partial batch, {count} points");
            let all = store.range(&series, i64::MIN, i64::MAX).await.unwrap();
            assert_eq!(all.len() as u64, count);
            let mut batches: BTreeMap<i64, usize> = BTreeMap::new();
            for point in &all {
                assert_eq!(point.snapshot_id, Some(point.observed_at_ms / BATCH));
                *batches.entry(point.observed_at_ms / BATCH).or_default() += 1;
            }
            for (batch, size) in &batches {
                assert_eq!(*size, BATCH as usize, "round {round}: batch {batch} is partial");
            }
            for batch in &reported {
                assert!(batches.contains_key(batch), "round {round}: committed batch {batch} lost");
            }
            // Batches are written in order, so what is stored is exactly 0..n.
            let stored: Vec<i64> = batches.keys().copied().collect();
            assert_eq!(stored, (0..stored.len() as i64).collect::<Vec<_>>());
            println!(
                "round {round}: killed after {delay:?}, {} batches reported this round, {} stored",
                committed.len(),
                stored.len()
            );
            store.close().await;
        });
    }
    assert_eq!(killed_mid_run, 15);
    assert!(reported.len() >= 15, "only {} batches were reported committed", reported.len());
}

/// Opens the history store on `server`, retrying while the server starts up (bounded).
async fn open_store(server: &PostgresServer) -> HistoryStore {
    let location = HistoryLocation::Postgres(server.uri(&server.password));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match HistoryStore::open(&location).await {
            Ok(store) => return store,
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("postgres did not come up: {error:?}\nlog:\n{}", server.log_text()),
        }
    }
}

#[test]
fn postgres_round_trip_survives_reopen() {
    let Some(bindir) = postgres_bindir() else {
        eprintln!(
            "skipping postgres_round_trip_survives_reopen: PostgreSQL server binaries (initdb, \
             postgres) not found; install Debian's `postgresql` package"
        );
        return;
    };
    let server = PostgresServer::start(&bindir);
    runtime().block_on(async {
        let store = open_store(&server).await;
        let shown = format!("{store:?} {}", store.location());
        assert!(shown.contains("postgres:***@127.0.0.1"), "{shown}");
        assert!(!shown.contains(&server.password), "{shown}");
        write_and_check(&store).await;
        store.close().await;
        // A second open runs the (idempotent) migration again and sees everything.
        let reopened = open_store(&server).await;
        check_contents(&reopened).await;
        reopened.close().await;

        // A wrong password fails with an error that names the server but not the password.
        let wrong = "definitely-not-the-password";
        let location = HistoryLocation::Postgres(server.uri(wrong));
        let error = HistoryStore::open(&location).await.unwrap_err();
        let mut chain = format!("{error} / {error:?}");
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            chain.push_str(&format!(" / {cause}"));
            source = cause.source();
        }
        assert!(chain.contains(&format!("127.0.0.1:{}", server.port)), "{chain}");
        assert!(chain.contains("password authentication failed"), "{chain}");
        assert!(!chain.contains(wrong), "{chain}");
        assert!(!chain.contains(&server.password), "{chain}");
    });
}

/// 400 daily points of one series and 3 old points of another: a sweep with 90 days and 50 kept
/// points deletes the first's 310 oldest and none of the second's, in bounded statements.
async fn retention_scenario(store: &HistoryStore) {
    use icewatch::config::PointRetention;
    const DAY_MS: i64 = 86_400_000;
    let daily = SeriesKey::new("ret.daily", "volume", "rows_added", &[]);
    let rare = SeriesKey::new("ret.rare", "freshness", "commit_gap_seconds", &[]);
    let points = |series: &SeriesKey, days: std::ops::Range<i64>| -> Vec<Point> {
        days.map(|day| Point {
            series: series.clone(),
            observed_at_ms: day * DAY_MS,
            snapshot_id: Some(day),
            value: 1.0,
        })
        .collect()
    };
    store.append(&points(&daily, 0..400)).await.unwrap();
    store.append(&points(&rare, 0..3)).await.unwrap();
    let retention =
        PointRetention { max_age: Duration::from_secs(90 * 86_400), by_sensor: Default::default(), keep_points: 50 };
    let now_ms = 400 * DAY_MS;
    let deleted = icewatch::history::retention::sweep(store, &retention, now_ms).await.unwrap();
    assert_eq!(deleted, 310, "{}", store.location());
    let left = store.range(&daily, 0, now_ms).await.unwrap();
    assert_eq!((left.len(), left[0].observed_at_ms), (90, 310 * DAY_MS), "{}", store.location());
    assert_eq!(store.range(&rare, 0, now_ms).await.unwrap().len(), 3);
    assert_eq!(store.point_count().await.unwrap(), 93);
    assert_eq!(icewatch::history::retention::sweep(store, &retention, now_ms).await.unwrap(), 0);
}

#[test]
fn retention_deletes_old_points_on_sqlite_and_postgres() {
    let dir = tempfile::tempdir().expect("temp dir");
    runtime().block_on(async {
        let store = HistoryStore::open(&HistoryLocation::Sqlite(dir.path().join("history.db"))).await.unwrap();
        retention_scenario(&store).await;
        store.close().await;
    });
    let Some(bindir) = postgres_bindir() else {
        eprintln!("retention on PostgreSQL skipped: PostgreSQL server binaries (initdb, postgres) not found");
        return;
    };
    let server = PostgresServer::start(&bindir);
    runtime().block_on(async {
        let store = open_store(&server).await;
        retention_scenario(&store).await;
        store.close().await;
    });
}

/// The running service sweeps at start-up: 2,000 points of 100 days ago in a series of their
/// own go, down to the newest the retention keeps, and the counter says how many.
#[test]
fn the_service_deletes_points_past_their_retention_when_it_starts() {
    use crate::service::{Icewatch, demo_config, prepare_demo};
    const DAY_MS: i64 = 86_400_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let warehouse = prepare_demo(dir.path());
    let port = common::free_port();
    let config = demo_config(&warehouse, "retention.toml", port, "0 0 0 1 1 *", "");
    let text = common::read(&config).replacen(
        "path = \"icewatch-history.db\"",
        "path = \"icewatch-history.db\"\nkeep_points = 10",
        1,
    );
    std::fs::write(&config, text).unwrap();
    let old = SeriesKey::new("bronze.raw_trades", "volume", "retired_metric", &[]);
    let start_ms = chrono::Utc::now().timestamp_millis() - 100 * DAY_MS;
    let history = warehouse.dir.join("icewatch-history.db");
    runtime().block_on(async {
        let store = HistoryStore::open(&HistoryLocation::Sqlite(history.clone())).await.unwrap();
        let points: Vec<Point> = (0..2000)
            .map(|index| Point { series: old.clone(), observed_at_ms: start_ms + index, snapshot_id: None, value: 1.0 })
            .collect();
        assert_eq!(store.append(&points).await.unwrap(), 2000);
        store.close().await;
    });
    let icewatch = Icewatch::start(&config, port);
    let deleted = common::wait_for("the start-up retention sweep", Duration::from_secs(30), || {
        let metrics = icewatch.metrics();
        let line = metrics.lines().find(|line| line.starts_with("icewatch_history_points_deleted_total "))?;
        let deleted: f64 = line.rsplit(' ').next()?.parse().ok()?;
        (deleted > 0.0).then_some(deleted)
    });
    drop(icewatch);
    let left = runtime().block_on(async {
        let store = HistoryStore::open(&HistoryLocation::Sqlite(history)).await.unwrap();
        store.range(&old, 0, i64::MAX).await.unwrap().len()
    });
    // The demo's largest window decides how many stay (twice it, at least `keep_points`); the
    // demo's own points are two days old and stay.
    assert_eq!(left + deleted as usize, 2000, "{deleted} deleted, {left} left");
    assert!((10..2000).contains(&left), "{deleted} deleted, {left} left");
}
