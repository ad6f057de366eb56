//! icewatch: data-observability sensors for Apache Iceberg tables.

pub mod history;
pub mod stats;
