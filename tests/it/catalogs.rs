//! The catalog connections beyond SQLite-on-local-disk, end to end through the real binary: a
//! SQL catalog on a throwaway PostgreSQL server, and a warehouse on S3-compatible storage (a
//! local `moto` server). Tables are written with the iceberg crate; `icewatch check` and
//! `icewatch validate --online` must read them without errors and without printing secrets.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Int32Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema as ArrowSchema};
use datafusion::arrow::record_batch::RecordBatch;
use iceberg::spec::{NestedField, PrimitiveType, Schema, Type};
use iceberg::{Catalog, CatalogBuilder, NamespaceIdent, TableCreation, TableIdent};
use iceberg_catalog_sql::SqlCatalogBuilder;
use iceberg_storage_opendal::OpenDalResolvingStorageFactory;
use serde_json::Value;

use crate::common::{self, ChildGuard};
use crate::postgres::{PostgresServer, postgres_bindir};

/// Rows of each append; the tables hold their sum.
const BATCHES: [i64; 3] = [100, 250, 175];

fn table_schema() -> Schema {
    Schema::builder()
        .with_fields(vec![
            Arc::new(NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long))),
            Arc::new(NestedField::optional(2, "qty", Type::Primitive(PrimitiveType::Int))),
            Arc::new(NestedField::optional(3, "venue", Type::Primitive(PrimitiveType::String))),
        ])
        .build()
        .unwrap()
}

/// Creates `ns.orders` in `catalog` and appends `BATCHES` to it, one snapshot each.
async fn write_orders(catalog: &dyn Catalog, namespace: &str) {
    let namespace = NamespaceIdent::new(namespace.to_string());
    catalog.create_namespace(&namespace, HashMap::new()).await.unwrap();
    let creation = TableCreation::builder().name("orders".to_string()).schema(table_schema()).build();
    catalog.create_table(&namespace, creation).await.unwrap();
    let ident = TableIdent::new(namespace, "orders".to_string());
    let arrow = Arc::new(ArrowSchema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("qty", DataType::Int32, true),
        Field::new("venue", DataType::Utf8, true),
    ]));
    let mut next_id = 0;
    for count in BATCHES {
        let batch = RecordBatch::try_new(
            arrow.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(next_id..next_id + count)),
                Arc::new(Int32Array::from_iter_values((0..count).map(|i| (i % 7) as i32))),
                Arc::new(StringArray::from_iter_values((0..count).map(|i| if i % 2 == 0 { "XNYS" } else { "XLON" }))),
            ],
        )
        .unwrap();
        icewatch::demo::append_batch(catalog, &ident, batch).await.unwrap();
        next_id += count;
    }
}

/// A sensors.toml with `catalog` as its `[catalog]` body and every sensor on `table`; the
/// distribution sensor profiles the whole table, so its `row_count` is the table's row count.
fn write_config(dir: &Path, catalog: &str, table: &str) -> PathBuf {
    let text = format!(
        "[catalog]\n{catalog}\n\n[history]\npath = \"history.db\"\n\n[defaults]\nmin_history = 5\n\n\
         [tables.\"{table}\".freshness]\nwarn_after = \"1d\"\ncritical_after = \"2d\"\n\n\
         [tables.\"{table}\".volume]\ndeviation_percent = 20\nwindow = \"30d\"\n\n\
         [tables.\"{table}\".schema]\n\n\
         [tables.\"{table}\".distribution]\nscope = \"table\"\ncolumns = {{ qty = [\"row_count\", \"mean\", \"null_percent\"] }}\n"
    );
    let path = dir.join("sensors.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the binary with `args` and `env`: (exit code, stdout, stderr).
fn icewatch(args: &[&str], config: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(common::icewatch_bin());
    command.args(args).arg("--config").arg(config).envs(env.iter().copied());
    common::run(&mut command)
}

/// `check --format json` must find every sensor's result without an `error`, and the
/// distribution sensor must count every row written.
fn assert_check_reads_the_table(config: &Path, table: &str, env: &[(&str, &str)], secret: &str) {
    let (code, stdout, stderr) = icewatch(&["check", "--format", "json"], config, env);
    assert!(!stdout.contains(secret) && !stderr.contains(secret), "the secret was printed\n{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|error| {
        panic!("check printed no JSON ({error}), exit {code}\nstdout:\n{stdout}\nstderr:\n{stderr}")
    });
    let results = report["results"].as_array().expect("`results` is an array");
    let sensors: Vec<&str> = results.iter().filter_map(|result| result["sensor"].as_str()).collect();
    for sensor in ["freshness", "volume", "schema", "distribution"] {
        assert!(sensors.contains(&sensor), "no {sensor} result: {report:#}");
    }
    for result in results {
        assert_eq!(result["table"], table, "{result:#}");
        let status = result["status"].as_str().unwrap();
        assert!(["ok", "insufficient_history"].contains(&status), "unexpected status in {result:#}\nstderr:\n{stderr}");
    }
    // Row counts from the manifests (volume, distribution `row_count`) and from a scan of the
    // data files (distribution `mean` reads the Parquet files themselves).
    let total = BATCHES.iter().sum::<i64>() as f64;
    let value_of = |sensor: &str, metric: &str, statistic: Option<&str>| -> Vec<f64> {
        results
            .iter()
            .filter(|result| result["sensor"] == sensor && result["metric"] == metric)
            .filter(|result| statistic.is_none_or(|statistic| result["statistic"] == statistic))
            .filter_map(|result| result["value"].as_f64())
            .collect()
    };
    assert_eq!(value_of("volume", "total_rows", None), vec![total], "{report:#}");
    assert_eq!(value_of("volume", "rows_added", None), vec![BATCHES[2] as f64], "{report:#}");
    assert_eq!(value_of("distribution", "value", Some("row_count")), vec![total], "{report:#}");
    let mean = results
        .iter()
        .find(|result| result["sensor"] == "distribution" && result["statistic"] == "mean")
        .unwrap_or_else(|| panic!("no `mean` result: {report:#}"));
    let expected_mean = BATCHES.iter().flat_map(|count| (0..*count).map(|i| (i % 7) as f64)).sum::<f64>() / total;
    assert!((mean["value"].as_f64().unwrap() - expected_mean).abs() < 1e-9, "{mean:#}, expected {expected_mean}");
    assert!(mean["message"].as_str().unwrap().contains(&format!("a scan of {total} rows")), "{mean:#}");
    assert_eq!(code, 0, "stderr:\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_catalog_on_postgres_is_checked_and_its_password_never_shown() {
    let Some(bindir) = postgres_bindir() else {
        eprintln!(
            "skipping sql_catalog_on_postgres_is_checked_and_its_password_never_shown: PostgreSQL \
             server binaries (initdb, postgres) not found; install Debian's `postgresql` package"
        );
        return;
    };
    let server = PostgresServer::start(&bindir);
    let uri = server.create_database("icecat").await;
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("warehouse");
    let catalog = icewatch::demo::open_sql_catalog(&uri, &warehouse, "pgcat").await.unwrap();
    write_orders(&catalog, "pg").await;

    let catalog_section = format!("type = \"sql\"\nuri = \"{uri}\"\nwarehouse = \"warehouse\"\nname = \"pgcat\"");
    let config = write_config(dir.path(), &catalog_section, "pg.orders");
    let password = server.password.clone();
    let shown_uri = format!("postgres://postgres:***@127.0.0.1:{}/icecat", server.port);
    let checked = config.clone();
    let secret = password.clone();
    tokio::task::spawn_blocking(move || assert_check_reads_the_table(&checked, "pg.orders", &[], &secret))
        .await
        .unwrap();

    let online = config.clone();
    let (code, stdout, stderr) =
        tokio::task::spawn_blocking(move || icewatch(&["validate", "--online"], &online, &[])).await.unwrap();
    assert_eq!(code, 0, "validate --online\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains(&shown_uri), "{stdout}");
    assert!(!stdout.contains(&password) && !stderr.contains(&password), "{stdout}\n{stderr}");

    // A wrong password: a clear error naming the catalog with the password hidden.
    let wrong = "definitely-not-the-password";
    let bad_section = catalog_section.replace(&password, wrong);
    let bad_dir = tempfile::tempdir().unwrap();
    let bad_config = write_config(bad_dir.path(), &bad_section, "pg.orders");
    let (code, stdout, stderr) =
        tokio::task::spawn_blocking(move || icewatch(&["validate", "--online"], &bad_config, &[])).await.unwrap();
    assert_ne!(code, 0, "validate --online with a wrong password\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let all = format!("{stdout}{stderr}");
    assert!(all.contains(&format!("cannot reach catalog `{shown_uri}`")), "{all}");
    assert!(all.contains("password authentication failed"), "{all}");
    assert!(!all.contains(wrong) && !all.contains(&password), "{all}");
    drop(catalog);
    drop(server);
}

/// A local S3-compatible server (`moto`), or `None` with the reason when it is not installed.
fn start_moto() -> Result<(ChildGuard, String), String> {
    let python = common::python();
    let probe = common::run(Command::new(&python).args(["-c", "import moto.server, flask, flask_cors"]));
    if probe.0 != 0 {
        return Err(format!("`moto[server]` is not installed in the venv ({}); run scripts/setup", probe.2.trim()));
    }
    let port = common::free_port();
    let mut command = Command::new(&python);
    command
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let server = ChildGuard::spawn("moto", &mut command);
    let endpoint = format!("http://127.0.0.1:{port}");
    common::wait_for("moto to answer", Duration::from_secs(30), || common::http_get(&endpoint));
    Ok((server, endpoint))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warehouse_on_s3_compatible_storage_is_checked_with_secret_from_env() {
    let (moto, endpoint) = match start_moto() {
        Ok(started) => started,
        Err(reason) => {
            eprintln!("skipping warehouse_on_s3_compatible_storage_is_checked_with_secret_from_env: {reason}");
            return;
        }
    };
    let bucket = "icewatch-it";
    let (code, _, stderr) =
        common::run(Command::new("curl").args(["-fsS", "-X", "PUT", &format!("{endpoint}/{bucket}")]));
    assert_eq!(code, 0, "create bucket: {stderr}");

    let dir = tempfile::tempdir().unwrap();
    let (access_key, secret_key, region) = ("icewatch-test-key", "s3-secret-7f3a9c", "us-east-1");
    let catalog_uri = format!("sqlite://{}/catalog.db?mode=rwc", dir.path().display());
    let warehouse = format!("s3://{bucket}/warehouse");
    let properties = HashMap::from([
        ("uri".to_string(), catalog_uri.clone()),
        ("warehouse".to_string(), warehouse.clone()),
        ("sql_bind_style".to_string(), "QMark".to_string()),
        (iceberg::io::S3_ENDPOINT.to_string(), endpoint.clone()),
        (iceberg::io::S3_REGION.to_string(), region.to_string()),
        (iceberg::io::S3_ACCESS_KEY_ID.to_string(), access_key.to_string()),
        (iceberg::io::S3_SECRET_ACCESS_KEY.to_string(), secret_key.to_string()),
        (iceberg::io::S3_PATH_STYLE_ACCESS.to_string(), "true".to_string()),
    ]);
    let catalog = SqlCatalogBuilder::default()
        .with_storage_factory(Arc::new(OpenDalResolvingStorageFactory::new()))
        .load("s3cat", properties)
        .await
        .unwrap();
    write_orders(&catalog, "s3").await;
    drop(catalog);

    // The data really is in the bucket, not on local disk.
    let listing = common::http_get(&format!("{endpoint}/{bucket}?list-type=2&prefix=warehouse/")).unwrap_or_default();
    assert!(listing.contains(".parquet") && listing.contains(".metadata.json"), "bucket listing:\n{listing}");

    let catalog_section = format!(
        "type = \"sql\"\nuri = \"sqlite://catalog.db\"\nwarehouse = \"{warehouse}\"\nname = \"s3cat\"\n\
         s3_endpoint = \"{endpoint}\"\ns3_region = \"{region}\"\ns3_access_key_id = \"{access_key}\"\n\
         s3_secret_access_key = \"${{ICEWATCH_IT_S3_SECRET}}\"\ns3_path_style_access = true"
    );
    let config = write_config(dir.path(), &catalog_section, "s3.orders");
    let text = common::read(&config);
    assert!(!text.contains(secret_key), "the secret must come from the environment");
    let checked = config.clone();
    tokio::task::spawn_blocking(move || {
        assert_check_reads_the_table(&checked, "s3.orders", &[("ICEWATCH_IT_S3_SECRET", secret_key)], secret_key)
    })
    .await
    .unwrap();
    let online = config.clone();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        icewatch(&["validate", "--online"], &online, &[("ICEWATCH_IT_S3_SECRET", secret_key)])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "validate --online\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(!stdout.contains(secret_key) && !stderr.contains(secret_key), "{stdout}\n{stderr}");
    drop(moto);
}
