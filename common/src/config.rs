//! Settings shared by every service, read once from environment variables.
//!
//! Each service has its own typed config struct that embeds [`CommonConfig`]; all of them are
//! built from an [`Env`] so tests can load configuration from plain pairs instead of mutating
//! the process environment. A bad value stops start-up with one line naming the variable and
//! what is allowed ([`ConfigError`]).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::registry::{
    RegistryOptions, SecretsError, SecretsKeys, SECRETS_KEY_PREVIOUS_VAR, SECRETS_KEY_VAR,
};

/// A configuration value that could not be used; `Display` is the one line printed at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {var}={value:?}: {allowed}")]
pub struct ConfigError {
    /// The environment variable's name.
    pub var: String,
    /// What was found (never a secret: secret variables report `***`).
    pub value: String,
    /// What is allowed instead.
    pub allowed: String,
}

impl ConfigError {
    fn new(var: &str, value: &str, allowed: impl Into<String>) -> Self {
        Self {
            var: var.to_owned(),
            value: value.to_owned(),
            allowed: allowed.into(),
        }
    }
}

/// The source of configuration values: the process environment or, in tests, plain pairs.
///
/// It remembers the name of every variable a loader asked for ([`Env::queried`]), so the
/// deployment tests can prove that each variable a manifest sets is one a service reads.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
    queried: Arc<Mutex<BTreeSet<String>>>,
}

impl Env {
    /// Snapshot of the process environment (variables that are not valid UTF-8 are skipped).
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
            queried: Arc::default(),
        }
    }

    /// An environment made of the given pairs only.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            queried: Arc::default(),
        }
    }

    /// Every variable name asked for so far, set or not (clones share the record).
    pub fn queried(&self) -> BTreeSet<String> {
        self.queried
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The raw value, with empty strings treated as unset (a blank line in an env file).
    pub fn get(&self, var: &str) -> Option<&str> {
        self.queried
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(var.to_owned());
        self.vars
            .get(var)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// A string value or its default.
    pub fn string(&self, var: &str, default: &str) -> String {
        self.get(var).unwrap_or(default).to_owned()
    }

    /// Any `FromStr` value; `allowed` describes valid values for the error line.
    pub fn parse<T: FromStr>(
        &self,
        var: &str,
        default: T,
        allowed: &str,
    ) -> Result<T, ConfigError> {
        match self.get(var) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|_| ConfigError::new(var, raw, allowed)),
        }
    }

    /// A listen address such as `0.0.0.0:8080`.
    pub fn socket_addr(&self, var: &str, default: &str) -> Result<SocketAddr, ConfigError> {
        let raw = self.string(var, default);
        raw.trim().parse().map_err(|_| {
            ConfigError::new(
                var,
                &raw,
                "expected host:port with an IP address, e.g. 0.0.0.0:8080",
            )
        })
    }

    /// A human duration such as `10m`, `24h` or `1500ms`.
    pub fn duration(&self, var: &str, default: Duration) -> Result<Duration, ConfigError> {
        match self.get(var) {
            None => Ok(default),
            Some(raw) => humantime::parse_duration(raw.trim()).map_err(|_| {
                ConfigError::new(
                    var,
                    raw,
                    "expected a duration such as 1500ms, 30s, 10m, 24h or 7d",
                )
            }),
        }
    }

    /// A positive duration (zero would disable a timeout or a window by accident).
    pub fn positive_duration(&self, var: &str, default: Duration) -> Result<Duration, ConfigError> {
        let value = self.duration(var, default)?;
        if value.is_zero() {
            return Err(ConfigError::new(
                var,
                self.get(var).unwrap_or_default(),
                "expected a duration greater than zero",
            ));
        }
        Ok(value)
    }

    /// An integer within `range` (inclusive).
    pub fn int_in<T>(
        &self,
        var: &str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Copy + std::fmt::Display,
    {
        let allowed = format!(
            "expected an integer from {} to {}",
            range.start(),
            range.end()
        );
        let value = self.parse(var, default, &allowed)?;
        if !range.contains(&value) {
            return Err(ConfigError::new(
                var,
                self.get(var).unwrap_or_default(),
                allowed,
            ));
        }
        Ok(value)
    }

    /// A boolean: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`.
    pub fn boolean(&self, var: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(var).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) => match v.as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(ConfigError::new(var, &v, "expected true or false")),
            },
        }
    }

    /// A URL whose scheme is one of `schemes` (an error shows it without its password).
    pub fn url(&self, var: &str, default: &str, schemes: &[&str]) -> Result<String, ConfigError> {
        let raw = self.string(var, default);
        if !has_scheme(&raw, schemes) {
            let allowed = format!("expected a URL starting with {}://", schemes.join("://, "));
            return Err(ConfigError::new(var, &redact_url(&raw), allowed));
        }
        Ok(raw.trim_end_matches('/').to_owned())
    }

    /// `var` as one URL or several, comma-separated (the seed servers of a cluster), each with
    /// one of `schemes`; given back comma-separated, without blanks or trailing slashes.
    pub fn url_list(
        &self,
        var: &str,
        default: &str,
        schemes: &[&str],
    ) -> Result<String, ConfigError> {
        let raw = self.string(var, default);
        let urls: Vec<&str> = raw.split(',').map(str::trim).collect();
        if !urls.iter().all(|url| has_scheme(url, schemes)) {
            let allowed = format!(
                "expected a URL starting with {}://, or several separated by commas",
                schemes.join("://, ")
            );
            return Err(ConfigError::new(var, &redact_url_list(&raw), allowed));
        }
        Ok(urls
            .iter()
            .map(|url| url.trim_end_matches('/'))
            .collect::<Vec<_>>()
            .join(","))
    }
}

fn has_scheme(url: &str, schemes: &[&str]) -> bool {
    url.split_once("://")
        .is_some_and(|(scheme, rest)| schemes.contains(&scheme) && !rest.is_empty())
}

/// [`redact_url`] for a comma-separated list of URLs (`NATS_URL`). Anything that is not such a
/// list (a part without `scheme://`, as when a password holds a comma) is redacted as one URL,
/// so no piece of a password is shown.
pub fn redact_url_list(urls: &str) -> String {
    let parts: Vec<&str> = urls.split(',').map(str::trim).collect();
    if parts.len() < 2 || !parts.iter().all(|part| part.contains("://")) {
        return redact_url(urls);
    }
    parts
        .iter()
        .map(|part| redact_url(part))
        .collect::<Vec<_>>()
        .join(",")
}

/// `url` fit for a log line or an error: user and password (`redis://:secret@host`) become
/// `***`. Anything else is kept, so the message still says where the service tried to go.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = match authority.rfind('@') {
        Some(at) => format!("***@{}", &authority[at + 1..]),
        None => authority.to_owned(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{host}{path}"),
        None => format!("{host}{path}"),
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable, for a terminal.
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

impl FromStr for LogFormat {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pretty" => Ok(Self::Pretty),
            "json" => Ok(Self::Json),
            _ => Err(()),
        }
    }
}

/// JetStream stream settings applied when the services provision the bus streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    /// `NATS_STREAM_REPLICAS`: replicas per stream (1 locally, 3 in production).
    pub replicas: usize,
    /// `NATS_DUPLICATE_WINDOW`: how long `Nats-Msg-Id` de-duplication remembers an id.
    pub duplicate_window: Duration,
    /// `NATS_MAX_AGE`: how long events, commands and results are kept.
    pub max_age: Duration,
    /// `NATS_DLQ_MAX_AGE`: how long dead letters are kept (longer: a human must look at them).
    pub dlq_max_age: Duration,
    /// `NATS_MAX_BYTES`: size cap of each stream.
    pub max_bytes: i64,
}

impl StreamSettings {
    /// Reads the `NATS_*` stream variables.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let settings = Self {
            replicas: env.int_in("NATS_STREAM_REPLICAS", 1, 1..=5)?,
            duplicate_window: env
                .positive_duration("NATS_DUPLICATE_WINDOW", Duration::from_secs(600))?,
            max_age: env.positive_duration("NATS_MAX_AGE", Duration::from_secs(7 * 24 * 3600))?,
            dlq_max_age: env
                .positive_duration("NATS_DLQ_MAX_AGE", Duration::from_secs(30 * 24 * 3600))?,
            max_bytes: env.int_in("NATS_MAX_BYTES", 1 << 30, 1 << 20..=i64::MAX)?,
        };
        // JetStream refuses a duplicate window longer than the stream's max age.
        if settings.duplicate_window > settings.max_age.min(settings.dlq_max_age) {
            return Err(ConfigError::new(
                "NATS_DUPLICATE_WINDOW",
                env.get("NATS_DUPLICATE_WINDOW").unwrap_or("10m"),
                "must not exceed NATS_MAX_AGE or NATS_DLQ_MAX_AGE",
            ));
        }
        Ok(settings)
    }
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self::from_env(&Env::default()).expect("defaults are valid")
    }
}

/// Where the DingTalk API lives: the new API and the old one (configurable for the
/// international site, a proxy, or the project's simulator in tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DingTalkEndpoints {
    /// `DINGTALK_API_URL`: the new ("v1.0") API.
    pub api_url: String,
    /// `DINGTALK_OAPI_URL`: the old API.
    pub oapi_url: String,
}

impl DingTalkEndpoints {
    /// Reads `DINGTALK_API_URL` and `DINGTALK_OAPI_URL`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            api_url: env.url(
                "DINGTALK_API_URL",
                "https://api.dingtalk.com",
                &["https", "http"],
            )?,
            oapi_url: env.url(
                "DINGTALK_OAPI_URL",
                "https://oapi.dingtalk.com",
                &["https", "http"],
            )?,
        })
    }
}

/// Settings every service reads.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    /// `NATS_URL`.
    pub nats_url: String,
    /// `REDIS_URL`.
    pub redis_url: String,
    /// `LOG_FORMAT`: `pretty` or `json`.
    pub log_format: LogFormat,
    /// `RUST_LOG`: the tracing filter (default `info`).
    pub log_filter: String,
    /// `METRICS_ADDR`: the listener for `/healthz`, `/readyz` and `/metrics`.
    pub metrics_addr: SocketAddr,
    /// `SHUTDOWN_TIMEOUT`: how long in-flight work may take to finish after SIGTERM.
    pub shutdown_timeout: Duration,
    /// JetStream stream settings.
    pub streams: StreamSettings,
    /// Registry cache, binding TTL and secrets keys (`REGISTRY_CACHE_TTL`,
    /// `CONVERSATION_BINDING_TTL`, `SECRETS_KEY`, `SECRETS_KEY_PREVIOUS`).
    pub registry: RegistryOptions,
}

impl CommonConfig {
    /// Reads the shared variables; `default_metrics_addr` differs per service so all three can
    /// run on one host.
    pub fn from_env(env: &Env, default_metrics_addr: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            nats_url: env.url_list(
                "NATS_URL",
                "nats://127.0.0.1:4222",
                &["nats", "tls", "ws", "wss"],
            )?,
            redis_url: redis_url(env)?,
            log_format: env.parse("LOG_FORMAT", LogFormat::Pretty, "expected pretty or json")?,
            log_filter: env.string("RUST_LOG", "info"),
            metrics_addr: env.socket_addr("METRICS_ADDR", default_metrics_addr)?,
            shutdown_timeout: env.positive_duration("SHUTDOWN_TIMEOUT", Duration::from_secs(25))?,
            streams: StreamSettings::from_env(env)?,
            registry: registry_options(env)?,
        })
    }
}

/// `REDIS_URL`, checked as the Redis client reads it (no connection is made), so a URL it
/// cannot use is reported at start-up by name.
fn redis_url(env: &Env) -> Result<String, ConfigError> {
    let url = env.url("REDIS_URL", "redis://127.0.0.1:6379", &["redis", "rediss"])?;
    match redis::Client::open(url.as_str()) {
        Ok(_) => Ok(url),
        // The client's messages are fixed texts: they quote nothing of the URL.
        Err(err) => Err(ConfigError::new(
            "REDIS_URL",
            &redact_url(&url),
            format!("a URL the Redis client accepts ({err})"),
        )),
    }
}

/// The registry's options; secrets keys are reported without echoing them.
fn registry_options(env: &Env) -> Result<RegistryOptions, ConfigError> {
    let secrets =
        SecretsKeys::from_base64(env.get(SECRETS_KEY_VAR), env.get(SECRETS_KEY_PREVIOUS_VAR))
            .map_err(|err| {
                let var = match &err {
                    SecretsError::BadKey { var, .. } => var,
                    _ => SECRETS_KEY_VAR,
                };
                ConfigError::new(var, "***", err.to_string())
            })?;
    let mut options = RegistryOptions::new(secrets);
    options.cache_ttl = env.duration("REGISTRY_CACHE_TTL", RegistryOptions::DEFAULT_CACHE_TTL)?;
    options.binding_ttl = env.positive_duration(
        "CONVERSATION_BINDING_TTL",
        RegistryOptions::DEFAULT_BINDING_TTL,
    )?;
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let config = CommonConfig::from_env(&Env::default(), "0.0.0.0:9100").unwrap();
        assert_eq!(config.nats_url, "nats://127.0.0.1:4222");
        assert_eq!(config.redis_url, "redis://127.0.0.1:6379");
        assert_eq!(config.log_format, LogFormat::Pretty);
        assert_eq!(config.metrics_addr.port(), 9100);
        assert_eq!(config.streams.replicas, 1);
        assert_eq!(config.streams.duplicate_window, Duration::from_secs(600));
    }

    #[test]
    fn a_bad_value_names_the_variable_and_what_is_allowed() {
        let env = Env::from_pairs([("LOG_FORMAT", "xml")]);
        let err = CommonConfig::from_env(&env, "0.0.0.0:9100").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid LOG_FORMAT="xml": expected pretty or json"#
        );

        let env = Env::from_pairs([("NATS_DUPLICATE_WINDOW", "ten minutes")]);
        let err = CommonConfig::from_env(&env, "0.0.0.0:9100").unwrap_err();
        assert_eq!(err.var, "NATS_DUPLICATE_WINDOW");
        assert!(err.allowed.contains("duration"));

        let env = Env::from_pairs([("NATS_STREAM_REPLICAS", "7")]);
        let err = CommonConfig::from_env(&env, "0.0.0.0:9100").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid NATS_STREAM_REPLICAS="7": expected an integer from 1 to 5"#
        );

        let env = Env::from_pairs([("REDIS_URL", "localhost:6379")]);
        let err = CommonConfig::from_env(&env, "0.0.0.0:9100").unwrap_err();
        assert_eq!(err.var, "REDIS_URL");

        let env = Env::from_pairs([("METRICS_ADDR", "localhost")]);
        assert_eq!(
            CommonConfig::from_env(&env, "0.0.0.0:9100")
                .unwrap_err()
                .var,
            "METRICS_ADDR"
        );

        let env = Env::from_pairs([("NATS_MAX_AGE", "5m")]);
        assert_eq!(
            CommonConfig::from_env(&env, "0.0.0.0:9100")
                .unwrap_err()
                .var,
            "NATS_DUPLICATE_WINDOW"
        );

        let env = Env::from_pairs([("NATS_MAX_AGE", "0s")]);
        assert_eq!(
            CommonConfig::from_env(&env, "0.0.0.0:9100")
                .unwrap_err()
                .var,
            "NATS_MAX_AGE"
        );
    }

    #[test]
    fn every_variable_asked_for_is_remembered_set_or_not() {
        let env = Env::from_pairs([("LOG_FORMAT", "json"), ("NOT_A_SETTING", "x")]);
        CommonConfig::from_env(&env, "0.0.0.0:9100").unwrap();
        let queried = env.queried();
        assert!(queried.contains("LOG_FORMAT"));
        assert!(queried.contains("NATS_URL"), "unset variables count too");
        assert!(queried.contains("SECRETS_KEY_PREVIOUS"));
        assert!(!queried.contains("NOT_A_SETTING"));
    }

    #[test]
    fn redis_url_is_checked_as_the_client_reads_it() {
        let tls = Env::from_pairs([("REDIS_URL", "rediss://:hunter2@redis.internal:6380/0")]);
        let config = CommonConfig::from_env(&tls, "0.0.0.0:9100").unwrap();
        assert!(config.redis_url.starts_with("rediss://"));
        let env = Env::from_pairs([("REDIS_URL", "redis://:hunter2@redis.internal:port/0")]);
        let err = CommonConfig::from_env(&env, "0.0.0.0:9100").unwrap_err();
        assert_eq!(err.var, "REDIS_URL");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn nats_url_may_list_several_seed_servers() {
        let env = Env::from_pairs([("NATS_URL", "nats://n1:4222/, nats://n2:4222")]);
        let config = CommonConfig::from_env(&env, "0.0.0.0:9100").unwrap();
        assert_eq!(config.nats_url, "nats://n1:4222,nats://n2:4222");
        let env = Env::from_pairs([("NATS_URL", "nats://u:hunter2@n1:4222,n2:4222")]);
        let err = CommonConfig::from_env(&env, "0.0.0.0:9100").unwrap_err();
        assert_eq!(err.var, "NATS_URL");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn a_url_is_shown_without_its_credentials() {
        assert_eq!(
            redact_url("rediss://:hunter2@redis.internal:6380/0"),
            "rediss://***@redis.internal:6380/0"
        );
        assert_eq!(
            redact_url("nats://user:pa@ss@nats:4222"),
            "nats://***@nats:4222"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(redact_url("user:hunter2@host"), "***@host");
        assert_eq!(
            redact_url_list("nats://a:hunter2@n1:4222, nats://a:hunter2@n2:4222"),
            "nats://***@n1:4222,nats://***@n2:4222"
        );
        assert_eq!(
            redact_url_list("nats://a:hun,ter2@n1:4222"),
            "nats://***@n1:4222"
        );
        let env = Env::from_pairs([("REDIS_URL", "http://:hunter2@redis:6379")]);
        let err = CommonConfig::from_env(&env, "0.0.0.0:9100").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn values_are_parsed_with_their_units() {
        let env = Env::from_pairs([
            ("NATS_DUPLICATE_WINDOW", "2m"),
            ("NATS_MAX_AGE", "24h"),
            ("LOG_FORMAT", "json"),
            ("METRICS_ADDR", "127.0.0.1:0"),
            ("REDIS_URL", "redis://10.0.0.1:6380/"),
        ]);
        let config = CommonConfig::from_env(&env, "0.0.0.0:9100").unwrap();
        assert_eq!(config.streams.duplicate_window, Duration::from_secs(120));
        assert_eq!(config.streams.max_age, Duration::from_secs(86_400));
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.redis_url, "redis://10.0.0.1:6380");
    }

    #[test]
    fn a_bad_secrets_key_is_named_but_never_echoed() {
        let env = Env::from_pairs([("SECRETS_KEY", "c2hvcnQ=")]);
        let err = CommonConfig::from_env(&env, "0.0.0.0:9100").unwrap_err();
        assert_eq!(err.var, "SECRETS_KEY");
        assert!(!err.to_string().contains("c2hvcnQ="), "{err}");
        let env = Env::from_pairs([(
            "SECRETS_KEY_PREVIOUS",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )]);
        assert_eq!(
            CommonConfig::from_env(&env, "0.0.0.0:9100")
                .unwrap_err()
                .var,
            "SECRETS_KEY"
        );
        let key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let env = Env::from_pairs([("SECRETS_KEY", key), ("REGISTRY_CACHE_TTL", "2s")]);
        let config = CommonConfig::from_env(&env, "0.0.0.0:9100").unwrap();
        assert!(config.registry.secrets.is_encrypting());
        assert_eq!(config.registry.cache_ttl, Duration::from_secs(2));
    }

    #[test]
    fn blank_values_count_as_unset() {
        let env = Env::from_pairs([("LOG_FORMAT", "  ")]);
        assert_eq!(
            CommonConfig::from_env(&env, "0.0.0.0:9100")
                .unwrap()
                .log_format,
            LogFormat::Pretty
        );
    }

    #[test]
    fn booleans_accept_the_usual_spellings() {
        let env = Env::from_pairs([("A", "yes"), ("B", "0"), ("C", "maybe")]);
        assert!(env.boolean("A", false).unwrap());
        assert!(!env.boolean("B", true).unwrap());
        assert_eq!(env.boolean("C", true).unwrap_err().var, "C");
        assert!(env.boolean("D", true).unwrap());
    }
}
