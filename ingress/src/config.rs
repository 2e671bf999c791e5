//! The ingress's configuration, from environment variables (README, "Configuration").

use std::net::SocketAddr;
use std::time::Duration;

use common::config::{CommonConfig, ConfigError, DingTalkEndpoints, Env};
use common::secret::Secret;

/// Everything the ingress reads from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Settings shared by every service (`METRICS_ADDR` defaults to `0.0.0.0:9100`).
    pub common: CommonConfig,
    /// `INGRESS_ADDR`: the public listener DingTalk calls.
    pub ingress_addr: SocketAddr,
    /// `ADMIN_ADDR`: the admin API listener (keep it private).
    pub admin_addr: SocketAddr,
    /// `ADMIN_TOKEN`: bearer token of the admin API; unset refuses every admin call.
    pub admin_token: Option<Secret>,
    /// `PUBLIC_BASE_URL`: how DingTalk reaches the public listener, e.g. `https://bot.example.com`.
    pub public_base_url: Option<String>,
    /// `CALLBACK_MAX_SKEW`: how far an encrypted callback's timestamp may be from now.
    pub callback_max_skew: Duration,
    /// `PUBLISH_TIMEOUT`: how long a callback waits for JetStream before answering 503.
    pub publish_timeout: Duration,
    /// `INGRESS_MAX_IN_FLIGHT`: callbacks handled at once before answering 503.
    pub max_in_flight: usize,
    /// `DINGTALK_API_URL` / `DINGTALK_OAPI_URL`, for the admin preflight check and Stream mode.
    pub dingtalk: DingTalkEndpoints,
    /// `STREAM_*`: the Stream-mode connector.
    pub stream: StreamConfig,
}

/// The Stream-mode connector's settings (README, "Ingress").
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// `STREAM_ENABLED`: whether this replica holds Stream connections at all.
    pub enabled: bool,
    /// `STREAM_IDLE_TIMEOUT`: a connection without any frame (DingTalk pings every few
    /// seconds) or without an answer to our pings for this long is replaced.
    pub idle_timeout: Duration,
    /// `STREAM_MAX_AGE`: connections are replaced (overlapped) after this long.
    pub max_age: Duration,
    /// `STREAM_CONNECTIONS_PER_APP`: connections each stream integration holds, spread over
    /// replicas.
    pub connections_per_app: usize,
    /// `STREAM_LEASE_TTL`: how long a replica's claim on a connection slot outlives its last
    /// renewal (a killed replica's slots are taken over after at most this).
    pub lease_ttl: Duration,
    /// `STREAM_OPEN_RATE`: new connections this replica opens per second at most.
    pub open_rate: u32,
    /// `STREAM_REPLICA_ID`: this replica's name in leases and the admin API.
    pub replica_id: String,
}

impl StreamConfig {
    /// Reads the `STREAM_*` variables.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let idle_timeout = env.positive_duration("STREAM_IDLE_TIMEOUT", Duration::from_secs(60))?;
        if idle_timeout < Duration::from_secs(1) {
            return Err(ConfigError {
                var: "STREAM_IDLE_TIMEOUT".into(),
                value: humantime::format_duration(idle_timeout).to_string(),
                allowed: "must be at least 1s (DingTalk pings every few seconds)".into(),
            });
        }
        let replica_id = match env.get("STREAM_REPLICA_ID") {
            Some(id) => id.to_owned(),
            None => default_replica_id(),
        };
        Ok(Self {
            enabled: env.boolean("STREAM_ENABLED", true)?,
            idle_timeout,
            max_age: env.positive_duration("STREAM_MAX_AGE", Duration::from_secs(3600))?,
            connections_per_app: env.int_in("STREAM_CONNECTIONS_PER_APP", 2, 1..=16)?,
            lease_ttl: env.positive_duration("STREAM_LEASE_TTL", Duration::from_secs(10))?,
            open_rate: env.int_in("STREAM_OPEN_RATE", 20, 1..=10_000)?,
            replica_id,
        })
    }
}

/// `<hostname>-<pid>`: unique per process, readable in the admin API.
fn default_replica_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ingress".to_owned());
    format!("{host}-{}", std::process::id())
}

impl Config {
    /// Reads and checks every variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let publish_timeout =
            env.positive_duration("PUBLISH_TIMEOUT", Duration::from_millis(800))?;
        if publish_timeout >= Duration::from_millis(1500) {
            return Err(ConfigError {
                var: "PUBLISH_TIMEOUT".into(),
                value: humantime::format_duration(publish_timeout).to_string(),
                allowed: "must stay under DingTalk's 1500 ms callback deadline, e.g. 800ms".into(),
            });
        }
        Ok(Self {
            common: CommonConfig::from_env(env, "0.0.0.0:9100")?,
            ingress_addr: env.socket_addr("INGRESS_ADDR", "0.0.0.0:8080")?,
            admin_addr: env.socket_addr("ADMIN_ADDR", "127.0.0.1:8081")?,
            admin_token: env.get("ADMIN_TOKEN").map(Secret::from),
            public_base_url: match env.get("PUBLIC_BASE_URL") {
                Some(_) => Some(env.url("PUBLIC_BASE_URL", "", &["https", "http"])?),
                None => None,
            },
            callback_max_skew: env
                .positive_duration("CALLBACK_MAX_SKEW", Duration::from_secs(24 * 3600))?,
            publish_timeout,
            max_in_flight: env.int_in("INGRESS_MAX_IN_FLIGHT", 2048, 1..=1_000_000)?,
            dingtalk: DingTalkEndpoints::from_env(env)?,
            stream: StreamConfig::from_env(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_ones() {
        let config = Config::from_env(&Env::default()).unwrap();
        assert_eq!(config.ingress_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(config.admin_addr.to_string(), "127.0.0.1:8081");
        assert!(config.admin_token.is_none());
        assert_eq!(config.callback_max_skew, Duration::from_secs(86_400));
        assert_eq!(config.dingtalk.api_url, "https://api.dingtalk.com");
        assert!(config.stream.enabled);
        assert_eq!(config.stream.max_age, Duration::from_secs(3600));
        assert_eq!(config.stream.connections_per_app, 2);
    }

    #[test]
    fn stream_settings_out_of_range_are_refused_by_name() {
        for (var, value) in [
            ("STREAM_CONNECTIONS_PER_APP", "0"),
            ("STREAM_ENABLED", "maybe"),
            ("STREAM_IDLE_TIMEOUT", "200ms"),
            ("STREAM_MAX_AGE", "soon"),
        ] {
            let env = Env::from_pairs([(var, value)]);
            assert_eq!(Config::from_env(&env).unwrap_err().var, var);
        }
    }

    #[test]
    fn a_publish_timeout_beyond_dingtalks_deadline_is_refused() {
        let env = Env::from_pairs([("PUBLISH_TIMEOUT", "2s")]);
        assert_eq!(Config::from_env(&env).unwrap_err().var, "PUBLISH_TIMEOUT");
    }

    #[test]
    fn the_admin_token_never_shows_in_debug_output() {
        let env = Env::from_pairs([("ADMIN_TOKEN", "s3cret-admin")]);
        let config = Config::from_env(&env).unwrap();
        assert!(!format!("{config:?}").contains("s3cret-admin"));
    }
}
