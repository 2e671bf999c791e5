//! Thinning out card updates while the notifier reports throttling for an integration.
//!
//! The dispatcher listens to command results (`dingtalk.results.*.*`, plain NATS: missing one is
//! harmless). A failed result whose error code says DingTalk throttled the app, or a `superseded`
//! update (the notifier could not keep up with our updates), doubles the integration's update
//! interval, up to [`MAX_SLOWDOWN`] times; without a new signal for [`COOL_DOWN`] it is back to
//! normal. Final answers are never held back: only intermediate updates are paced.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use common::bus::result::{CommandResult, Status};
use common::bus::subjects;
use common::registry::IntegrationId;
use common::shutdown::Shutdown;
use futures::StreamExt;

/// The largest stretch of the update interval.
pub const MAX_SLOWDOWN: u32 = 8;

/// How long a throttling signal counts.
pub const COOL_DOWN: Duration = Duration::from_secs(30);

/// Result error codes that mean "too many requests": ours, then DingTalk's.
const THROTTLE_CODES: [&str; 5] = [
    "throttled",
    "rate_limited",
    "90018",
    "Forbidden.AccessDenied.QpsLimitForApi",
    "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi",
];

/// Whether a command result says the integration is being throttled.
pub fn is_throttling(result: &CommandResult) -> bool {
    match result.status {
        Status::Superseded => true,
        Status::Failed => result.error.as_ref().is_some_and(|e| {
            THROTTLE_CODES.contains(&e.code.as_str()) || e.code.contains("QpsLimit")
        }),
        Status::Ok => false,
    }
}

#[derive(Debug, Clone, Copy)]
struct Slowdown {
    factor: u32,
    until: Instant,
}

/// Per-integration slowdown of card updates (cheap to clone; shared by every task).
#[derive(Debug, Clone, Default)]
pub struct Throttle(Arc<Mutex<HashMap<String, Slowdown>>>);

impl Throttle {
    /// Records a throttling signal for `integration` at `now`.
    pub fn signal(&self, integration: &str, now: Instant) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let factor = match map.get(integration) {
            Some(s) if s.until > now => (s.factor * 2).min(MAX_SLOWDOWN),
            _ => 2,
        };
        map.insert(
            integration.to_owned(),
            Slowdown {
                factor,
                until: now + COOL_DOWN,
            },
        );
        crate::metrics::throttle_signal();
    }

    /// How many times the update interval is stretched for `integration` at `now`.
    pub fn slowdown_at(&self, integration: &str, now: Instant) -> u32 {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get(integration) {
            Some(s) if s.until > now => s.factor,
            _ => 1,
        }
    }

    /// The slowdown now.
    pub fn slowdown(&self, integration: &IntegrationId) -> u32 {
        self.slowdown_at(integration.as_str(), Instant::now())
    }

    /// Listens to command results until `shutdown`, recording throttling signals.
    pub async fn listen(self, nats: async_nats::Client, shutdown: Shutdown) {
        let mut results = match nats.subscribe(subjects::RESULTS_ALL).await {
            Ok(subscriber) => subscriber,
            Err(err) => {
                tracing::warn!(%err, "cannot listen to command results; updates will not slow down under throttling");
                return;
            }
        };
        loop {
            tokio::select! {
                () = shutdown.wait() => return,
                message = results.next() => {
                    let Some(message) = message else { return };
                    if let Ok(result) = CommandResult::from_slice(&message.payload) {
                        if is_throttling(&result) {
                            self.signal(&result.integration_id, Instant::now());
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn result(status: &str, code: Option<&str>) -> CommandResult {
        let mut value = json!({"v": 1, "command_id": "c", "integration_id": "acme",
            "status": status, "finished_at": "2026-11-25T10:00:00Z"});
        if let Some(code) = code {
            value["error"] = json!({"code": code, "message": "m", "retryable": true});
        }
        CommandResult::from_slice(value.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn throttling_codes_and_superseded_updates_count_as_signals() {
        assert!(is_throttling(&result("failed", Some("throttled"))));
        assert!(is_throttling(&result(
            "failed",
            Some("Forbidden.AccessDenied.QpsLimitForApi")
        )));
        assert!(is_throttling(&result("superseded", None)));
        assert!(!is_throttling(&result("failed", Some("60011"))));
        assert!(!is_throttling(&result("ok", None)));
    }

    #[test]
    fn signals_double_the_slowdown_up_to_a_cap_and_cool_down() {
        let throttle = Throttle::default();
        let now = Instant::now();
        assert_eq!(throttle.slowdown_at("acme", now), 1);
        throttle.signal("acme", now);
        assert_eq!(throttle.slowdown_at("acme", now), 2);
        for _ in 0..5 {
            throttle.signal("acme", now);
        }
        assert_eq!(throttle.slowdown_at("acme", now), MAX_SLOWDOWN);
        assert_eq!(throttle.slowdown_at("other", now), 1);
        assert_eq!(throttle.slowdown_at("acme", now + COOL_DOWN), 1);
    }
}
