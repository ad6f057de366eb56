//! The `sensors.toml` the demo writes next to its warehouse. It only holds the text: the
//! config module parses and validates it (a test there should load this file).

/// Monitors the three demo tables and their pipeline; paths are relative to the file's folder.
/// Freshness thresholds assume the live writer (`icewatch demo`) commits every few seconds.
pub const SENSORS_TOML: &str = r#"# Written by `icewatch demo`: watches the demo warehouse next to this file.
# The demo's live writer commits bronze and silver every few seconds and gold every 6th tick.

[catalog]
type = "sql"
uri = "sqlite://catalog.db"
warehouse = "warehouse"
name = "default"

[history]
path = "icewatch-history.db"

[server]
listen = "127.0.0.1:9464"

[defaults]
schedule = "*/10 * * * * *"    # cron with seconds field; the demo checks every 10 s
zscore_threshold = 3.0
min_history = 5
window = 50

[tables."bronze.raw_trades"]
layer = "bronze"

[tables."bronze.raw_trades".freshness]
warn_after = "2m"
critical_after = "15m"
timestamp_column = "ts"
lag_warn_after = "5m"
lag_critical_after = "30m"

[tables."bronze.raw_trades".volume]
deviation_percent = 20
window = "7d"
seasonality = "daily"

[tables."bronze.raw_trades".schema]
expect = { price = "double", quantity = "long" }

[tables."bronze.raw_trades".distribution]
columns = { price = ["mean", "stddev", "min", "max", "null_percent"], quantity = ["mean", "null_percent"] }

[tables."silver.cleaned_trades"]
layer = "silver"

[tables."silver.cleaned_trades".freshness]
warn_after = "5m"
critical_after = "30m"
timestamp_column = "ts"
lag_warn_after = "10m"
lag_critical_after = "1h"

[tables."silver.cleaned_trades".volume]
deviation_percent = 20
window = "7d"
seasonality = "daily"

[tables."silver.cleaned_trades".schema]
expect = { price = "double", quantity = "long", notional = "double" }

[tables."silver.cleaned_trades".distribution]
columns = { price = ["mean", "stddev", "min", "max", "null_percent"], notional = ["mean", "max"] }

[tables."gold.trade_summary_daily"]
layer = "gold"

[tables."gold.trade_summary_daily".freshness]
warn_after = "8h"
critical_after = "26h"

[tables."gold.trade_summary_daily".volume]
deviation_percent = 50
window = "7d"

[tables."gold.trade_summary_daily".schema]
expect = { trade_date = "date", trades = "long", volume = "double", vwap = "double" }

[tables."gold.trade_summary_daily".distribution]
columns = { vwap = ["mean", "min", "max"], volume = ["mean", "null_percent"] }

[pipelines.trade_pipeline]
stages = [
  { stage = "bronze", table = "bronze.raw_trades" },
  { stage = "silver", table = "silver.cleaned_trades", upstream = ["bronze"] },
  { stage = "gold", table = "gold.trade_summary_daily", upstream = ["silver"] },
]
"#;

#[cfg(test)]
mod tests {
    use super::SENSORS_TOML;

    #[test]
    fn sensors_toml_is_valid_toml_naming_the_demo_tables() {
        let value: toml::Value = toml::from_str(SENSORS_TOML).unwrap();
        let tables = value["tables"].as_table().unwrap();
        for name in [super::super::BRONZE_TABLE, super::super::SILVER_TABLE, super::super::GOLD_TABLE] {
            assert!(tables.contains_key(name), "{name} is not monitored");
        }
        assert_eq!(value["catalog"]["name"].as_str(), Some(super::super::CATALOG_NAME));
        assert_eq!(value["pipelines"]["trade_pipeline"]["stages"].as_array().unwrap().len(), 3);
    }
}
