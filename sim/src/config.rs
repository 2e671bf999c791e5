//! The simulator's configuration: one typed struct, built in code by tests or from
//! environment variables by the binary ([`SimConfig::from_env`]).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use common::config::{ConfigError, Env};
use common::secret::Secret;
use serde::Deserialize;

use crate::directory::Directory;
use crate::stream::StreamSettings;

/// An enterprise internal app the simulator accepts (AppKey/AppSecret), and its robot.
/// Deserialize-only, so the secret cannot end up in an answer.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppCredentials {
    /// AppKey (= clientId).
    pub app_key: String,
    /// AppSecret (= clientSecret); also the robot callback signing secret (PROTOCOL §2.1).
    pub app_secret: Secret,
    /// The app robot's `robotCode`; DingTalk defaults it to the AppKey.
    #[serde(default)]
    pub robot_code: Option<String>,
}

impl AppCredentials {
    /// An app whose robotCode is its AppKey.
    pub fn new(app_key: impl Into<String>, app_secret: impl Into<String>) -> Self {
        Self {
            app_key: app_key.into(),
            app_secret: Secret::new(app_secret.into()),
            robot_code: None,
        }
    }

    /// The robotCode in force.
    pub fn robot_code(&self) -> &str {
        self.robot_code.as_deref().unwrap_or(&self.app_key)
    }
}

impl fmt::Debug for AppCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppCredentials")
            .field("app_key", &self.app_key)
            .field("app_secret", &self.app_secret)
            .field("robot_code", &self.robot_code())
            .finish()
    }
}

/// `appKey:appSecret[:robotCode]`, as in `SIM_APPS`.
impl FromStr for AppCredentials {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parts = text.trim().splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(key), Some(secret), robot) if !key.is_empty() && !secret.is_empty() => Ok(Self {
                app_key: key.to_owned(),
                app_secret: Secret::new(secret),
                robot_code: robot.filter(|code| !code.is_empty()).map(str::to_owned),
            }),
            _ => Err("expected appKey:appSecret[:robotCode]".to_owned()),
        }
    }
}

/// A custom group robot (webhook robot, PROTOCOL §4.9). Deserialize-only, like
/// [`AppCredentials`].
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomRobotConfig {
    /// The webhook's `access_token`.
    pub access_token: String,
    /// The "加签" secret (`SEC…`); when set, `timestamp` and `sign` are required.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Security keywords; when non-empty, a message must contain one of them.
    #[serde(default)]
    pub keywords: Vec<String>,
}

impl fmt::Debug for CustomRobotConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomRobotConfig")
            .field("access_token", &"***")
            .field("secret", &self.secret)
            .field("keywords", &self.keywords)
            .finish()
    }
}

/// `accessToken[:secret]`, as in `SIM_CUSTOM_ROBOTS`.
impl FromStr for CustomRobotConfig {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (token, secret) = match text.trim().split_once(':') {
            Some((token, secret)) => (token, Some(secret)),
            None => (text.trim(), None),
        };
        if token.is_empty() {
            return Err("expected accessToken[:secret]".to_owned());
        }
        Ok(Self {
            access_token: token.to_owned(),
            secret: secret.filter(|s| !s.is_empty()).map(Secret::new),
            keywords: Vec::new(),
        })
    }
}

/// Every limit the simulator enforces or lives within.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Calls per (app, API) per wall-clock second (PROTOCOL §6.3 plans for 20).
    pub qps_per_app_api: u32,
    /// Lifetime of both token kinds (DingTalk: 7200 s).
    pub token_lifetime: Duration,
    /// Messages per minute per custom robot (DingTalk: 20).
    pub custom_robot_per_minute: usize,
    /// How long a custom robot stays throttled after exceeding it (DingTalk: about 10 minutes).
    pub custom_robot_penalty: Duration,
    /// Accepted calls kept for inspection (the oldest are dropped; rejected calls have the same
    /// cap of their own).
    pub max_recorded_calls: usize,
    /// Robot messages, cards and card instances kept (each, oldest dropped).
    pub max_stored_items: usize,
    /// Largest uploaded file (DingTalk: 20 MB for images and files).
    pub max_media_bytes: usize,
    /// Total bytes of stored media (oldest dropped).
    pub max_media_total_bytes: usize,
    /// Apps, custom robots, fault rules and card callback routes, each.
    pub max_registrations: usize,
    /// How batchSend treats a userId the organization does not have: listed in
    /// `invalidStaffIdList` while the others get the message (`false`, the default), or the
    /// whole call refused with `staffId.notExisted` (`true`; PROTOCOL §4.2 names that error
    /// without saying when DingTalk gives it).
    pub refuse_batch_with_unknown_staff: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            qps_per_app_api: 20,
            token_lifetime: Duration::from_secs(7200),
            custom_robot_per_minute: 20,
            custom_robot_penalty: Duration::from_secs(600),
            max_recorded_calls: 100_000,
            max_stored_items: 100_000,
            max_media_bytes: 20 * 1024 * 1024,
            max_media_total_bytes: 256 * 1024 * 1024,
            max_registrations: 1_000,
            refuse_batch_with_unknown_staff: false,
        }
    }
}

/// Everything the simulator needs to start.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Where to listen; port 0 picks a free port (tests).
    pub addr: SocketAddr,
    /// Base URL put into `downloadUrl` and `sessionWebhook`; defaults to `http://<bound addr>`.
    pub public_url: Option<String>,
    /// Apps accepted from the start (more via `POST /_sim/apps`).
    pub apps: Vec<AppCredentials>,
    /// Custom robots accepted from the start (more via `POST /_sim/custom-robots`).
    pub custom_robots: Vec<CustomRobotConfig>,
    /// The simulated org.
    pub directory: Directory,
    /// Limits.
    pub limits: Limits,
    /// Timings of the Stream-mode gateway.
    pub stream: StreamSettings,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 9300)),
            public_url: None,
            apps: Vec::new(),
            custom_robots: Vec::new(),
            directory: Directory::seeded(),
            limits: Limits::default(),
            stream: StreamSettings::default(),
        }
    }
}

impl SimConfig {
    /// A simulator on a free local port with the seeded org, for in-process tests.
    pub fn local() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Self::default()
        }
    }

    /// Adds an app.
    pub fn with_app(mut self, app: AppCredentials) -> Self {
        self.apps.push(app);
        self
    }

    /// Adds a custom robot.
    pub fn with_custom_robot(mut self, robot: CustomRobotConfig) -> Self {
        self.custom_robots.push(robot);
        self
    }

    /// Reads the variables in the README's table.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let defaults = Limits::default();
        let public_url = match env.get("SIM_PUBLIC_URL") {
            None => None,
            Some(_) => Some(env.url("SIM_PUBLIC_URL", "", &["http", "https"])?),
        };
        Ok(Self {
            addr: env.socket_addr("SIM_ADDR", "127.0.0.1:9300")?,
            public_url,
            apps: list(env, "SIM_APPS", "appKey:appSecret[:robotCode],…")?,
            custom_robots: list(env, "SIM_CUSTOM_ROBOTS", "accessToken[:secret],…")?,
            directory: Directory::seeded(),
            limits: Limits {
                qps_per_app_api: env.int_in(
                    "SIM_QPS_LIMIT",
                    defaults.qps_per_app_api,
                    1..=100_000,
                )?,
                token_lifetime: env
                    .positive_duration("SIM_TOKEN_LIFETIME", defaults.token_lifetime)?,
                custom_robot_per_minute: env.int_in(
                    "SIM_CUSTOM_ROBOT_PER_MINUTE",
                    defaults.custom_robot_per_minute,
                    1..=100_000,
                )?,
                custom_robot_penalty: env
                    .duration("SIM_CUSTOM_ROBOT_PENALTY", defaults.custom_robot_penalty)?,
                refuse_batch_with_unknown_staff: env.boolean(
                    "SIM_REFUSE_UNKNOWN_STAFF",
                    defaults.refuse_batch_with_unknown_staff,
                )?,
                max_recorded_calls: env.int_in(
                    "SIM_MAX_CALLS",
                    defaults.max_recorded_calls,
                    1..=10_000_000,
                )?,
                ..defaults
            },
            stream: StreamSettings {
                ping_interval: env.positive_duration(
                    "SIM_STREAM_PING_INTERVAL",
                    StreamSettings::default().ping_interval,
                )?,
                redelivery_timeout: env.positive_duration(
                    "SIM_STREAM_REDELIVERY_TIMEOUT",
                    StreamSettings::default().redelivery_timeout,
                )?,
                ..StreamSettings::default()
            },
        })
    }
}

/// A comma-separated list of `FromStr` items.
fn list<T: FromStr<Err = String>>(
    env: &Env,
    var: &str,
    shape: &str,
) -> Result<Vec<T>, ConfigError> {
    let Some(raw) = env.get(var) else {
        return Ok(Vec::new());
    };
    raw.split(',')
        .filter(|item| !item.trim().is_empty())
        .map(|item| {
            item.parse().map_err(|why: String| ConfigError {
                var: var.to_owned(),
                value: "***".to_owned(),
                allowed: format!("{why}; the whole value is {shape}"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_and_robots_parse_from_the_environment() {
        let env = Env::from_pairs([
            ("SIM_APPS", "dingA:secretA, dingB:secretB:robotB"),
            ("SIM_CUSTOM_ROBOTS", "tok1:SECx,tok2"),
            ("SIM_QPS_LIMIT", "5"),
            ("SIM_TOKEN_LIFETIME", "10s"),
        ]);
        let config = SimConfig::from_env(&env).unwrap();
        assert_eq!(config.apps.len(), 2);
        assert_eq!(config.apps[0].robot_code(), "dingA");
        assert_eq!(config.apps[1].robot_code(), "robotB");
        assert!(config.custom_robots[0].secret.is_some());
        assert!(config.custom_robots[1].secret.is_none());
        assert_eq!(config.limits.qps_per_app_api, 5);
        assert_eq!(config.limits.token_lifetime, Duration::from_secs(10));
        assert_eq!(config.addr, SocketAddr::from(([127, 0, 0, 1], 9300)));
    }

    #[test]
    fn malformed_app_list_names_the_variable_and_hides_the_value() {
        let err = SimConfig::from_env(&Env::from_pairs([("SIM_APPS", "onlykey")])).unwrap_err();
        assert_eq!(err.var, "SIM_APPS");
        assert_eq!(err.value, "***");
    }

    #[test]
    fn app_secret_stays_out_of_debug_output() {
        let app = AppCredentials::new("dingA", "topsecret");
        assert!(!format!("{app:?}").contains("topsecret"));
    }
}
