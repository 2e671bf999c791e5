//! The notifier's configuration, from environment variables (README, "Configuration").

use std::time::Duration;

use common::config::{CommonConfig, ConfigError, DingTalkEndpoints, Env};

/// Everything the notifier reads from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Settings shared by every service (`METRICS_ADDR` defaults to `0.0.0.0:9102`).
    pub common: CommonConfig,
    /// `DINGTALK_API_URL` / `DINGTALK_OAPI_URL`: where DingTalk is (the simulator in tests).
    /// The old-API URL is also the only host a `session_webhook` recipient may point at.
    pub dingtalk: DingTalkEndpoints,
    /// `NOTIFIER_CONCURRENCY`: commands executed at once by this replica.
    pub concurrency: usize,
    /// `MEDIA_URL_ALLOWLIST`: hosts a file or image `url` may be fetched from (comma-separated;
    /// `*.example.com` allows the subdomains). Empty: only `media_id`s are accepted.
    pub media_url_allowlist: Vec<String>,
    /// `PUBLIC_BASE_URL`: how DingTalk reaches the ingress, for card button callbacks. Unset:
    /// cards are still sent, but their button presses cannot reach the gateway.
    pub public_base_url: Option<String>,
    /// `NOTIFIER_LIMITER_MARGIN`: added to the rate limiter's one-second (and one-minute)
    /// windows to absorb the delay between taking a permit and DingTalk counting the call.
    /// DingTalk's per-second limit is used at `1 s / (1 s + margin)` of its rate at most.
    pub limiter_margin: Duration,
    /// How long JetStream waits for a command's ack before redelivering it, and how long one
    /// execution holds a command's lease (both extended while it runs). Not read from the
    /// environment (30 s); tests shorten it to exercise crashes.
    pub ack_wait: Duration,
    /// How long an update or recall waits, from its first delivery, for a target send that is
    /// neither finished nor on its way before failing `unknown_target`. Not read from the
    /// environment ([`crate::engine::TARGET_WAIT`]); tests shorten it.
    pub target_wait: Duration,
    /// How long DingTalk bans the egress IP after its per-IP budget was exceeded (5 minutes).
    /// Not read from the environment; tests shorten it.
    pub ip_ban: Duration,
    /// `TOOLS_ADDR` / `TOOLS_TOKEN`: the notify tools for experts; `None` (off) without a token.
    pub tools: Option<crate::tools::ToolsConfig>,
    /// `NOTIFIER_RECORD_RETENTION`: how long a command's record (its result), what a send
    /// delivered and the order of a target's updates are kept in Redis. Default `NATS_MAX_AGE`:
    /// a command is recognised for as long as it can be in the commands stream.
    pub record_retention: Duration,
    /// `NOTIFIER_MAX_DEFER`: how long after it was first put off a command may still be put
    /// off because DingTalk (or its token endpoint, or the rate limit) does not let it through
    /// (see [`crate::engine::EngineConfig::max_defer`]). Then it is executed once more, and
    /// whatever still cannot pass fails (`throttled`, `unavailable`, retryable) instead of
    /// waiting until the commands stream drops it unanswered. Default 24 h, or half of
    /// `NATS_MAX_AGE` when that is shorter; must be shorter than `NATS_MAX_AGE`.
    pub max_defer: Duration,
}

impl Config {
    /// Reads and checks every variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let common = CommonConfig::from_env(env, "0.0.0.0:9102")?;
        let record_retention =
            env.positive_duration("NOTIFIER_RECORD_RETENTION", common.streams.max_age)?;
        let max_defer = max_defer(env, common.streams.max_age)?;
        Ok(Self {
            record_retention,
            max_defer,
            common,
            dingtalk: DingTalkEndpoints::from_env(env)?,
            concurrency: env.int_in("NOTIFIER_CONCURRENCY", 16, 1..=1024)?,
            media_url_allowlist: allowlist(env)?,
            public_base_url: match env.get("PUBLIC_BASE_URL") {
                Some(_) => Some(env.url("PUBLIC_BASE_URL", "", &["https", "http"])?),
                None => None,
            },
            limiter_margin: limiter_margin(env)?,
            ack_wait: Duration::from_secs(30),
            target_wait: crate::engine::TARGET_WAIT,
            ip_ban: crate::dingtalk::DingTalkOptions::default().ip_ban,
            tools: crate::tools::ToolsConfig::from_env(env)?,
        })
    }
}

/// The longest `NOTIFIER_LIMITER_MARGIN`: beyond it the limiter would waste a third of
/// DingTalk's rate, which no network jitter justifies.
const MAX_LIMITER_MARGIN: Duration = Duration::from_millis(500);

/// `NOTIFIER_LIMITER_MARGIN`, 0–500 ms.
fn limiter_margin(env: &Env) -> Result<Duration, ConfigError> {
    const VAR: &str = "NOTIFIER_LIMITER_MARGIN";
    let margin = env.duration(
        VAR,
        crate::dingtalk::DingTalkOptions::default().limiter_margin,
    )?;
    if margin > MAX_LIMITER_MARGIN {
        return Err(ConfigError {
            var: VAR.to_owned(),
            value: env.get(VAR).unwrap_or_default().to_owned(),
            allowed: "expected a duration from 0ms to 500ms, such as 100ms".to_owned(),
        });
    }
    Ok(margin)
}

/// The default `NOTIFIER_MAX_DEFER`.
const MAX_DEFER: Duration = Duration::from_secs(24 * 3600);

/// `NOTIFIER_MAX_DEFER`: shorter than `NATS_MAX_AGE`, so that a command is answered before the
/// stream forgets it.
fn max_defer(env: &Env, max_age: Duration) -> Result<Duration, ConfigError> {
    const VAR: &str = "NOTIFIER_MAX_DEFER";
    let max_defer = env.positive_duration(VAR, MAX_DEFER.min(max_age / 2))?;
    if max_defer >= max_age {
        return Err(ConfigError {
            var: VAR.to_owned(),
            value: env.get(VAR).unwrap_or_default().to_owned(),
            allowed: format!(
                "must be shorter than NATS_MAX_AGE ({}s): the commands stream drops a command that old",
                max_age.as_secs()
            ),
        });
    }
    Ok(max_defer)
}

/// `MEDIA_URL_ALLOWLIST`: lower-case host names, each plain or `*.`-prefixed.
fn allowlist(env: &Env) -> Result<Vec<String>, ConfigError> {
    let Some(raw) = env.get("MEDIA_URL_ALLOWLIST") else {
        return Ok(Vec::new());
    };
    raw.split(',')
        .map(str::trim)
        .filter(|host| !host.is_empty())
        .map(|host| {
            let bare = host.strip_prefix("*.").unwrap_or(host);
            let ok = !bare.is_empty()
                && bare
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == ':');
            if ok {
                Ok(host.to_ascii_lowercase())
            } else {
                Err(ConfigError {
                    var: "MEDIA_URL_ALLOWLIST".to_owned(),
                    value: raw.to_owned(),
                    allowed: format!(
                        "expected comma-separated host names such as files.example.com or *.example.com; {host:?} is not one"
                    ),
                })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_ones() {
        let config = Config::from_env(&Env::default()).unwrap();
        assert_eq!(config.concurrency, 16);
        assert!(config.media_url_allowlist.is_empty());
        assert!(config.public_base_url.is_none());
        assert_eq!(config.dingtalk.oapi_url, "https://oapi.dingtalk.com");
        assert_eq!(config.common.metrics_addr.to_string(), "0.0.0.0:9102");
        assert_eq!(config.limiter_margin, Duration::from_millis(100));
        assert_eq!(config.record_retention, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(config.max_defer, Duration::from_secs(24 * 3600));
    }

    #[test]
    fn commands_stop_being_deferred_before_the_stream_drops_them() {
        let short = Config::from_env(&Env::from_pairs([("NATS_MAX_AGE", "10h")])).unwrap();
        assert_eq!(short.max_defer, Duration::from_secs(5 * 3600));
        let set = Config::from_env(&Env::from_pairs([("NOTIFIER_MAX_DEFER", "2h")])).unwrap();
        assert_eq!(set.max_defer, Duration::from_secs(2 * 3600));
        let err = Config::from_env(&Env::from_pairs([
            ("NATS_MAX_AGE", "1d"),
            ("NOTIFIER_MAX_DEFER", "1d"),
        ]))
        .unwrap_err();
        assert_eq!(err.var, "NOTIFIER_MAX_DEFER");
        assert!(err.allowed.contains("NATS_MAX_AGE"), "{err:?}");
    }

    #[test]
    fn records_are_kept_as_long_as_commands_unless_configured() {
        let follows = Config::from_env(&Env::from_pairs([("NATS_MAX_AGE", "2d")])).unwrap();
        assert_eq!(follows.record_retention, Duration::from_secs(2 * 24 * 3600));
        let set = Config::from_env(&Env::from_pairs([
            ("NATS_MAX_AGE", "2d"),
            ("NOTIFIER_RECORD_RETENTION", "36h"),
        ]))
        .unwrap();
        assert_eq!(set.record_retention, Duration::from_secs(36 * 3600));
        let err =
            Config::from_env(&Env::from_pairs([("NOTIFIER_RECORD_RETENTION", "0s")])).unwrap_err();
        assert_eq!(err.var, "NOTIFIER_RECORD_RETENTION");
    }

    #[test]
    fn the_limiter_margin_is_a_short_duration() {
        let env = Env::from_pairs([("NOTIFIER_LIMITER_MARGIN", "15ms")]);
        assert_eq!(
            Config::from_env(&env).unwrap().limiter_margin,
            Duration::from_millis(15)
        );
        for bad in ["2s", "fast", "-1ms"] {
            let env = Env::from_pairs([("NOTIFIER_LIMITER_MARGIN", bad)]);
            assert_eq!(
                Config::from_env(&env).unwrap_err().var,
                "NOTIFIER_LIMITER_MARGIN",
                "{bad}"
            );
        }
    }

    #[test]
    fn the_allowlist_is_read_as_host_names() {
        let env = Env::from_pairs([(
            "MEDIA_URL_ALLOWLIST",
            " Files.Example.com, *.cdn.example.net ,",
        )]);
        let config = Config::from_env(&env).unwrap();
        assert_eq!(
            config.media_url_allowlist,
            ["files.example.com", "*.cdn.example.net"]
        );
        let env = Env::from_pairs([("MEDIA_URL_ALLOWLIST", "https://x.com/a")]);
        assert_eq!(
            Config::from_env(&env).unwrap_err().var,
            "MEDIA_URL_ALLOWLIST"
        );
    }

    #[test]
    fn concurrency_is_bounded() {
        let env = Env::from_pairs([("NOTIFIER_CONCURRENCY", "0")]);
        assert_eq!(
            Config::from_env(&env).unwrap_err().var,
            "NOTIFIER_CONCURRENCY"
        );
    }
}
