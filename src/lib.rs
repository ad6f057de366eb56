//! icewatch: data-observability sensors for Apache Iceberg tables.

pub mod demo;
