//! Publishing results outside the process: the metric families (`metrics`) and the Pushgateway
//! client. Sensors and the scheduler never import from here.

pub mod metrics;
pub mod pushgateway;
