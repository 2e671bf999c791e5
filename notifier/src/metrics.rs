//! The command engine's metrics (`dingtalk_gateway_notifier_*`). DingTalk calls, throttles,
//! token refreshes, limiter waits and API usage are counted by the client layer.

use std::time::Duration;

use common::bus::command::OpKind;
use common::bus::result::Status;
use time::OffsetDateTime;

/// Seconds from receiving a command to its result, by op and status.
pub const COMMAND_DURATION: &str = "dingtalk_gateway_notifier_command_duration_seconds";
/// Seconds from publishing a command to its result (queueing and deferrals included).
pub const COMMAND_AGE: &str = "dingtalk_gateway_notifier_command_age_seconds";
/// Results published, by op and status.
pub const RESULTS: &str = "dingtalk_gateway_notifier_results_total";
/// Commands that could not be read (also counted in results as `failed`).
pub const MALFORMED: &str = "dingtalk_gateway_notifier_malformed_commands_total";
/// Commands nak'ed because their integration's budget was spent, by integration.
pub const DEFERRED: &str = "dingtalk_gateway_notifier_deferred_commands_total";
/// Dead letters published.
pub const DEAD_LETTERS: &str = "dingtalk_gateway_notifier_dead_letters_total";
/// Queries answered, by name and outcome.
pub const QUERIES: &str = "dingtalk_gateway_notifier_queries_total";

fn status_label(status: Status) -> &'static str {
    match status {
        Status::Ok => "ok",
        Status::Failed => "failed",
        Status::Superseded => "superseded",
    }
}

/// A command got its result.
pub fn command_finished(op: OpKind, status: Status, took: Duration, published: OffsetDateTime) {
    let labels = [("op", op.as_str()), ("status", status_label(status))];
    metrics::histogram!(COMMAND_DURATION, &labels).record(took.as_secs_f64());
    let age = (OffsetDateTime::now_utc() - published)
        .as_seconds_f64()
        .max(0.0);
    metrics::histogram!(COMMAND_AGE, &labels).record(age);
}

/// A result was published.
pub fn result_published(op: Option<OpKind>, status: Status) {
    let op = op.map_or("unknown", |op| op.as_str());
    metrics::counter!(RESULTS, "op" => op, "status" => status_label(status)).increment(1);
}

/// A command could not be read.
pub fn malformed() {
    metrics::counter!(MALFORMED).increment(1);
}

/// A command was deferred for lack of budget.
pub fn deferred(integration: &str) {
    metrics::counter!(DEFERRED, "integration" => integration.to_owned()).increment(1);
}

/// A dead letter was published.
pub fn dead_letter() {
    metrics::counter!(DEAD_LETTERS).increment(1);
}

/// A query was answered.
pub fn query(name: &'static str, ok: bool) {
    metrics::counter!(QUERIES, "query" => name, "outcome" => if ok { "ok" } else { "error" })
        .increment(1);
}
