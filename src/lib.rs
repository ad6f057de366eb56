//! icewatch: data-observability sensors for Apache Iceberg tables.

pub mod export;
pub mod scheduler;
