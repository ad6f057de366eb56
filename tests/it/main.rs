//! The one integration-test binary (one binary links faster than many). Each module tests one
//! capability end to end against real tables and real Prometheus tools.

mod cli;
mod alerting;
mod common;
mod config;
mod demo;
mod distribution;
mod dockerfile;
mod history;
mod lineage;
mod ops;
mod pushgateway;
mod status_page;
mod service;
