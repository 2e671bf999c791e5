//! The ingress's metrics, named `dingtalk_gateway_ingress_<thing>_<unit>`.
//!
//! The handles every accepted callback touches are registered once and kept
//! ([`common::telemetry::kept`]).

use std::sync::OnceLock;
use std::time::Duration;

use common::telemetry::kept;
use metrics::{Counter, Histogram};

/// One callback answered, by result (`published`, `duplicate`, `check_url`, or an error code).
pub fn callback(result: &'static str) {
    static PUBLISHED: OnceLock<Counter> = OnceLock::new();
    static DUPLICATE: OnceLock<Counter> = OnceLock::new();
    let counter = |result: &'static str| ::metrics::counter!("dingtalk_gateway_ingress_callbacks_total", "result" => result);
    match result {
        "published" => kept(&PUBLISHED, || counter("published")).increment(1),
        "duplicate" => kept(&DUPLICATE, || counter("duplicate")).increment(1),
        other => counter(other).increment(1),
    }
}

/// Time from the start of a publish to JetStream's acknowledgement.
pub fn publish_latency(elapsed: Duration) {
    static PUBLISH: OnceLock<Histogram> = OnceLock::new();
    kept(&PUBLISH, || {
        ::metrics::histogram!("dingtalk_gateway_ingress_publish_seconds")
    })
    .record(elapsed.as_secs_f64());
}

/// One Stream frame handled, by result (`published`, `duplicate`, `publish_failed`,
/// `unknown_topic`, `malformed`, `too_large`).
pub fn stream_frame(result: &'static str) {
    ::metrics::counter!("dingtalk_gateway_ingress_stream_frames_total", "result" => result)
        .increment(1);
}

/// Time from a Stream frame's arrival to JetStream's ack (its socket ack follows).
pub fn stream_frame_latency(elapsed: Duration) {
    ::metrics::histogram!("dingtalk_gateway_ingress_stream_frame_seconds")
        .record(elapsed.as_secs_f64());
}

/// A Stream connection open attempt.
pub fn stream_open() {
    ::metrics::counter!("dingtalk_gateway_ingress_stream_opens_total").increment(1);
}

/// A failed open, by cause (`auth_failed`, `error`).
pub fn stream_open_failed(cause: &'static str) {
    ::metrics::counter!("dingtalk_gateway_ingress_stream_open_failures_total", "cause" => cause)
        .increment(1);
}

/// A connection replaced or lost, by reason (`disconnect`, `idle`, `max_age`, `closed`).
pub fn stream_replaced(reason: &'static str) {
    ::metrics::counter!("dingtalk_gateway_ingress_stream_reconnects_total", "reason" => reason)
        .increment(1);
}

/// Connections this replica holds (+1 / -1).
pub fn stream_connected(delta: f64) {
    ::metrics::gauge!("dingtalk_gateway_ingress_stream_connections").increment(delta);
}
