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
    /// `DINGTALK_API_URL` / `DINGTALK_OAPI_URL`, for the admin preflight check.
    pub dingtalk: DingTalkEndpoints,
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
