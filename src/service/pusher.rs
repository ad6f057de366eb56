//! The Pushgateway pusher: after runs, the whole registry goes to the Pushgateway at most once per
//! debounce period; at shutdown a last push (or deleting the group). The HTTP client and the push
//! protocol are `export::pushgateway`'s; this module only decides when to push.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::AppState;
use crate::config::PushgatewayConfig;
use crate::export::metrics::Metrics;
use crate::export::pushgateway::{PushgatewayClient, PushgatewayOptions};

/// Longest a push may wait after a run before it is sent (runs close together share a push).
const PUSH_DEBOUNCE: Duration = Duration::from_secs(1);

/// Pushes the whole registry to the Pushgateway after runs, at most once per debounce period;
/// failures are counted and the latest values go out with the next successful push.
pub(super) struct Pusher {
    client: PushgatewayClient,
    metrics: Arc<Metrics>,
    /// For the pipeline in force, whose store gauges are refreshed before each push.
    state: Arc<AppState>,
    wanted: Notify,
    delete_on_shutdown: bool,
}

impl Pusher {
    pub(super) fn new(
        config: &PushgatewayConfig,
        metrics: Arc<Metrics>,
        state: Arc<AppState>,
    ) -> anyhow::Result<Pusher> {
        let mut options = PushgatewayOptions::new(config.url.clone(), config.job.clone());
        options.grouping = config.grouping.iter().map(|(key, value)| (key.clone(), value.clone())).collect();
        options.timeout = config.timeout;
        options.retries = config.retries;
        options.basic_auth = config
            .username
            .clone()
            .map(|user| (user, config.password.as_ref().map(|secret| secret.expose().to_string()).unwrap_or_default()));
        options.ca_certificate = config.ca_file.clone();
        options.insecure_skip_verify = config.insecure_skip_verify;
        let client = PushgatewayClient::new(options).context("invalid [pushgateway] settings")?;
        Ok(Pusher { client, metrics, state, wanted: Notify::new(), delete_on_shutdown: config.delete_on_shutdown })
    }

    /// Asks for a push (after a run); requests within the debounce period share one.
    pub(super) fn request(&self) {
        self.wanted.notify_one();
    }

    /// Pushes when asked, until `shutdown`.
    pub(super) async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = self.wanted.notified() => {}
                _ = shutdown.cancelled() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(PUSH_DEBOUNCE) => {}
                _ = shutdown.cancelled() => return,
            }
            self.push_once().await;
        }
    }

    async fn push_once(&self) {
        self.state.pipeline().refresh_store_metrics().await;
        match self.client.push(&self.metrics.encode()).await {
            Ok(()) => self
                .metrics
                .icewatch_last_push_success_timestamp_seconds
                .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0),
            Err(error) => {
                self.metrics.icewatch_push_failures_total.inc();
                tracing::warn!(error = %crate::sensors::error_chain(&error), "push to the Pushgateway failed");
            }
        }
    }

    /// The last push at shutdown (with `icewatch_up` 0), or deleting the group when configured.
    pub(super) async fn finish(&self) {
        if self.delete_on_shutdown {
            if let Err(error) = self.client.delete().await {
                tracing::warn!(error = %crate::sensors::error_chain(&error), "failed to delete the Pushgateway group");
            }
        } else {
            self.push_once().await;
        }
    }
}
