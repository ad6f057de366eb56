//! icewatch: data-observability sensors for Apache Iceberg tables.
//!
//! # Data flow
//!
//! ```text
//! sensors.toml ─▶ config ─▶ service (generations, reload) ─▶ scheduler (cron per table × kind)
//!                                                                   │ tick
//!                                                                   ▼
//!  catalog ──load──▶ pipeline ──▶ sensors::Sensor::observe ──▶ steps + readings
//!                      │  for each step: history windows ─▶ judge (judging) ─▶ append
//!                      ▼
//!               Evaluations ─▶ export::metrics (/metrics, Pushgateway)
//!                           ─▶ latest results (check, status page) ─▶ lineage (pipeline health)
//! ```
//!
//! # What is public
//!
//! The library's API is what the binary, the integration tests, the examples and the benchmarks
//! use: `cli`, `config`, `catalog`, `pipeline`, `sensors` (the contract and the distribution
//! profile), `history`, `export`, `demo` and `server`. Everything else is `pub(crate)`, so the
//! compiler reports what nothing uses.
//!
//! # Glossary
//!
//! - **table**: an Iceberg table named in `sensors.toml` (`namespace.name`), with a `layer`.
//! - **sensor kind**: freshness, volume, schema, distribution (per table) and lineage (per
//!   pipeline). Each table kind is a [`sensors::Sensor`].
//! - **snapshot / commit**: one entry of the table's snapshot log; one *table commit* may publish
//!   several snapshots (an overwrite as `delete` + `append`).
//! - **batch**: the data files one snapshot added: what the distribution sensor profiles.
//! - **series / point**: a history series is (table, sensor, metric, labels); a point is one
//!   value of it at a commit time, usually with its snapshot id ([`history`]).
//! - **step**: one snapshot a sensor has not judged yet (or the present moment): its points and,
//!   unless it only backfills, its window requests and a pure judge.
//! - **backfill**: history taken from the snapshot log on first sight, so windows start full.
//! - **window**: the stored points a judge scores against, strictly before the value judged.
//! - **evaluation**: one judged result (status, value, z-score, expected band, message): a line
//!   of `check`, a row of the status page, a source of metrics.
//! - **reading**: a fact a sensor exports as it is, not judged (files, bytes, drift statistics).
//! - **generation**: one loaded configuration with its pipeline and scheduler; a reload
//!   starts a new one and keeps the old one when the new config is invalid.

pub(crate) mod backtest;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod demo;
pub(crate) mod errors;
pub mod export;
pub mod history;
pub(crate) mod judging;
pub(crate) mod lineage;
pub mod pipeline;
pub(crate) mod redact;
pub(crate) mod runbook;
pub(crate) mod scheduler;
pub mod sensors;
pub mod server;
pub(crate) mod service;
pub(crate) mod stats;
pub(crate) mod status_page;
pub(crate) mod web_config;
