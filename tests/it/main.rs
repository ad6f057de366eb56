//! The one integration-test binary (one binary links faster than many). Each module tests one
//! capability end to end against real tables and real Prometheus tools.

mod common;
mod demo;
mod history;
mod ops;
mod pushgateway;
mod metadata_sensors;
