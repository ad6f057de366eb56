//! Detection with no tuning on seasonal tables written by PyIceberg
//! (`tests/python/seasonal_tables.py`): `check` finds a drop at a daily cycle's peak hour with
//! the model it chose itself, and `backtest` replays weeks of weekly history, quiet on the
//! weekends and alerting on a Tuesday at weekend level and on a missing weekday load.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::common;

/// Runs `tests/python/seasonal_tables.py <dir>` and returns its JSON line.
fn write_tables(dir: &Path) -> Value {
    let script = common::repo_root().join("tests/python/seasonal_tables.py");
    let (code, stdout, stderr) = common::run(Command::new(common::python()).arg(script).arg(dir));
    assert_eq!(code, 0, "seasonal_tables.py failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|error| panic!("bad JSON ({error}): {stdout}"))
}

/// A config with only the keys a new user writes: each table's sensors, no tuning at all.
fn write_config(dir: &Path) -> std::path::PathBuf {
    let mut text =
        "[catalog]\ntype = \"sql\"\nuri = \"sqlite://catalog.db\"\nwarehouse = \"warehouse\"\nname = \"default\"\n\n\
                    [history]\npath = \"history.db\"\n"
            .to_string();
    for table in ["seasonal.daily_drop", "seasonal.weekly_volume", "seasonal.weekday_loads"] {
        text.push_str(&format!("\n[tables.\"{table}\".freshness]\n[tables.\"{table}\".volume]\n"));
    }
    let path = dir.join("sensors.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn json_of(command: &mut Command) -> (i32, Value) {
    let (code, stdout, stderr) = common::run(command);
    let value = serde_json::from_str(&stdout)
        .unwrap_or_else(|error| panic!("no JSON ({error})\nstdout:\n{stdout}\nstderr:\n{stderr}"));
    (code, value)
}

/// The replay of `table`'s `sensor` in a `backtest --format json` report.
fn replay<'r>(report: &'r Value, table: &str, sensor: &str) -> &'r Value {
    report["replays"]
        .as_array()
        .unwrap()
        .iter()
        .find(|replay| replay["table"] == table && replay["sensor"] == sensor)
        .unwrap_or_else(|| panic!("no replay of {table} {sensor} in {report:#}"))
}

/// The moments (ms) `replay` alerted at.
fn alerted_at(replay: &Value) -> Vec<i64> {
    replay["alerted"].as_array().unwrap().iter().map(|alert| alert["checked_at_ms"].as_i64().unwrap()).collect()
}

#[test]
fn untuned_seasonal_tables_are_judged_by_the_model_their_history_chooses() {
    let dir = tempfile::tempdir().unwrap();
    let described = write_tables(dir.path());
    let config = write_config(dir.path());

    // A drop of 60 % at the daily peak: within the spread of the whole day, so only a daily
    // model sees it, and nobody configured one.
    let (code, report) = json_of(
        Command::new(common::icewatch_bin())
            .args(["check", "--format", "json", "--table", "seasonal.daily_drop", "--config"])
            .arg(&config),
    );
    assert_eq!(code, 1, "{report:#}");
    let rows = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|result| result["sensor"] == "volume" && result["metric"] == "rows_added")
        .expect("a rows_added result");
    assert_eq!(rows["status"], "critical", "{rows:#}");
    assert_eq!(rows["seasonality"], "auto: hour_of_day", "{rows:#}");
    assert!(rows["message"].as_str().unwrap().contains("at this time of day"), "{rows:#}");

    let (code, report) =
        json_of(Command::new(common::icewatch_bin()).args(["backtest", "--format", "json", "--config"]).arg(&config));
    assert_eq!(code, 0, "{report:#}");

    // Weekly volume: the Tuesday at weekend level alerts, the last weekend's appends do not.
    let weekly = &described["seasonal.weekly_volume"];
    let volume = replay(&report, "seasonal.weekly_volume", "volume");
    let alerts = alerted_at(volume);
    let low_tuesday = weekly["low_tuesday_ms"].as_i64().unwrap();
    assert!(alerts.contains(&low_tuesday), "the low Tuesday did not alert: {volume:#}");
    for weekend in weekly["last_weekend_ms"].as_array().unwrap() {
        assert!(!alerts.contains(&weekend.as_i64().unwrap()), "a weekend append alerted: {volume:#}");
    }
    assert!(
        volume["models"].as_object().unwrap().keys().any(|model| model != "auto: none"),
        "no weekly model was chosen: {volume:#}"
    );

    // Weekday-only loads: the gap over the last weekend is quiet, a missing Tuesday load is late.
    let loads = &described["seasonal.weekday_loads"];
    let freshness = replay(&report, "seasonal.weekday_loads", "freshness");
    let alerts = alerted_at(freshness);
    let after_weekend = loads["after_last_weekend_ms"].as_i64().unwrap() - 1;
    let after_missing = loads["after_missing_ms"].as_i64().unwrap() - 1;
    assert!(!alerts.contains(&after_weekend), "the last weekend was called late: {freshness:#}");
    assert!(alerts.contains(&after_missing), "the missing Tuesday load was not: {freshness:#}");

    // The text report names every table and the figures.
    let (code, stdout, stderr) =
        common::run(Command::new(common::icewatch_bin()).args(["backtest", "--config"]).arg(&config));
    assert_eq!(code, 0, "{stderr}");
    for table in ["seasonal.daily_drop", "seasonal.weekly_volume", "seasonal.weekday_loads"] {
        assert!(stdout.contains(table), "{stdout}");
    }
    assert!(stdout.contains("checks replayed"), "{stdout}");
    println!("{stdout}");
}
