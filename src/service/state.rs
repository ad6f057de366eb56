//! What the HTTP handlers share with the service: the pipeline in force (swapped whole on reload),
//! readiness, and the channel `POST /-/reload` asks the service through. It holds state only: it
//! never runs sensors, loads configuration or serves requests.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, oneshot};

use crate::pipeline::Pipeline;

/// A request to re-read the configuration; `reply` (when someone waits) gets the outcome, the
/// error chain as text when the new configuration was rejected.
pub struct ReloadRequest {
    pub reply: Option<oneshot::Sender<Result<(), String>>>,
}

/// What the handlers share. The pipeline is swapped whole when the configuration is reloaded;
/// a handler takes the current one once and uses it to the end of the request.
pub struct AppState {
    pipeline: RwLock<Arc<Pipeline>>,
    /// Set once the catalog has answered.
    pub ready: AtomicBool,
    reload: Option<mpsc::Sender<ReloadRequest>>,
}

impl AppState {
    /// `reload`: where `POST /-/reload` sends its requests (`None`: the endpoint answers 503).
    pub fn new(pipeline: Arc<Pipeline>, reload: Option<mpsc::Sender<ReloadRequest>>) -> AppState {
        AppState { pipeline: RwLock::new(pipeline), ready: AtomicBool::new(false), reload }
    }

    /// The pipeline of the configuration in force.
    pub fn pipeline(&self) -> Arc<Pipeline> {
        match self.pipeline.read() {
            Ok(pipeline) => pipeline.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts the pipeline of a newly loaded configuration in force.
    pub fn set_pipeline(&self, pipeline: Arc<Pipeline>) {
        match self.pipeline.write() {
            Ok(mut slot) => *slot = pipeline,
            Err(poisoned) => *poisoned.into_inner() = pipeline,
        }
    }

    /// Where reload requests go; `None` when this state was built without a service behind it.
    pub fn reload_requests(&self) -> Option<&mpsc::Sender<ReloadRequest>> {
        self.reload.as_ref()
    }
}
