//! The dispatcher's configuration, from environment variables (`dispatcher/README.md`).

use std::time::Duration;

use common::config::{CommonConfig, ConfigError, Env};
use common::secret::Secret;

/// Everything the dispatcher reads from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Settings shared by every service (`METRICS_ADDR` defaults to `0.0.0.0:9101`).
    pub common: CommonConfig,
    /// `DISPATCHER_CONCURRENCY`: expert runs this replica drives at once (different
    /// conversations; one conversation is always one run at a time).
    pub concurrency: usize,
    /// `DISPATCHER_CONSUMER`: the durable consumer shared by every replica.
    pub consumer: String,
    /// `DISPATCHER_ACK_WAIT`: how long JetStream waits for an ack or a progress signal before
    /// redelivering (a replica that died mid-run is detected after this).
    pub ack_wait: Duration,
    /// `DISPATCHER_MAX_DELIVER`: deliveries of one event before it goes to the DLQ.
    pub max_deliver: i64,
    /// `DISPATCHER_CLAIM_LEASE`: how long an event's claim outlives a replica that stopped
    /// renewing it.
    pub claim_lease: Duration,
    /// `DISPATCHER_DONE_RETENTION`: how long a finished event is remembered, so a replayed
    /// callback gets no second answer.
    pub done_retention: Duration,
    /// The expert server.
    pub expert: ExpertConfig,
    /// `STREAM_UPDATE_INTERVAL`: at most one card update per conversation per interval.
    pub stream_update_interval: Duration,
    /// `THINKING_DELAY`: an answer not complete after this (or that starts streaming) gets the
    /// "thinking…" card first; a faster complete answer is one plain send.
    pub thinking_delay: Duration,
}

/// Where and how the expert server (Agent Protocol) is called.
#[derive(Debug, Clone)]
pub struct ExpertConfig {
    /// `EXPERT_API_URL`: base URL, without a trailing slash.
    pub url: String,
    /// `EXPERT_API_KEY`: sent on every call when set (a local LangGraph server needs none).
    pub api_key: Option<Secret>,
    /// `EXPERT_API_KEY_HEADER`: the header carrying the key.
    pub api_key_header: String,
    /// `EXPERT_TIMEOUT`: one whole run, from request to the last event.
    pub timeout: Duration,
    /// `EXPERT_CONNECT_TIMEOUT`: establishing a connection.
    pub connect_timeout: Duration,
    /// `EXPERT_MAX_ATTEMPTS`: tries of a run that fails with 5xx or a timeout.
    pub max_attempts: u32,
    /// `EXPERT_RETRY_BACKOFF`: pause before the second try, doubled before each further one.
    pub retry_backoff: Duration,
}

impl Config {
    /// Reads and checks every variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let api_key_header = env.string("EXPERT_API_KEY_HEADER", "x-api-key");
        if reqwest::header::HeaderName::from_bytes(api_key_header.as_bytes()).is_err() {
            return Err(invalid(
                "EXPERT_API_KEY_HEADER",
                &api_key_header,
                "expected an HTTP header name such as x-api-key or authorization",
            ));
        }
        let ack_wait = env.positive_duration("DISPATCHER_ACK_WAIT", Duration::from_secs(30))?;
        if ack_wait < Duration::from_secs(1) {
            return Err(invalid(
                "DISPATCHER_ACK_WAIT",
                env.get("DISPATCHER_ACK_WAIT").unwrap_or_default(),
                "expected at least 1s (progress signals are sent every third of it)",
            ));
        }
        let claim_lease =
            env.positive_duration("DISPATCHER_CLAIM_LEASE", Duration::from_secs(30))?;
        // The claim is renewed with every progress signal (a third of the ack wait); a shorter
        // lease would lapse between two renewals of a live run.
        if claim_lease < ack_wait / 2 {
            return Err(invalid(
                "DISPATCHER_CLAIM_LEASE",
                env.get("DISPATCHER_CLAIM_LEASE").unwrap_or_default(),
                "must be at least half of DISPATCHER_ACK_WAIT",
            ));
        }
        Ok(Self {
            common: CommonConfig::from_env(env, "0.0.0.0:9101")?,
            concurrency: env.int_in("DISPATCHER_CONCURRENCY", 16, 1..=4096)?,
            consumer: consumer_name(env)?,
            ack_wait,
            max_deliver: env.int_in("DISPATCHER_MAX_DELIVER", 5, 1..=100)?,
            claim_lease,
            done_retention: env
                .positive_duration("DISPATCHER_DONE_RETENTION", Duration::from_secs(24 * 3600))?,
            expert: ExpertConfig {
                url: env.url(
                    "EXPERT_API_URL",
                    "http://127.0.0.1:8123",
                    &["http", "https"],
                )?,
                api_key: env.get("EXPERT_API_KEY").map(Secret::from),
                api_key_header,
                timeout: env.positive_duration("EXPERT_TIMEOUT", Duration::from_secs(300))?,
                connect_timeout: env
                    .positive_duration("EXPERT_CONNECT_TIMEOUT", Duration::from_secs(5))?,
                max_attempts: env.int_in("EXPERT_MAX_ATTEMPTS", 3, 1..=10)?,
                retry_backoff: env.duration("EXPERT_RETRY_BACKOFF", Duration::from_secs(1))?,
            },
            stream_update_interval: env
                .positive_duration("STREAM_UPDATE_INTERVAL", Duration::from_secs(1))?,
            thinking_delay: env.duration("THINKING_DELAY", Duration::from_secs(1))?,
        })
    }
}

fn invalid(var: &str, value: &str, allowed: &str) -> ConfigError {
    ConfigError {
        var: var.to_owned(),
        value: value.to_owned(),
        allowed: allowed.to_owned(),
    }
}

fn consumer_name(env: &Env) -> Result<String, ConfigError> {
    let name = env.string("DISPATCHER_CONSUMER", "dispatcher");
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return Err(invalid(
            "DISPATCHER_CONSUMER",
            &name,
            "expected 1 to 64 ASCII letters, digits, '_' or '-'",
        ));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_ones() {
        let config = Config::from_env(&Env::default()).unwrap();
        assert_eq!(config.concurrency, 16);
        assert_eq!(config.consumer, "dispatcher");
        assert_eq!(config.expert.api_key_header, "x-api-key");
        assert!(config.expert.api_key.is_none());
        assert_eq!(config.expert.timeout, Duration::from_secs(300));
        assert_eq!(config.stream_update_interval, Duration::from_secs(1));
        assert_eq!(config.done_retention, Duration::from_secs(86_400));
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("DISPATCHER_CONCURRENCY", "0"),
            ("EXPERT_API_URL", "localhost:2024"),
            ("EXPERT_API_KEY_HEADER", "x api key"),
            ("EXPERT_TIMEOUT", "0s"),
            ("STREAM_UPDATE_INTERVAL", "soon"),
            ("DISPATCHER_CONSUMER", "a.b"),
            ("DISPATCHER_ACK_WAIT", "10ms"),
            ("DISPATCHER_CLAIM_LEASE", "5s"),
        ] {
            let err = Config::from_env(&Env::from_pairs([(var, value)])).unwrap_err();
            assert_eq!(err.var, var, "{err}");
        }
    }

    #[test]
    fn the_api_key_never_shows_in_debug_output() {
        let env = Env::from_pairs([("EXPERT_API_KEY", "sk-very-secret")]);
        let config = Config::from_env(&env).unwrap();
        assert!(!format!("{config:?}").contains("sk-very-secret"));
    }
}
