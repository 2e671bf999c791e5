//! The dispatcher's metrics, named `dingtalk_gateway_dispatcher_<thing>_<unit>`.

use std::time::Duration;

/// One event finished, by outcome (`answered`, `reset`, `unrouted`, `failed`, `duplicate`,
/// `skipped`, `malformed`, `dead_lettered`, `redelivered`).
pub fn event(outcome: &'static str) {
    ::metrics::counter!("dingtalk_gateway_dispatcher_events_total", "outcome" => outcome)
        .increment(1);
}

/// An event that was not for the dispatcher, by reason.
pub fn skipped(reason: &'static str) {
    ::metrics::counter!("dingtalk_gateway_dispatcher_skipped_total", "reason" => reason)
        .increment(1);
}

/// Overhead: from the event leaving the consumer to its first command on the bus.
pub fn first_command(elapsed: Duration) {
    ::metrics::histogram!("dingtalk_gateway_dispatcher_first_command_seconds")
        .record(elapsed.as_secs_f64());
}

/// A command published, by op.
pub fn command(op: &'static str) {
    ::metrics::counter!("dingtalk_gateway_dispatcher_commands_total", "op" => op).increment(1);
}

/// One expert run (including retries and joins), by outcome.
pub fn expert_run(outcome: &'static str, elapsed: Duration) {
    ::metrics::histogram!("dingtalk_gateway_dispatcher_expert_run_seconds", "outcome" => outcome)
        .record(elapsed.as_secs_f64());
}

/// A retried expert call, by the error's code.
pub fn expert_retry(code: &'static str) {
    ::metrics::counter!("dingtalk_gateway_dispatcher_expert_retries_total", "code" => code)
        .increment(1);
}

/// A redelivered event found its run on the expert instead of starting another (`joined`), or
/// the expert cannot list runs (`unsupported`).
pub fn run_lookup(result: &'static str) {
    ::metrics::counter!("dingtalk_gateway_dispatcher_run_lookups_total", "result" => result)
        .increment(1);
}

/// A run cancelled at the expert: one given up on (`abandoned`), or one of an earlier message
/// that kept the thread busy (`blocking`).
pub fn run_cancelled(reason: &'static str) {
    ::metrics::counter!("dingtalk_gateway_dispatcher_runs_cancelled_total", "reason" => reason)
        .increment(1);
}

/// Human in the loop, by event: a run ended asking the user (`asked`), a message answered a
/// waiting thread (`resumed`) or answered it in a way it does not allow (`refused`), a question
/// was shown again instead of answered (`reasked`), or a thread recorded as waiting no longer
/// was (`stale`).
pub fn interrupt(event: &'static str) {
    ::metrics::counter!("dingtalk_gateway_dispatcher_interrupts_total", "event" => event)
        .increment(1);
}

/// A message with no expert to answer it.
pub fn unrouted() {
    ::metrics::counter!("dingtalk_gateway_dispatcher_unrouted_total").increment(1);
}

/// Time a message waited for earlier messages of its conversation.
pub fn order_wait(elapsed: Duration) {
    ::metrics::histogram!("dingtalk_gateway_dispatcher_order_wait_seconds")
        .record(elapsed.as_secs_f64());
}

/// A message parked in the DLQ, by reason code.
pub fn dead_letter(reason: &str) {
    ::metrics::counter!("dingtalk_gateway_dispatcher_dead_letters_total", "reason" => reason.to_owned())
        .increment(1);
}

/// A throttling signal from the notifier's results.
pub fn throttle_signal() {
    ::metrics::counter!("dingtalk_gateway_dispatcher_throttle_signals_total").increment(1);
}

/// A pull interrupted by a stopped replica was recovered; `registered` events got their place.
pub fn pull_recovered(registered: u64) {
    ::metrics::counter!("dingtalk_gateway_dispatcher_pull_recoveries_total").increment(1);
    ::metrics::counter!("dingtalk_gateway_dispatcher_pull_recovered_events_total")
        .increment(registered);
}

/// An answer that could not be sent, by reason (`session_webhook_expired`).
pub fn undeliverable(reason: &'static str) {
    ::metrics::counter!("dingtalk_gateway_dispatcher_undeliverable_total", "reason" => reason)
        .increment(1);
}
