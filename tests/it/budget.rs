//! The false-alarm budget: `backtest` over a varied population of healthy tables written by
//! PyIceberg (`tests/python/population.py`: daily and weekly cycles, weekday-only loads,
//! compounding growth, jittered cadence, heavy-tailed batch sizes, tiny tables, daily retention
//! deletes, full refreshes; no per-table tuning) must raise at most one alert per 1,000 checks,
//! while every injected problem of a matching set (drops, spikes, duplicate loads, zero rows,
//! stale tables, σ blow-ups) is reported at the check it belongs to.
//!
//! The population takes minutes to write, so it is written once and kept outside the clone,
//! under `~/.cache/icewatch/fixtures` (or `ICEWATCH_FIXTURES`), keyed by a hash of the
//! generator's sources: changing the generator writes a new one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common;

/// Checks within this much of a table's first commit are a brand-new table's (no cycle can
/// be known before its first weekend): replayed as history, counted separately.
const WARM_UP: &str = "7d";
const GENERATOR: [&str; 3] =
    ["tests/python/population.py", "tests/python/seasonal_tables.py", "tests/python/metadata_tables.py"];

/// FNV-1a of the generator's sources: stable across Rust releases, unlike `DefaultHasher`.
fn generator_version() -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for file in GENERATOR {
        for byte in common::read(&common::repo_root().join(file)).bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// The population's folder, written first if this version of the generator has not been.
fn population() -> PathBuf {
    let root = std::env::var_os("ICEWATCH_FIXTURES").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/icewatch/fixtures")
    });
    let dir = root.join(format!("population-{}", generator_version()));
    if dir.join("population.json").exists() {
        return dir;
    }
    // The catalog records absolute paths, so the population is written in place; its
    // `population.json`, written last, marks it complete, and a partial one is started over.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&root).unwrap();
    let started = std::time::Instant::now();
    let (code, stdout, stderr) = common::run(
        Command::new(common::python())
            .arg(common::repo_root().join("tests/python/population.py"))
            .arg(&dir)
            .current_dir(common::repo_root().join("tests/python")),
    );
    assert_eq!(code, 0, "population.py failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    println!("wrote the population in {:?}: {}", started.elapsed(), stdout.trim());
    dir
}

fn backtest(dir: &Path, warm_up: &str) -> Value {
    let (code, stdout, stderr) = common::run(
        Command::new(common::icewatch_bin())
            .args(["backtest", "--format", "json", "--warm-up", warm_up, "--config"])
            .arg(dir.join("sensors.toml")),
    );
    assert_eq!(code, 0, "backtest failed\nstderr:\n{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("no JSON ({error}): {stdout}"))
}

/// Healthy checks and alerts of a backtest, and the alerts by kind of table.
fn false_alarms(report: &Value, tables: &serde_json::Map<String, Value>) -> (u64, u64, BTreeMap<String, u64>) {
    let (mut checks, mut alerts, mut by_kind) = (0, 0, BTreeMap::new());
    for replay in report["replays"].as_array().unwrap() {
        let table = &tables[replay["table"].as_str().unwrap()];
        if table.get("problem").is_some() {
            continue;
        }
        checks += replay["checks"].as_u64().unwrap();
        let alerted = replay["alerts"].as_u64().unwrap();
        alerts += alerted;
        if alerted > 0 {
            *by_kind.entry(format!("{} {}", table["kind"].as_str().unwrap(), replay["sensor"])).or_default() += alerted;
            for alert in replay["alerted"].as_array().unwrap() {
                println!("  false alarm: {} {}: {}", replay["table"], replay["sensor"], alert["message"]);
            }
        }
    }
    (checks, alerts, by_kind)
}

#[test]
fn a_varied_healthy_population_stays_within_one_false_alarm_per_thousand_checks_and_every_problem_is_found() {
    let dir = population();
    let described: Value = serde_json::from_str(&common::read(&dir.join("population.json"))).unwrap();
    let tables = described["tables"].as_object().unwrap();
    let healthy = tables.values().filter(|table| table.get("problem").is_none()).count();
    assert!(healthy >= 200, "only {healthy} healthy tables");

    let report = backtest(&dir, WARM_UP);
    assert_eq!(report["failed"], serde_json::json!([]), "tables not replayed: {:#}", report["failed"]);
    let (checks, alerts, by_kind) = false_alarms(&report, tables);
    let per_thousand = 1000.0 * alerts as f64 / checks as f64;

    // Every injected problem alerts at its own check.
    let mut found = 0;
    let mut missed = Vec::new();
    let mut by_problem: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    for (name, table) in tables {
        let Some(problem) = table["problem"].as_str() else { continue };
        let replay = report["replays"]
            .as_array()
            .unwrap()
            .iter()
            .find(|replay| replay["table"] == name.as_str() && replay["sensor"] == table["sensor"])
            .unwrap_or_else(|| panic!("no replay of {name}"));
        let at = table["checked_at_ms"].as_i64().unwrap();
        let hit = replay["alerted"].as_array().unwrap().iter().any(|alert| alert["checked_at_ms"] == at);
        let entry = by_problem.entry(problem).or_default();
        entry.1 += 1;
        if hit {
            found += 1;
            entry.0 += 1;
        } else {
            missed.push(format!("{name} ({problem}, {}): {:#}", table["sensor"], replay["alerted"]));
        }
    }
    let injected = found + missed.len();

    let cold = backtest(&dir, "0s");
    let (cold_checks, cold_alerts, cold_by_kind) = false_alarms(&cold, tables);

    println!(
        "false alarms: {alerts} in {checks} checks of {healthy} healthy tables after {WARM_UP} of history = {per_thousand:.2} per 1,000 {by_kind:?}"
    );
    println!(
        "from the first commit (cold start included): {cold_alerts} in {cold_checks} checks = {:.2} per 1,000 {cold_by_kind:?}",
        1000.0 * cold_alerts as f64 / cold_checks as f64
    );
    println!("injected problems found: {found} of {injected} {by_problem:?}");
    assert!(per_thousand <= 1.0, "{alerts} false alarms in {checks} checks: {per_thousand:.2} per 1,000");
    assert!(missed.is_empty(), "missed:\n{}", missed.join("\n"));
}
