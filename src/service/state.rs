//! What the HTTP handlers share with the service: the pipeline in force (swapped whole on reload),
//! readiness, and the channel `POST /-/reload` asks the service through. It holds state only: it
//! never runs sensors, loads configuration or serves requests.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, oneshot};

use crate::lineage::Lineage;
use crate::pipeline::Pipeline;

/// A request to re-read the configuration; `reply` (when someone waits) gets the outcome, the
/// error chain as text when the new configuration was rejected.
pub struct ReloadRequest {
    pub reply: Option<oneshot::Sender<Result<(), String>>>,
}

/// What the handlers share. The pipeline is swapped whole when the configuration is reloaded;
/// a handler takes the current one once and uses it to the end of the request.
pub struct AppState {
    pipeline: RwLock<(Arc<Pipeline>, Arc<Lineage>)>,
    /// Set once the catalog has answered.
    pub ready: AtomicBool,
    reload: Option<mpsc::Sender<ReloadRequest>>,
}

impl AppState {
    /// `reload`: where `POST /-/reload` sends its requests (`None`: the endpoint answers 503).
    pub fn new(
        pipeline: Arc<Pipeline>,
        lineage: Arc<Lineage>,
        reload: Option<mpsc::Sender<ReloadRequest>>,
    ) -> AppState {
        AppState { pipeline: RwLock::new((pipeline, lineage)), ready: AtomicBool::new(false), reload }
    }

    /// The pipeline of the configuration in force.
    pub fn pipeline(&self) -> Arc<Pipeline> {
        self.pipeline.read().unwrap_or_else(std::sync::PoisonError::into_inner).0.clone()
    }

    /// The lineage (stages, root causes, OpenLineage runs) of the configuration in force.
    pub fn lineage(&self) -> Arc<Lineage> {
        self.pipeline.read().unwrap_or_else(std::sync::PoisonError::into_inner).1.clone()
    }

    /// Puts the pipeline of a newly loaded configuration, and its lineage, in force.
    pub fn set_pipeline(&self, pipeline: Arc<Pipeline>, lineage: Arc<Lineage>) {
        *self.pipeline.write().unwrap_or_else(std::sync::PoisonError::into_inner) = (pipeline, lineage);
    }

    /// Where reload requests go; `None` when this state was built without a service behind it.
    pub fn reload_requests(&self) -> Option<&mpsc::Sender<ReloadRequest>> {
        self.reload.as_ref()
    }
}
