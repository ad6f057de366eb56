//! The config error corpus (`tests/config_errors/`, one file per mistake, named for it) run
//! through the real binary, with the exact messages kept as insta snapshots; plus the checks
//! that keep `docs/configuration.md` and the example `sensors.toml` true.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{BoundedRun, icewatch_bin, read, repo_root, run, run_for_at_most};

/// Set for every corpus run: it must never appear in any output.
const SECRET: &str = "hunter2-corpus-s3cret";

fn corpus_dir() -> PathBuf {
    repo_root().join("tests/config_errors")
}

/// `icewatch <args>` in `dir`, with a clean environment for the variables icewatch reads.
pub fn icewatch_in(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(icewatch_bin());
    command
        .args(args)
        .current_dir(dir)
        .env_remove("ICEWATCH_CONFIG")
        .env_remove("ICEWATCH_LOG_FORMAT")
        .env_remove("RUST_LOG")
        .env_remove("ICEWATCH_TEST_UNSET_PASSWORD")
        .env("ICEWATCH_TEST_SECRET", SECRET)
        .env("NO_COLOR", "1");
    command
}

/// Runs `validate` and `check` on one fixture: both exit 2 with the same message, which is
/// snapshotted; nothing panics and the secret never shows.
fn check_fixture(name: &str) {
    let file = format!("{name}.toml");
    assert!(corpus_dir().join(&file).exists(), "missing fixture {file}");
    let (code, stdout, stderr) = run(&mut icewatch_in(&corpus_dir(), &["validate", "--config", &file]));
    assert_eq!(code, 2, "validate {file}: exit code\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.is_empty(), "validate {file} printed to stdout: {stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains(SECRET), "the secret leaked:\n{stderr}");
    assert!(
        stderr.lines().all(|line| !line.chars().any(|c| c.is_control() && c != '\t')),
        "raw control character in {stderr:?}"
    );
    insta::assert_snapshot!(name, stderr);

    let (check_code, check_stdout, check_stderr) =
        run(&mut icewatch_in(&corpus_dir(), &["check", "--config", &file, "--format", "json"]));
    assert_eq!((check_code, check_stdout.as_str(), check_stderr.as_str()), (2, "", stderr.as_str()), "check {file}");
}

macro_rules! corpus {
    ($($name:ident),* $(,)?) => {
        const FIXTURES: &[&str] = &[$(stringify!($name)),*];
        $(
            #[test]
            fn $name() {
                check_fixture(stringify!($name));
            }
        )*
    };
}

corpus! {
    bad_catalog_uri,
    bad_cron_field_count,
    bad_cron_value,
    bad_duration,
    bad_env_reference,
    bad_listen_address,
    duplicate_key,
    duplicate_stage,
    duration_without_unit,
    empty,
    hostile_table_names,
    invalid_utf8,
    malformed_toml,
    many_problems,
    missing_catalog_keys,
    negative_deviation_percent,
    negative_threshold,
    pipeline_cycle,
    pipeline_stages_malformed,
    secret_env_var_in_bad_value,
    section_not_a_table,
    stage_table_not_declared,
    table_names_differing_in_whitespace,
    tables_as_array,
    unknown_choice_values,
    unknown_iceberg_type,
    unknown_key_typo,
    unknown_sensor_kind,
    unknown_statistic,
    unknown_top_level_key,
    unset_env_var,
    unterminated_string,
    upstream_stage_missing,
    warn_after_longer_than_critical,
    window_smaller_than_min_history,
    wrong_value_types,
    zero_duration,
}

#[test]
fn every_fixture_in_the_corpus_has_a_test() {
    let mut on_disk: Vec<String> = std::fs::read_dir(corpus_dir())
        .expect("read tests/config_errors")
        .map(|entry| entry.expect("dir entry").file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut tested: Vec<String> = FIXTURES.iter().map(|name| format!("{name}.toml")).collect();
    tested.sort();
    assert_eq!(on_disk, tested, "add new fixtures to the `corpus!` list");
    assert!(FIXTURES.len() >= 20);
}

#[test]
fn a_file_with_many_problems_reports_every_one_with_its_position() {
    let (code, _, stderr) = run(&mut icewatch_in(&corpus_dir(), &["validate", "--config", "many_problems.toml"]));
    assert_eq!(code, 2);
    let located: Vec<&str> =
        stderr.lines().filter(|line| line.trim_start().starts_with("many_problems.toml:")).collect();
    assert!(located.len() >= 3, "{stderr}");
    assert!(stderr.starts_with(&format!("error: {} problems in `many_problems.toml`", located.len())), "{stderr}");
    for line in located {
        let position: Vec<&str> = line.trim_start().splitn(4, ':').collect();
        assert!(position[1].parse::<usize>().is_ok() && position[2].parse::<usize>().is_ok(), "{line}");
    }
}

/// A `[catalog]` that is fine, for files whose problem is elsewhere.
const CATALOG: &str = "[catalog]\ntype = \"sql\"\nuri = \"sqlite://catalog.db\"\nwarehouse = \"/w\"\n";

/// `icewatch validate --config NAME` on `text` written to a temp dir as `name`, killed after
/// 60 s (the pathological files below took from 35 s to over two minutes before they were fixed).
fn validate_written(name: &str, text: &str) -> BoundedRun {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(name), text).expect("write config");
    run_for_at_most(&mut icewatch_in(dir.path(), &["validate", "--config", name]), Duration::from_secs(60))
        .unwrap_or_else(|| panic!("`icewatch validate` on {name} was still running after 60 s"))
}

/// A bound for the dev build, with room for a loaded machine; a faster build meets it too.
const PROMPTLY: Duration = Duration::from_secs(5);

#[test]
fn a_10_mb_unknown_key_is_quoted_shortened_and_reported_promptly() {
    let key = "k".repeat(10 * 1024 * 1024);
    let run = validate_written("huge_key.toml", &format!("{key} = 1\n{CATALOG}"));
    println!("a 10 MB unknown key: reported in {:?}, {} bytes on stderr", run.elapsed, run.stderr.len());
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.len() < 1_000, "the message is not bounded: {} bytes", run.stderr.len());
    assert!(run.stderr.contains("huge_key.toml:1:1: `\"kkkkkkkk"), "{}", run.stderr);
    assert_eq!(run.stderr.matches("k… (10485760 characters)").count(), 2, "key path and message: {}", run.stderr);
    if cfg!(debug_assertions) {
        assert!(run.elapsed < PROMPTLY, "took {:?}", run.elapsed);
    }
}

#[test]
fn fifty_thousand_problems_are_counted_the_first_hundred_printed_promptly() {
    let keys: String = (0..50_000).map(|index| format!("unknown_{index} = 1\n")).collect();
    let run = validate_written("many.toml", &format!("{CATALOG}[defaults]\n{keys}"));
    println!("50,000 problems: reported in {:?}, {} bytes on stderr", run.elapsed, run.stderr.len());
    assert_eq!(run.code, 2, "{}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines[0], "error: 50000 problems in `many.toml`");
    assert_eq!(lines.len(), 1 + 100 + 1, "{}", run.stderr);
    assert!(lines[1].starts_with("  many.toml:6:1: `defaults.unknown_0`: unknown key `unknown_0`"), "{}", lines[1]);
    assert!(lines[100].starts_with("  many.toml:105:1: `defaults.unknown_99`: "), "{}", lines[100]);
    assert_eq!(lines[101], "  and 49900 more");
    if cfg!(debug_assertions) {
        assert!(run.elapsed < PROMPTLY, "took {:?}", run.elapsed);
    }
}

#[test]
fn a_fifo_directory_or_device_as_the_config_is_refused_without_waiting_on_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let made = Command::new("mkfifo").arg(dir.path().join("fifo.toml")).status().expect("run mkfifo");
    assert!(made.success(), "mkfifo failed");
    std::fs::create_dir(dir.path().join("folder.toml")).expect("create folder");
    let refused = [
        ("validate", "fifo.toml", "a FIFO (named pipe)"),
        ("check", "fifo.toml", "a FIFO (named pipe)"),
        ("validate", "folder.toml", "a directory"),
        ("validate", "/dev/null", "a character device"),
    ];
    for (command, config, kind) in refused {
        // Opening the FIFO for reading used to wait for a writer, forever.
        let run =
            run_for_at_most(&mut icewatch_in(dir.path(), &[command, "--config", config]), Duration::from_secs(10))
                .unwrap_or_else(|| panic!("`icewatch {command}` was still waiting on {config} after 10 s"));
        println!("`icewatch {command}` on {config}: refused in {:?}", run.elapsed);
        assert_eq!(
            (run.code, run.stdout.as_str(), run.stderr.as_str()),
            (2, "", format!("error: config file `{config}` is {kind}, not a regular file\n").as_str()),
            "{command} {config}"
        );
    }
}

#[test]
fn a_config_file_over_16_mib_is_refused_unread() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Sparse: the size is what is checked, before any of it is read.
    let file = std::fs::File::create(dir.path().join("huge.toml")).expect("create");
    file.set_len(17 * 1024 * 1024).expect("set length");
    let run =
        run_for_at_most(&mut icewatch_in(dir.path(), &["validate", "--config", "huge.toml"]), Duration::from_secs(10))
            .expect("validate finished");
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(run.stderr, "error: config file `huge.toml` is larger than the 16 MiB limit (17825792 bytes)\n");
}

#[test]
fn an_unset_variable_is_named_and_exits_2() {
    let (code, stdout, stderr) = run(&mut icewatch_in(&corpus_dir(), &["validate", "--config", "unset_env_var.toml"]));
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("environment variable `ICEWATCH_TEST_UNSET_PASSWORD` is not set"), "{stderr}");
}

#[test]
fn a_set_secret_is_used_but_never_printed() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("sensors.toml"),
        "[catalog]\ntype = \"sql\"\nuri = \"postgres://icewatch:${ICEWATCH_TEST_SECRET}@127.0.0.1:1/catalog\"\n\
         warehouse = \"s3://warehouse/${ICEWATCH_TEST_SECRET}\"\ns3_secret_access_key = \"${ICEWATCH_TEST_SECRET}\"\n\n\
         [pushgateway]\nurl = \"http://127.0.0.1:9091\"\nusername = \"icewatch\"\npassword = \"${ICEWATCH_TEST_SECRET}\"\n",
    )
    .expect("write config");
    let (code, stdout, stderr) = run(&mut icewatch_in(dir.path(), &["validate"]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET), "{stdout}{stderr}");
}

#[test]
fn the_example_sensors_toml_validates_offline() {
    let (code, stdout, stderr) = run(&mut icewatch_in(&repo_root(), &["validate", "--config", "sensors.toml"]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("3 table(s), 1 pipeline(s)"), "{stdout}");
}

/// Every key the parser accepts (the `*_KEYS` tables of `src/config/sections/`) is documented.
/// (`config::key_docs` checks each key's default and meaning too, section by section.)
#[test]
fn every_config_key_is_documented() {
    let sections = repo_root().join("src/config/sections");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&sections)
        .expect("read src/config/sections")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "rs"))
        .collect();
    files.sort();
    let parser: String = files.iter().map(|file| read(file)).collect();
    let docs = read(&repo_root().join("docs/configuration.md"));
    let mut keys = Vec::new();
    for block in parser.split("const ").skip(1) {
        let Some((name, rest)) = block.split_once(':') else { continue };
        if !name.trim().ends_with("_KEYS") {
            continue;
        }
        let Some(list) = rest
            .split_once('=')
            .and_then(|(_, value)| value.split_once("&["))
            .and_then(|(_, list)| list.split_once("];"))
            .map(|(list, _)| list)
        else {
            continue;
        };
        keys.extend(
            list.split("name: \"").skip(1).filter_map(|entry| entry.split_once('"')).map(|(key, _)| key.to_string()),
        );
    }
    assert!(keys.len() > 50, "parsed only {} keys from parse.rs", keys.len());
    let missing: Vec<&String> =
        keys.iter().filter(|key| !docs.contains(&format!("`{key}`")) && !docs.contains(&format!("`[{key}"))).collect();
    assert!(missing.is_empty(), "keys missing from docs/configuration.md: {missing:?}");
    for section in ["catalog", "history", "server", "pushgateway", "defaults", "tables", "pipelines"] {
        assert!(docs.contains(&format!("## `[{section}")), "no `## [{section}...]` section in docs/configuration.md");
    }
}
