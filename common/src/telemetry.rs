//! Logs and metrics set-up, shared by the three services.
//!
//! Tracing writes pretty lines for a terminal or JSON lines for a collector (`LOG_FORMAT`), filtered
//! by `RUST_LOG`. Metrics go through the `metrics` facade into one process-wide Prometheus
//! recorder, rendered by the ops listener's `/metrics`. Metric names follow
//! `dingtalk_gateway_<stage>_<thing>_<unit>`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;
use crate::shutdown::Shutdown;

/// How often histogram samples are folded into their buckets between scrapes: often enough that
/// one run is short (20,000 callbacks a second leave 20,000 samples).
pub const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Latency buckets in seconds, from a sub-millisecond publish to a multi-minute expert run.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0,
];

/// Installs the global tracing subscriber. A second call (tests starting several services in one
/// process) keeps the first subscriber and is not an error.
pub fn init_tracing(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|err| {
        eprintln!("invalid RUST_LOG={filter:?} ({err}); using \"info\"");
        EnvFilter::new("info")
    });
    let builder = fmt().with_env_filter(filter).with_target(true);
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}

/// The process-wide Prometheus recorder, installed on first use.
///
/// Installing is idempotent so that several services (or tests) in one process share it.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first, which this crate never does.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        handle
    })
}

/// Folds the histogram samples recorded since the last run into their buckets every `interval`
/// until `shutdown`, on a blocking thread so that no request waits behind it. A histogram keeps
/// each sample (8 bytes) until then, and the recorder this crate builds runs no upkeep of its
/// own: without this loop a service that nobody scrapes grows by every latency it records.
pub async fn keep_metrics(handle: PrometheusHandle, interval: Duration, shutdown: Shutdown) {
    shutdown
        .every(interval, || {
            let handle = handle.clone();
            async move {
                if let Err(err) = tokio::task::spawn_blocking(move || handle.run_upkeep()).await {
                    tracing::warn!(%err, "the metrics upkeep failed");
                }
            }
        })
        .await;
}

/// A metric handle registered once and kept in `cell` (installing the recorder first, so that a
/// handle is never bound to the no-op recorder). For the metrics every message touches: looking
/// a metric up in the recorder by name and labels costs more than the increment itself.
pub fn kept<T>(cell: &'static OnceLock<T>, register: impl FnOnce() -> T) -> &'static T {
    cell.get_or_init(|| {
        metrics_handle();
        register()
    })
}

/// Renders every metric in the Prometheus text format, running the recorder's upkeep first.
pub fn render_metrics() -> String {
    let handle = metrics_handle();
    handle.run_upkeep();
    handle.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_metrics_are_rendered() {
        metrics_handle();
        metrics::counter!("dingtalk_gateway_test_things_total", "result" => "ok").increment(2);
        metrics::histogram!("dingtalk_gateway_test_latency_seconds").record(0.003);
        let text = render_metrics();
        assert!(
            text.contains(r#"dingtalk_gateway_test_things_total{result="ok"} 2"#),
            "{text}"
        );
        assert!(
            text.contains("dingtalk_gateway_test_latency_seconds_bucket"),
            "{text}"
        );
    }
}
