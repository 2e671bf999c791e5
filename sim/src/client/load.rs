//! A load generator acting as DingTalk: new callbacks at a fixed rate for a bounded time, each
//! redelivered with exponential backoff until it is answered 200 or runs out of attempts — the
//! same body (same `msgId`) every time, re-signed, as DingTalk retries a push that failed.
//!
//! Concurrency is bounded by `max_in_flight`; when the receiver is slower than the rate, new
//! messages wait for a slot and the report's achieved rate shows it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::secret::Secret;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use super::event::{user_modified, EventSigner};
use super::robot_message::{Content, RobotMessage};
use super::sender::{Answer, CallbackClient, ClientError};
use super::stats::{Latencies, LatencySummary};
use crate::directory::Directory;
use crate::ids;

/// How much load, for how long, and how hard to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadPlan {
    /// New callbacks per second.
    pub rate_per_s: u32,
    /// How long new callbacks are generated (redeliveries may run a little past it).
    pub duration: Duration,
    /// Attempts per callback, the first included.
    pub max_attempts: u32,
    /// Wait before the first redelivery; doubles each time.
    pub first_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// Callbacks being delivered (or waiting to be redelivered) at once.
    pub max_in_flight: usize,
}

impl Default for LoadPlan {
    fn default() -> Self {
        Self {
            rate_per_s: 50,
            duration: Duration::from_secs(10),
            max_attempts: 4,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_in_flight: 512,
        }
    }
}

impl LoadPlan {
    /// The wait after failed attempt `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.first_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    fn total_messages(&self) -> u64 {
        (f64::from(self.rate_per_s) * self.duration.as_secs_f64()).round() as u64
    }
}

/// Where the load goes and what it is made of.
#[derive(Debug, Clone)]
pub enum LoadTarget {
    /// Robot message callbacks, signed with the app secret. Each message is `template` with a
    /// fresh `msgId`, a numbered text and a sender cycling through the seeded users.
    RobotMessages {
        /// The receiver's URL.
        url: String,
        /// The app secret that signs them.
        app_secret: Secret,
        /// The message shape (chat, robot, session webhook base).
        template: RobotMessage,
    },
    /// Encrypted `user_modify_org` events.
    Events {
        /// The receiver's URL.
        url: String,
        /// The subscription's secrets.
        signer: EventSigner,
    },
}

/// Why a load run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A plan value is unusable.
    #[error("invalid load plan: {0}")]
    InvalidPlan(&'static str),
}

/// What happened.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadReport {
    /// Distinct callbacks generated.
    pub sent: u64,
    /// Callbacks eventually answered 200.
    pub acked: u64,
    /// Attempts after the first (redeliveries).
    pub redelivered: u64,
    /// Callbacks never answered 200.
    pub failed: u64,
    /// Answers by HTTP status (`"error"` for transport failures and timeouts).
    pub statuses: BTreeMap<String, u64>,
    /// Wall time of the whole run, redeliveries included.
    pub elapsed_ms: u64,
    /// New callbacks per second actually achieved while generating.
    pub achieved_rate_per_s: f64,
    /// Latency of every answered attempt.
    pub latency: LatencySummary,
}

/// One attempt's result.
struct Attempt {
    status: Option<u16>,
    latency: Duration,
}

/// One callback's delivery history.
struct Outcome {
    acked: bool,
    attempts: Vec<Attempt>,
}

impl LoadTarget {
    /// The `n`th callback's JSON: the robot message body, or the plain event before sealing.
    fn payload(&self, n: u64, users: &[(String, String)]) -> Value {
        let now_ms = ids::now_ms();
        let (staff_id, nick) = &users[(n % users.len() as u64) as usize];
        match self {
            LoadTarget::RobotMessages { template, .. } => template
                .clone()
                .renewed()
                .from_user(staff_id.clone(), nick.clone())
                .with_content(Content::Text(format!("load message {n}")))
                .to_json(now_ms),
            LoadTarget::Events { .. } => {
                user_modified(&Directory::seeded().corp_id, &[staff_id], now_ms)
            }
        }
    }

    /// Delivers `payload` once: robot bodies are re-signed, events re-sealed with a fresh
    /// timestamp and nonce.
    async fn attempt(
        &self,
        client: &CallbackClient,
        payload: &Value,
    ) -> Result<Answer, ClientError> {
        match self {
            LoadTarget::RobotMessages {
                url, app_secret, ..
            } => {
                client
                    .post_signed(url, app_secret.expose(), payload, ids::now_ms())
                    .await
            }
            LoadTarget::Events { url, signer } => client
                .send_event(url, signer, payload)
                .await
                .map(|sent| sent.answer),
        }
    }
}

/// Runs the plan against the target and reports.
pub async fn run_load(
    client: &CallbackClient,
    target: LoadTarget,
    plan: LoadPlan,
) -> Result<LoadReport, LoadError> {
    if plan.rate_per_s == 0 {
        return Err(LoadError::InvalidPlan("rate must be at least 1 per second"));
    }
    if plan.duration.is_zero() {
        return Err(LoadError::InvalidPlan("duration must be positive"));
    }
    if plan.max_attempts == 0 {
        return Err(LoadError::InvalidPlan("max_attempts must be at least 1"));
    }
    if plan.max_in_flight == 0 {
        return Err(LoadError::InvalidPlan("max_in_flight must be at least 1"));
    }
    let users: Arc<Vec<(String, String)>> = Arc::new(
        Directory::seeded()
            .users
            .into_iter()
            .map(|user| (user.userid, user.name))
            .collect(),
    );
    let target = Arc::new(target);
    let plan = Arc::new(plan);
    let slots = Arc::new(Semaphore::new(plan.max_in_flight));
    let mut ticker =
        tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(plan.rate_per_s)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut tasks = JoinSet::new();
    let mut report = LoadReport::default();
    let mut latencies = Latencies::default();
    let started = Instant::now();
    for n in 0..plan.total_messages() {
        ticker.tick().await;
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let (client, target, plan, users) =
            (client.clone(), target.clone(), plan.clone(), users.clone());
        tasks.spawn(async move {
            let outcome = deliver(&client, &target, &plan, target.payload(n, &users)).await;
            drop(slot);
            outcome
        });
        report.sent += 1;
        while let Some(done) = tasks.try_join_next() {
            tally(&mut report, &mut latencies, done.ok());
        }
    }
    let generating = started.elapsed();
    while let Some(done) = tasks.join_next().await {
        tally(&mut report, &mut latencies, done.ok());
    }
    report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    report.achieved_rate_per_s = report.sent as f64 / generating.as_secs_f64().max(1e-3);
    report.latency = latencies.summary();
    Ok(report)
}

/// Delivers one callback with redeliveries.
async fn deliver(
    client: &CallbackClient,
    target: &LoadTarget,
    plan: &LoadPlan,
    payload: Value,
) -> Outcome {
    let mut attempts = Vec::new();
    for attempt in 1..=plan.max_attempts {
        let started = Instant::now();
        let result = target.attempt(client, &payload).await;
        let acked = matches!(&result, Ok(answer) if answer.is_ack());
        attempts.push(Attempt {
            status: result.as_ref().ok().map(|answer| answer.status),
            latency: result
                .as_ref()
                .map(|answer| answer.latency)
                .unwrap_or_else(|_| started.elapsed()),
        });
        if acked {
            return Outcome {
                acked: true,
                attempts,
            };
        }
        if attempt < plan.max_attempts {
            tokio::time::sleep(plan.backoff(attempt)).await;
        }
    }
    Outcome {
        acked: false,
        attempts,
    }
}

/// Adds one callback's outcome to the report (`None`: its task panicked).
fn tally(report: &mut LoadReport, latencies: &mut Latencies, outcome: Option<Outcome>) {
    let Some(outcome) = outcome else {
        report.failed += 1;
        return;
    };
    if outcome.acked {
        report.acked += 1;
    } else {
        report.failed += 1;
    }
    report.redelivered += outcome.attempts.len().saturating_sub(1) as u64;
    for attempt in outcome.attempts {
        let key = attempt
            .status
            .map_or_else(|| "error".to_owned(), |status| status.to_string());
        *report.statuses.entry(key).or_default() += 1;
        if attempt.status.is_some() {
            latencies.push(attempt.latency);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_first_wait_up_to_the_cap() {
        let plan = LoadPlan {
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
            ..LoadPlan::default()
        };
        let waits: Vec<u64> = (1..=5).map(|a| plan.backoff(a).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 5, 5]);
    }

    #[test]
    fn total_messages_is_rate_times_duration() {
        let plan = LoadPlan {
            rate_per_s: 200,
            duration: Duration::from_millis(2500),
            ..LoadPlan::default()
        };
        assert_eq!(plan.total_messages(), 500);
    }
}
