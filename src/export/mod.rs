//! Publishing metrics outside the process: the Pushgateway client (and, later, the metric
//! families themselves). Sensors and the scheduler never import from here.

pub mod pushgateway;
