//! The one integration-test binary (one binary links faster than many). Each module tests one
//! capability end to end against real tables and real Prometheus tools.

mod alerting;
mod budget;
mod catalogs;
mod cli;
mod common;
mod config;
mod demo;
mod distribution;
mod dockerfile;
mod health;
mod history;
mod http_limits;
mod lineage;
mod metadata_sensors;
mod ops;
mod postgres;
mod pushgateway;
mod reports;
mod seasonality;
mod service;
mod status_page;
