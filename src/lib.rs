//! icewatch: data-observability sensors for Apache Iceberg tables.

pub mod catalog;
pub mod config;
pub mod demo;
pub mod export;
pub mod history;
pub mod scheduler;
pub mod sensors;
pub mod stats;
