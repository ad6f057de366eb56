//! The command line end to end through the real binary: `--help` snapshots, exit codes,
//! `--config` / `ICEWATCH_CONFIG`, unreachable catalogs (one clear error, no password),
//! `validate --online` on the demo warehouse, and `--log-format json`.

use std::path::Path;
use std::process::Command;

use crate::common::{free_port, icewatch_bin, read, repo_root, run};
use crate::config::icewatch_in;

fn help(args: &[&str]) -> String {
    let (code, stdout, stderr) = run(&mut icewatch_in(&repo_root(), args));
    assert_eq!(code, 0, "{args:?}: {stderr}");
    stdout
}

#[test]
fn help_of_the_main_command() {
    insta::assert_snapshot!("help_main", help(&["--help"]));
}

#[test]
fn help_of_run() {
    insta::assert_snapshot!("help_run", help(&["run", "--help"]));
}

#[test]
fn help_of_check() {
    insta::assert_snapshot!("help_check", help(&["check", "--help"]));
}

#[test]
fn help_of_validate() {
    insta::assert_snapshot!("help_validate", help(&["validate", "--help"]));
}

#[test]
fn help_of_demo() {
    insta::assert_snapshot!("help_demo", help(&["demo", "--help"]));
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    for args in [&["check", "--fail-on", "sometimes"][..], &["validate", "--bogus"], &["frobnicate"], &[]] {
        let (code, _, stderr) = run(&mut icewatch_in(dir.path(), args));
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn a_missing_config_file_is_one_clear_error_with_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    for command in ["validate", "check", "run"] {
        let (code, stdout, stderr) = run(&mut icewatch_in(dir.path(), &[command, "--config", "nope/sensors.toml"]));
        assert_eq!(code, 2, "{command}: {stdout}{stderr}");
        assert_eq!(
            stderr,
            "error: config file `nope/sensors.toml` not found (pass `--config FILE` or set `ICEWATCH_CONFIG`)\n",
            "{command}"
        );
    }
}

const VALID: &str = "[catalog]\ntype = \"sql\"\nuri = \"sqlite://catalog.db\"\nwarehouse = \"warehouse\"\n";

#[test]
fn config_defaults_to_sensors_toml_in_the_current_folder_and_follows_icewatch_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, _, stderr) = run(&mut icewatch_in(dir.path(), &["validate"]));
    assert_eq!(code, 2);
    assert!(stderr.contains("config file `sensors.toml` not found"), "{stderr}");

    std::fs::write(dir.path().join("sensors.toml"), VALID).expect("write");
    let (code, stdout, stderr) = run(&mut icewatch_in(dir.path(), &["validate"]));
    assert_eq!((code, stdout.as_str()), (0, "`sensors.toml` is valid: 0 table(s), 0 pipeline(s)\n"), "{stderr}");

    std::fs::create_dir(dir.path().join("etc")).expect("mkdir");
    std::fs::write(dir.path().join("etc/other.toml"), VALID).expect("write");
    let (code, stdout, stderr) = run(icewatch_in(dir.path(), &["validate"]).env("ICEWATCH_CONFIG", "etc/other.toml"));
    assert_eq!((code, stdout.as_str()), (0, "`etc/other.toml` is valid: 0 table(s), 0 pipeline(s)\n"), "{stderr}");
    // `--config` wins over the environment.
    let (code, stdout, _) =
        run(icewatch_in(dir.path(), &["validate", "--config", "sensors.toml"])
            .env("ICEWATCH_CONFIG", "etc/missing.toml"));
    assert_eq!((code, stdout.as_str()), (0, "`sensors.toml` is valid: 0 table(s), 0 pipeline(s)\n"));
}

/// A config with one volume sensor on `a.b` against `uri`.
fn write_config(dir: &Path, uri: &str) {
    let text = format!(
        "[catalog]\ntype = \"sql\"\nuri = \"{uri}\"\nwarehouse = \"warehouse\"\n\n[history]\npath = \"history.db\"\n\n\
         [tables.\"bronze.raw_trades\".volume]\ndeviation_percent = 20\n"
    );
    std::fs::write(dir.join("sensors.toml"), text).expect("write config");
}

#[test]
fn a_missing_sqlite_catalog_is_one_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path(), "sqlite://no/such/catalog.db");
    let expected_uri = format!("sqlite://{}", dir.path().join("no/such/catalog.db").display());
    for args in [&["validate", "--online"][..], &["check"]] {
        let (code, stdout, stderr) = run(&mut icewatch_in(dir.path(), args));
        assert_ne!(code, 0, "{args:?}");
        if args[0] == "validate" {
            assert_eq!(code, 2, "a wrong catalog path is a configuration problem: {stderr}");
        }
        let output = format!("{stdout}{stderr}");
        assert!(output.contains(&format!("cannot reach catalog `{expected_uri}`")), "{args:?}: {output}");
        assert!(!output.contains("panicked") && !output.contains("stack backtrace"), "{output}");
    }
    assert!(!dir.path().join("no").exists(), "a missing catalog must not be created");
}

#[test]
fn an_unreachable_postgres_catalog_names_the_uri_without_its_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    write_config(dir.path(), &format!("postgres://user:secret@127.0.0.1:{port}/db"));
    let redacted = format!("postgres://user:***@127.0.0.1:{port}/db");
    // Both commands wait for the connection attempt: run them side by side.
    let runs: Vec<_> = [&["validate", "--online"][..], &["check", "--format", "json"]]
        .into_iter()
        .map(|args| {
            let mut command = icewatch_in(dir.path(), args);
            std::thread::spawn(move || (args, run(&mut command)))
        })
        .collect();
    for handle in runs {
        let (args, (code, stdout, stderr)) = handle.join().expect("thread");
        assert_ne!(code, 0, "{args:?}");
        assert!(
            !stdout.contains("secret") && !stderr.contains("secret"),
            "{args:?} leaked the password:\n{stdout}{stderr}"
        );
        assert!(
            format!("{stdout}{stderr}").contains(&format!("cannot reach catalog `{redacted}`")),
            "{args:?}:\n{stdout}{stderr}"
        );
        if args[0] == "validate" {
            let lines: Vec<&str> = stderr.lines().collect();
            assert!(lines.len() <= 2, "one error and its cause, not driver noise:\n{stderr}");
        } else {
            let report: serde_json::Value = serde_json::from_str(&stdout).expect("check --format json prints JSON");
            assert_eq!(report["exit_code"], code);
        }
    }
}

#[test]
fn log_format_json_makes_every_log_line_a_json_object() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path(), "sqlite://missing.db");
    let (code, stdout, stderr) =
        run(&mut icewatch_in(dir.path(), &["--log-format", "json", "check", "--format", "json"]));
    assert_eq!(code, 1, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("stdout is the JSON report");
    assert_eq!(report["summary"]["error"], 1);
    let lines: Vec<&str> = stderr.lines().filter(|line| !line.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "a failing sensor logs a warning");
    for line in &lines {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
        assert!(event["level"].is_string() && event["timestamp"].is_string(), "{line}");
    }
    assert!(lines.iter().any(|line| line.contains("\"table\":\"bronze.raw_trades\"")), "{stderr}");
    // The environment variable does the same.
    let (_, _, stderr) = run(icewatch_in(dir.path(), &["check"]).env("ICEWATCH_LOG_FORMAT", "json"));
    assert!(
        stderr
            .lines()
            .filter(|line| !line.trim().is_empty())
            .all(|line| serde_json::from_str::<serde_json::Value>(line).is_ok()),
        "{stderr}"
    );
}

/// The demo warehouse end to end: its config and the repository's sensors.toml validate
/// online, a bad column and an unknown table are reported, and `check` gives a JSON report.
#[test]
fn validate_online_on_the_demo_warehouse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, stdout, stderr) = run(Command::new(icewatch_bin())
        .args(["demo", "--prepare-only", "--dir", "demo"])
        .current_dir(dir.path())
        .env("NO_COLOR", "1"));
    assert_eq!(code, 0, "demo --prepare-only failed:\n{stdout}{stderr}");
    let demo_config = dir.path().join("demo/sensors.toml");
    assert!(demo_config.exists());

    let (code, stdout, stderr) =
        run(&mut icewatch_in(dir.path(), &["validate", "--online", "--config", "demo/sensors.toml"]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("all 3 table(s) load"), "{stdout}");

    // The repository's example config points at ./demo: it must work from the folder above.
    std::fs::copy(repo_root().join("sensors.toml"), dir.path().join("sensors.toml")).expect("copy example");
    let (code, stdout, stderr) = run(&mut icewatch_in(dir.path(), &["validate", "--online"]));
    assert_eq!(code, 0, "the example sensors.toml does not match what `icewatch demo` writes:\n{stdout}{stderr}");

    // An unknown column and an unknown table are reported together, exit 2.
    let broken = read(&demo_config)
        .replacen("timestamp_column = \"ts\"", "timestamp_column = \"event_ts\"", 1)
        .replacen("notional = [\"mean\", \"max\"]", "notionl = [\"mean\", \"max\"]", 1)
        + "\n[tables.\"bronze.no_such_table\".volume]\ndeviation_percent = 20\n"
        + "\n[tables.\"bronze.raw_trade\".volume]\ndeviation_percent = 20\n";
    std::fs::write(dir.path().join("demo/broken.toml"), broken).expect("write broken config");
    let (code, stdout, stderr) =
        run(&mut icewatch_in(dir.path(), &["validate", "--online", "--config", "demo/broken.toml"]));
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("4 problem(s)"), "{stderr}");
    assert!(
        stderr.contains("`tables.\"bronze.raw_trades\".freshness.timestamp_column`: column `event_ts` not found in table `bronze.raw_trades`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("column `notionl` not found in table `silver.cleaned_trades` (did you mean `notional`?)"),
        "{stderr}"
    );
    assert!(stderr.contains("table `bronze.no_such_table` not found"), "{stderr}");
    // A catalog file that is not there is a configuration problem too, at its key.
    let missing = read(&demo_config).replacen("sqlite://catalog.db", "sqlite://no/such/catalog.db", 1);
    std::fs::write(dir.path().join("demo/missing.toml"), missing).expect("write config");
    let (missing_code, missing_stdout, missing_stderr) =
        run(&mut icewatch_in(dir.path(), &["validate", "--online", "--config", "demo/missing.toml"]));
    assert_eq!(missing_code, 2, "{missing_stdout}{missing_stderr}");
    assert!(
        missing_stderr.contains("demo/missing.toml:6:7: `catalog.uri`: cannot reach catalog `sqlite://")
            && missing_stderr.contains("the catalog database file"),
        "{missing_stderr}"
    );
    // A wrong catalog `name`: said once, with the names the database holds.
    let misnamed = read(&demo_config).replacen("name = \"default\"", "name = \"defualt\"", 1);
    std::fs::write(dir.path().join("demo/misnamed.toml"), misnamed).expect("write config");
    let (misnamed_code, _, misnamed_stderr) =
        run(&mut icewatch_in(dir.path(), &["validate", "--online", "--config", "demo/misnamed.toml"]));
    assert_eq!(misnamed_code, 2, "{misnamed_stderr}");
    assert!(misnamed_stderr.contains("1 problem(s)"), "{misnamed_stderr}");
    assert!(
        misnamed_stderr.contains("`catalog.name`: no table of this config is in catalog `defualt`")
            && misnamed_stderr.contains("(did you mean `default`?)"),
        "{misnamed_stderr}"
    );
    // A typo of a table the catalog holds gets the name it has.
    assert!(stderr.contains("table `bronze.raw_trade` not found in catalog"), "{stderr}");
    assert!(stderr.contains("(did you mean `bronze.raw_trades`?)"), "{stderr}");
    // Each online problem points at the key that named the table or column, like offline ones.
    for problem in stderr.lines().skip(1) {
        let place: Vec<&str> = problem.trim_start().splitn(4, ':').collect();
        assert!(
            place.len() == 4
                && place[0] == "demo/broken.toml"
                && place[1].parse::<usize>().is_ok()
                && place[2].parse::<usize>().is_ok(),
            "{problem}"
        );
    }

    // `check` on one table: a JSON report whose exit code is the process's.
    let (code, stdout, stderr) = run(&mut icewatch_in(
        dir.path(),
        &[
            "--log-format",
            "json",
            "check",
            "--config",
            "demo/sensors.toml",
            "--format",
            "json",
            "--table",
            "bronze.raw_trades",
            "--fail-on",
            "critical",
        ],
    ));
    assert!(code == 0 || code == 1, "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{error}: {stdout}"));
    assert_eq!(report["exit_code"], code);
    let results = report["results"].as_array().expect("results");
    assert!(!results.is_empty());
    assert!(results.iter().all(|result| result["table"] == "bronze.raw_trades"), "{stdout}");
    for line in stderr.lines().filter(|line| !line.trim().is_empty()) {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
    }

    // An undeclared `--table` is a usage error.
    let (code, _, stderr) =
        run(&mut icewatch_in(dir.path(), &["check", "--config", "demo/sensors.toml", "--table", "bronze.raw_trade"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("(did you mean `bronze.raw_trades`?)"), "{stderr}");
}
