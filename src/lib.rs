//! icewatch: data-observability sensors for Apache Iceberg tables.

pub mod catalog;
pub mod cli;
pub mod config;
pub mod demo;
pub mod export;
pub mod history;
pub mod judging;
pub mod lineage;
pub mod pipeline;
pub mod redact;
pub mod scheduler;
pub mod sensors;
pub mod server;
pub mod stats;
pub mod status_page;
pub mod web_config;
