//! The ingress's metrics, named `dingtalk_gateway_ingress_<thing>_<unit>`.

use std::time::Duration;

/// One callback answered, by result (`published`, `duplicate`, `check_url`, or an error code).
pub fn callback(result: &'static str) {
    ::metrics::counter!("dingtalk_gateway_ingress_callbacks_total", "result" => result)
        .increment(1);
}

/// Time from the start of a publish to JetStream's acknowledgement.
pub fn publish_latency(elapsed: Duration) {
    ::metrics::histogram!("dingtalk_gateway_ingress_publish_seconds").record(elapsed.as_secs_f64());
}
