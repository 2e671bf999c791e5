//! The registry's values, parsed once at the edge.
//!
//! Everything the admin API or Redis hands us goes through [`IntegrationSpec::into_integration`]
//! or one of the `FromStr`/`TryFrom` impls here, so the rest of the gateway holds types that
//! cannot carry a bad id, an AES key of the wrong length or an out-of-range QPS budget.
//! These are pure values: no I/O happens in this file.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::secret::Secret;

/// Why a string could not become one of the registry's identifiers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The value was the empty string.
    #[error("{what} must not be empty")]
    Empty {
        /// Which identifier, e.g. "integration id".
        what: &'static str,
    },
    /// The value was longer than the identifier allows.
    #[error("{what} must be at most {max} characters, got {len}")]
    TooLong {
        /// Which identifier.
        what: &'static str,
        /// The limit.
        max: usize,
        /// The length that was given.
        len: usize,
    },
    /// The value held a character the identifier does not allow.
    #[error("{what} may only contain {allowed}; found {found:?} at position {position}")]
    BadChar {
        /// Which identifier.
        what: &'static str,
        /// A human description of the allowed characters.
        allowed: &'static str,
        /// The first offending character.
        found: char,
        /// Its position (in characters, from 0).
        position: usize,
    },
}

/// Checks length (in characters) and the allowed character set of an identifier.
fn check_chars(
    what: &'static str,
    value: &str,
    max: usize,
    allowed: &'static str,
    ok: impl Fn(char) -> bool,
) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { what });
    }
    let len = value.chars().count();
    if len > max {
        return Err(IdError::TooLong { what, max, len });
    }
    match value.chars().enumerate().find(|(_, c)| !ok(*c)) {
        Some((position, found)) => Err(IdError::BadChar {
            what,
            allowed,
            found,
            position,
        }),
        None => Ok(()),
    }
}

/// Characters allowed in ids that are opaque tokens from another system: anything printable
/// except whitespace, which in practice is always a copy-paste slip.
fn printable_no_space(c: char) -> bool {
    !c.is_control() && !c.is_whitespace()
}

/// Declares a string newtype that can only be built through its parser.
macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $parse:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                let parse: fn(&str) -> Result<(), IdError> = $parse;
                parse(&value)?;
                Ok(Self(value))
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(value: &str) -> Result<Self, Self::Err> {
                Self::try_from(value.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// Our name for one DingTalk app connected to the gateway (a tenant).
    ///
    /// It appears in callback URLs, Redis keys and NATS subjects, so it is restricted to
    /// `[A-Za-z0-9_-]{1,64}`: every such string is a valid single NATS subject token and needs
    /// no escaping anywhere.
    IntegrationId,
    |value| check_chars(
        "integration id",
        value,
        IntegrationId::MAX_LEN,
        "ASCII letters, digits, '_' and '-'",
        |c| c.is_ascii_alphanumeric() || c == '_' || c == '-',
    )
);

impl IntegrationId {
    /// Longest id we accept; keeps subjects and keys short.
    pub const MAX_LEN: usize = 64;
}

string_id!(
    /// The id of an Xpert expert (the agent that answers), as the Xpert API spells it.
    ///
    /// Opaque to us; we only insist on 1..=128 printable characters without whitespace so a
    /// stray space or newline from a form is caught when it is saved, not when a message fails.
    XpertId,
    |value| check_chars(
        "xpert id",
        value,
        XpertId::MAX_LEN,
        "printable characters without whitespace",
        printable_no_space,
    )
);

impl XpertId {
    /// Longest expert id we accept.
    pub const MAX_LEN: usize = 128;
}

string_id!(
    /// The id of an Xpert conversation thread a DingTalk conversation is bound to.
    ///
    /// Opaque; 1..=256 printable characters without whitespace.
    ThreadId,
    |value| check_chars(
        "thread id",
        value,
        ThreadId::MAX_LEN,
        "printable characters without whitespace",
        printable_no_space,
    )
);

impl ThreadId {
    /// Longest thread id we accept.
    pub const MAX_LEN: usize = 256;
}

/// The language the bot answers in when the user's own language is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Language {
    /// Simplified Chinese, DingTalk's home audience.
    #[default]
    #[serde(rename = "zh-Hans")]
    ZhHans,
    /// English.
    #[serde(rename = "en")]
    En,
}

impl Language {
    /// The spelling used in the admin API and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ZhHans => "zh-Hans",
            Self::En => "en",
        }
    }
}

impl FromStr for Language {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "zh-Hans" => Ok(Self::ZhHans),
            "en" => Ok(Self::En),
            other => Err(format!("must be \"zh-Hans\" or \"en\", got {other:?}")),
        }
    }
}

/// How DingTalk delivers robot messages for an integration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionMode {
    /// DingTalk POSTs callbacks to the ingress service.
    #[default]
    Http,
    /// The gateway holds a Stream-mode WebSocket open to DingTalk.
    Stream,
}

impl ConnectionMode {
    /// The spelling used in the admin API and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Stream => "stream",
        }
    }
}

impl FromStr for ConnectionMode {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "http" => Ok(Self::Http),
            "stream" => Ok(Self::Stream),
            other => Err(format!("must be \"http\" or \"stream\", got {other:?}")),
        }
    }
}

/// Requests per second the gateway may send to each DingTalk API on behalf of one integration.
///
/// DingTalk throttles per app and per API; the notifier's rate limiter spends this budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct QpsLimit(u32);

impl QpsLimit {
    /// Smallest budget: one request per second.
    pub const MIN: u32 = 1;
    /// Largest budget we accept; far above any DingTalk quota, so it only catches typos.
    pub const MAX: u32 = 10_000;
    /// The budget when none is configured (DingTalk's documented low end per API).
    pub const DEFAULT: QpsLimit = QpsLimit(20);

    /// Parses a budget, accepting only `MIN..=MAX`.
    pub fn new(value: i64) -> Result<Self, String> {
        match u32::try_from(value) {
            Ok(v) if (Self::MIN..=Self::MAX).contains(&v) => Ok(Self(v)),
            _ => Err(format!(
                "must be between {} and {}, got {value}",
                Self::MIN,
                Self::MAX
            )),
        }
    }

    /// The budget in requests per second.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for QpsLimit {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl TryFrom<u32> for QpsLimit {
    type Error = String;

    fn try_from(value: u32) -> Result<Self, Self::Error> {
        Self::new(i64::from(value))
    }
}

impl From<QpsLimit> for u32 {
    fn from(value: QpsLimit) -> Self {
        value.0
    }
}

/// One problem with one field of an [`IntegrationSpec`].
///
/// The admin API answers 422 with the whole list so the operator can fix every field in one go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field's name as spelled in the admin API JSON (snake_case).
    pub field: &'static str,
    /// What was wrong and what is allowed.
    pub message: String,
}

impl FieldError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// An integration as the admin API sends it, before validation.
///
/// Deliberately loose (plain strings, optional everything) so that one bad field does not hide
/// the others behind a deserialization error: [`IntegrationSpec::into_integration`] reports
/// every problem at once. Field names are snake_case, mirroring the Xpert DingTalk plugin.
/// Unknown fields are rejected so a typo such as `client_secert` is not silently dropped.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrationSpec {
    /// Our id for the integration; see [`IntegrationId`].
    #[serde(default)]
    pub id: String,
    /// Optional display name for humans.
    #[serde(default)]
    pub name: Option<String>,
    /// The DingTalk app's AppKey (a.k.a. client id). Required.
    #[serde(default)]
    pub client_id: String,
    /// The DingTalk app's AppSecret. Required.
    #[serde(default)]
    pub client_secret: Secret,
    /// Whether DingTalk calls us over HTTP for this app (default true).
    #[serde(default)]
    pub http_callback_enabled: Option<bool>,
    /// The callback "Token" from the DingTalk console, used to sign callbacks.
    #[serde(default)]
    pub callback_token: Option<Secret>,
    /// The callback "aes_key" from the DingTalk console: 43 base64 characters.
    #[serde(default)]
    pub callback_aes_key: Option<Secret>,
    /// The robot code; DingTalk uses the AppKey for an internal app's robot, so it defaults to
    /// `client_id`.
    #[serde(default)]
    pub robot_code: Option<String>,
    /// The expert that answers when no trigger binding exists; absent means no fallback.
    #[serde(default)]
    pub xpert_id: Option<String>,
    /// `zh-Hans` (default) or `en`.
    #[serde(default)]
    pub preferred_language: Option<String>,
    /// `http` (default) or `stream`.
    #[serde(default)]
    pub connection_mode: Option<String>,
    /// DingTalk API budget per API in requests per second, 1..=10000 (default 20).
    #[serde(default)]
    pub qps_limit: Option<i64>,
    /// Custom group robots ("webhook" recipients) secured with a signature ("加签"), and the
    /// secret each one signs with (PROTOCOL §4.9). A robot not listed is called unsigned.
    #[serde(default)]
    pub custom_robots: Option<Vec<CustomRobotSpec>>,
}

/// A custom group robot's signing secret, as the admin API sends it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomRobotSpec {
    /// The robot's `access_token` (the `webhook` recipient's `id`).
    pub access_token: Secret,
    /// Its signing secret (`SEC…` in the DingTalk client).
    pub secret: Secret,
}

/// Most custom robots one integration signs for.
pub const CUSTOM_ROBOTS_MAX: usize = 100;
/// Longest custom robot access token we accept (DingTalk's are 64 hex characters).
const ROBOT_TOKEN_MAX_LEN: usize = 256;

/// Length of the console's callback AES key (PROTOCOL §1.3: 43 chars decode to 32 bytes).
pub const CALLBACK_AES_KEY_LEN: usize = 43;
/// Longest display name we accept.
const NAME_MAX_LEN: usize = 128;
/// Longest AppKey / robot code we accept (real ones are about 20 characters).
const APP_ID_MAX_LEN: usize = 128;

impl IntegrationSpec {
    /// Validates every field and builds the [`Integration`], stamped `created_at = updated_at =
    /// now`, or returns every problem found (never just the first).
    pub fn into_integration(self, now: OffsetDateTime) -> Result<Integration, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut field = |name: &'static str, result: Result<(), String>| {
            if let Err(message) = result {
                errors.push(FieldError::new(name, message));
            }
        };

        let id = IntegrationId::try_from(self.id.clone());
        field("id", id.as_ref().map(drop).map_err(id_message));

        if let Some(name) = &self.name {
            field("name", check_name(name));
        }
        field("client_id", check_app_id(&self.client_id, true));
        field("client_secret", check_secret(Some(&self.client_secret)));

        let language = self
            .preferred_language
            .as_deref()
            .map(Language::from_str)
            .transpose();
        field("preferred_language", problem(&language));

        let mode = self
            .connection_mode
            .as_deref()
            .map(ConnectionMode::from_str)
            .transpose();
        field("connection_mode", problem(&mode));

        let http_callback_enabled = self.http_callback_enabled.unwrap_or(true);
        // Callbacks cannot be verified without the token and key; in stream mode or with HTTP
        // callbacks off they are optional, but still checked when given.
        let callbacks_needed =
            http_callback_enabled && matches!(mode, Ok(None | Some(ConnectionMode::Http)));
        let needed = |value: Option<&Secret>| match value {
            None if callbacks_needed => Err(
                "is required when connection_mode is \"http\" and http_callback_enabled is true"
                    .to_owned(),
            ),
            None => Ok(()),
            Some(secret) => check_secret(Some(secret)),
        };
        field("callback_token", needed(self.callback_token.as_ref()));
        field(
            "callback_aes_key",
            needed(self.callback_aes_key.as_ref()).and_then(|()| {
                self.callback_aes_key
                    .as_ref()
                    .map_or(Ok(()), check_callback_aes_key)
            }),
        );

        if let Some(robot_code) = &self.robot_code {
            field("robot_code", check_app_id(robot_code, false));
        }
        let xpert_id = self
            .xpert_id
            .clone()
            .map(XpertId::try_from)
            .transpose()
            .map_err(|e| id_message(&e));
        field("xpert_id", problem(&xpert_id));

        let qps_limit = self.qps_limit.map(QpsLimit::new).transpose();
        field("qps_limit", problem(&qps_limit));

        let custom_robots = self.custom_robots.unwrap_or_default();
        field("custom_robots", check_custom_robots(&custom_robots));

        match (id, language, mode, xpert_id, qps_limit) {
            (Ok(id), Ok(language), Ok(mode), Ok(xpert_id), Ok(qps_limit)) if errors.is_empty() => {
                Ok(Integration {
                    id,
                    name: self.name,
                    client_id: self.client_id,
                    client_secret: self.client_secret,
                    http_callback_enabled,
                    callback_token: self.callback_token,
                    callback_aes_key: self.callback_aes_key,
                    robot_code: self.robot_code,
                    xpert_id,
                    preferred_language: language.unwrap_or_default(),
                    connection_mode: mode.unwrap_or_default(),
                    qps_limit: qps_limit.unwrap_or_default(),
                    custom_robots,
                    created_at: now,
                    updated_at: now,
                })
            }
            _ => Err(errors),
        }
    }
}

/// The error of a parsed field, if any, without consuming the parsed value.
fn problem<T>(result: &Result<T, String>) -> Result<(), String> {
    result.as_ref().map(drop).map_err(Clone::clone)
}

/// Field messages name the field already, so drop the "integration id must…" subject.
fn id_message(error: &IdError) -> String {
    match *error {
        IdError::Empty { .. } => "is required".to_owned(),
        IdError::TooLong { max, len, .. } => {
            format!("must be at most {max} characters, got {len}")
        }
        IdError::BadChar {
            allowed,
            found,
            position,
            ..
        } => format!("may only contain {allowed}; found {found:?} at position {position}"),
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let len = name.chars().count();
    if name.trim().is_empty() {
        Err("must not be blank; omit the field for no name".to_owned())
    } else if len > NAME_MAX_LEN {
        Err(format!(
            "must be at most {NAME_MAX_LEN} characters, got {len}"
        ))
    } else if name.chars().any(char::is_control) {
        Err("must not contain control characters".to_owned())
    } else {
        Ok(())
    }
}

fn check_app_id(value: &str, required: bool) -> Result<(), String> {
    if value.is_empty() {
        return Err(if required {
            "is required".to_owned()
        } else {
            "must not be empty; omit the field to use client_id".to_owned()
        });
    }
    check_chars(
        "",
        value,
        APP_ID_MAX_LEN,
        "printable characters without whitespace",
        printable_no_space,
    )
    .map_err(|e| id_message(&e))
}

fn check_secret(value: Option<&Secret>) -> Result<(), String> {
    match value.map(Secret::expose) {
        None | Some("") => Err("is required".to_owned()),
        Some(s) if s.trim() != s => {
            Err("must not start or end with whitespace (a copy-paste slip?)".to_owned())
        }
        Some(_) => Ok(()),
    }
}

/// Each robot has a token and a secret, no token twice; the messages never echo either.
fn check_custom_robots(robots: &[CustomRobotSpec]) -> Result<(), String> {
    if robots.len() > CUSTOM_ROBOTS_MAX {
        return Err(format!(
            "may list at most {CUSTOM_ROBOTS_MAX} robots, got {}",
            robots.len()
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (index, robot) in robots.iter().enumerate() {
        let token = robot.access_token.expose();
        if token.is_empty() {
            return Err(format!("[{index}].access_token is required"));
        }
        if token.chars().count() > ROBOT_TOKEN_MAX_LEN
            || !token.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(format!(
                "[{index}].access_token must be the access_token of the robot's webhook URL: at most {ROBOT_TOKEN_MAX_LEN} printable ASCII characters without whitespace"
            ));
        }
        if !seen.insert(token) {
            return Err(format!(
                "[{index}].access_token is listed twice; give each robot once"
            ));
        }
        check_secret(Some(&robot.secret)).map_err(|m| format!("[{index}].secret {m}"))?;
    }
    Ok(())
}

/// The console's key is 43 characters of the standard base64 alphabet (no padding); the
/// message never echoes the key itself.
fn check_callback_aes_key(key: &Secret) -> Result<(), String> {
    let key = key.expose();
    let len = key.chars().count();
    if len != CALLBACK_AES_KEY_LEN {
        return Err(format!(
            "must be exactly {CALLBACK_AES_KEY_LEN} characters (as shown in the DingTalk console), got {len}"
        ));
    }
    if let Some(position) = key
        .chars()
        .position(|c| !(c.is_ascii_alphanumeric() || c == '+' || c == '/'))
    {
        return Err(format!(
            "must use only the base64 alphabet (A-Z, a-z, 0-9, '+', '/'); the character at position {position} is not"
        ));
    }
    Ok(())
}

/// A validated integration: one DingTalk app and how the gateway talks to it.
///
/// Only [`IntegrationSpec::into_integration`] builds one, so every value here satisfies the
/// rules listed there. Secrets are [`Secret`]s; `Debug` never shows them and the type is not
/// `Serialize` — use [`Integration::masked`] for display.
#[derive(Debug, Clone, PartialEq)]
pub struct Integration {
    id: IntegrationId,
    name: Option<String>,
    client_id: String,
    client_secret: Secret,
    http_callback_enabled: bool,
    callback_token: Option<Secret>,
    callback_aes_key: Option<Secret>,
    robot_code: Option<String>,
    xpert_id: Option<XpertId>,
    preferred_language: Language,
    connection_mode: ConnectionMode,
    qps_limit: QpsLimit,
    custom_robots: Vec<CustomRobotSpec>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl Integration {
    /// Our id for this integration.
    pub fn id(&self) -> &IntegrationId {
        &self.id
    }

    /// Optional display name.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The app's AppKey, used to fetch access tokens.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The app's AppSecret, used to fetch access tokens.
    pub fn client_secret(&self) -> &Secret {
        &self.client_secret
    }

    /// Whether DingTalk calls us over HTTP for this app.
    pub fn http_callback_enabled(&self) -> bool {
        self.http_callback_enabled
    }

    /// Token used to check callback signatures (always present when HTTP callbacks are on).
    pub fn callback_token(&self) -> Option<&Secret> {
        self.callback_token.as_ref()
    }

    /// The console's 43-character callback AES key (always present when HTTP callbacks are on).
    pub fn callback_aes_key(&self) -> Option<&Secret> {
        self.callback_aes_key.as_ref()
    }

    /// The robot code for send APIs: the configured one, else the AppKey (PROTOCOL §5).
    pub fn robot_code(&self) -> &str {
        self.robot_code.as_deref().unwrap_or(&self.client_id)
    }

    /// The fallback expert, if any.
    pub fn xpert_id(&self) -> Option<&XpertId> {
        self.xpert_id.as_ref()
    }

    /// Language for answers when the user's is unknown.
    pub fn preferred_language(&self) -> Language {
        self.preferred_language
    }

    /// How DingTalk delivers messages for this app.
    pub fn connection_mode(&self) -> ConnectionMode {
        self.connection_mode
    }

    /// DingTalk API budget per API.
    pub fn qps_limit(&self) -> QpsLimit {
        self.qps_limit
    }

    /// The signing secret of the custom robot with this access token, when it is listed.
    pub fn custom_robot_secret(&self, access_token: &str) -> Option<&Secret> {
        self.custom_robots
            .iter()
            .find(|robot| robot.access_token.expose() == access_token)
            .map(|robot| &robot.secret)
    }

    /// When the integration was first stored.
    pub fn created_at(&self) -> OffsetDateTime {
        self.created_at
    }

    /// When the integration was last stored.
    pub fn updated_at(&self) -> OffsetDateTime {
        self.updated_at
    }

    /// The spec this integration was built from; storage keeps it in this shape so that
    /// reading goes through the same validation as writing.
    pub fn to_spec(&self) -> IntegrationSpec {
        IntegrationSpec {
            id: self.id.to_string(),
            name: self.name.clone(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            http_callback_enabled: Some(self.http_callback_enabled),
            callback_token: self.callback_token.clone(),
            callback_aes_key: self.callback_aes_key.clone(),
            robot_code: self.robot_code.clone(),
            xpert_id: self.xpert_id.as_ref().map(XpertId::to_string),
            preferred_language: Some(self.preferred_language.as_str().to_owned()),
            connection_mode: Some(self.connection_mode.as_str().to_owned()),
            qps_limit: Some(i64::from(self.qps_limit.get())),
            custom_robots: (!self.custom_robots.is_empty()).then(|| self.custom_robots.clone()),
        }
    }

    /// Keeps the first-stored time when an integration is replaced.
    pub(crate) fn with_created_at(mut self, created_at: OffsetDateTime) -> Self {
        self.created_at = created_at;
        self
    }

    /// Restores the stored timestamps after re-validating a stored record.
    pub(crate) fn with_timestamps(
        mut self,
        created_at: OffsetDateTime,
        updated_at: OffsetDateTime,
    ) -> Self {
        self.created_at = created_at;
        self.updated_at = updated_at;
        self
    }

    /// A view safe to show in the admin API, logs or a CLI: secrets are masked.
    pub fn masked(&self) -> MaskedIntegration {
        MaskedIntegration {
            id: self.id.clone(),
            name: self.name.clone(),
            client_id: self.client_id.clone(),
            client_secret: mask(&self.client_secret),
            http_callback_enabled: self.http_callback_enabled,
            callback_token: self.callback_token.as_ref().map(mask),
            callback_aes_key: self.callback_aes_key.as_ref().map(mask),
            robot_code: self.robot_code().to_owned(),
            xpert_id: self.xpert_id.clone(),
            preferred_language: self.preferred_language,
            connection_mode: self.connection_mode,
            qps_limit: self.qps_limit,
            custom_robots: self
                .custom_robots
                .iter()
                .map(|robot| MaskedCustomRobot {
                    access_token: mask(&robot.access_token),
                    secret: mask(&robot.secret),
                })
                .collect(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// Secrets at least this long show their first [`MASK_PREFIX`] characters, which is enough to
/// tell two credentials apart without weakening them meaningfully; shorter ones show nothing.
const MASK_MIN_LEN: usize = 16;
/// How many leading characters of a long secret the masked view shows.
const MASK_PREFIX: usize = 4;

/// Masks a secret for display: `"abcd***"` for long secrets, `"***"` otherwise.
pub fn mask(secret: &Secret) -> String {
    let value = secret.expose();
    if value.chars().count() >= MASK_MIN_LEN {
        let prefix: String = value.chars().take(MASK_PREFIX).collect();
        format!("{prefix}***")
    } else {
        "***".to_owned()
    }
}

/// An [`Integration`] for display: every secret replaced by [`mask`], `robot_code` resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MaskedIntegration {
    /// See [`Integration::id`].
    pub id: IntegrationId,
    /// See [`Integration::name`].
    pub name: Option<String>,
    /// See [`Integration::client_id`].
    pub client_id: String,
    /// Masked AppSecret.
    pub client_secret: String,
    /// See [`Integration::http_callback_enabled`].
    pub http_callback_enabled: bool,
    /// Masked callback token.
    pub callback_token: Option<String>,
    /// Masked callback AES key.
    pub callback_aes_key: Option<String>,
    /// The effective robot code.
    pub robot_code: String,
    /// See [`Integration::xpert_id`].
    pub xpert_id: Option<XpertId>,
    /// See [`Integration::preferred_language`].
    pub preferred_language: Language,
    /// See [`Integration::connection_mode`].
    pub connection_mode: ConnectionMode,
    /// See [`Integration::qps_limit`].
    pub qps_limit: QpsLimit,
    /// The custom robots it signs for, token and secret masked.
    pub custom_robots: Vec<MaskedCustomRobot>,
    /// See [`Integration::created_at`].
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// See [`Integration::updated_at`].
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A custom robot for display: both values masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MaskedCustomRobot {
    /// Masked access token.
    pub access_token: String,
    /// Masked signing secret.
    pub secret: String,
}

/// Which DingTalk conversation, with which sender, on which integration: the unit a thread is
/// bound to (one thread per person per chat, so group members do not share context).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConversationKey {
    integration: IntegrationId,
    conversation: String,
    sender: String,
}

impl ConversationKey {
    /// Longest conversation or sender id we accept (DingTalk's are well under 100).
    pub const PART_MAX_LEN: usize = 256;

    /// Builds a key from DingTalk's `conversationId` and `senderStaffId`/`senderId`.
    ///
    /// Both are opaque and may contain `$`, `:`, `=` or `+`; they only need to be non-empty,
    /// at most 256 characters and free of control characters and whitespace.
    pub fn new(
        integration: IntegrationId,
        conversation: impl Into<String>,
        sender: impl Into<String>,
    ) -> Result<Self, IdError> {
        let conversation = conversation.into();
        let sender = sender.into();
        let allowed = "printable characters without whitespace";
        check_chars(
            "conversation id",
            &conversation,
            Self::PART_MAX_LEN,
            allowed,
            printable_no_space,
        )?;
        check_chars(
            "sender id",
            &sender,
            Self::PART_MAX_LEN,
            allowed,
            printable_no_space,
        )?;
        Ok(Self {
            integration,
            conversation,
            sender,
        })
    }

    /// The integration the conversation belongs to.
    pub fn integration(&self) -> &IntegrationId {
        &self.integration
    }

    /// DingTalk's conversation id.
    pub fn conversation(&self) -> &str {
        &self.conversation
    }

    /// DingTalk's sender id.
    pub fn sender(&self) -> &str {
        &self.sender
    }

    /// An unambiguous, reversible encoding for Redis key names:
    /// `<integration>:<byte length of conversation>:<conversation>:<sender>`.
    ///
    /// The integration id cannot contain `:`, and the length prefix says exactly where the
    /// conversation id ends, so ids containing `:` (or anything else) can never make two
    /// different keys collide. It stays readable in `redis-cli`.
    pub fn encoded(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.integration,
            self.conversation.len(),
            self.conversation,
            self.sender
        )
    }
}

impl fmt::Display for ConversationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.integration, self.conversation, self.sender
        )
    }
}

/// Which Xpert thread a conversation currently talks to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationBinding {
    /// The expert answering in this conversation.
    pub xpert_id: XpertId,
    /// The Xpert thread holding the conversation's context.
    pub thread_id: ThreadId,
    /// The conversation's generation when the binding was made (see
    /// [`crate::registry::Registry::generation`]).
    pub generation: u64,
    /// When the binding was made.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A question a conversation's expert asked the user and waits on (human in the loop): the
/// user's next message answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingQuestion {
    /// The thread that waits.
    pub thread_id: ThreadId,
    /// The interrupts the user was shown, as fingerprints (their id and a hash of what they
    /// ask: LangGraph may give two questions of one task the same id). A reply answers these,
    /// not others.
    #[serde(default)]
    pub interrupts: Vec<String>,
    /// The event whose answer showed them.
    pub asked_by: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

    fn valid_spec() -> IntegrationSpec {
        IntegrationSpec {
            id: "acme-prod_1".into(),
            client_id: "dingappkey".into(),
            client_secret: "app-secret-0123456789".into(),
            callback_token: Some("tok".into()),
            callback_aes_key: Some(AES_KEY.into()),
            ..IntegrationSpec::default()
        }
    }

    /// Reverses [`ConversationKey::encoded`], proving the encoding unambiguous.
    fn decode(encoded: &str) -> Option<ConversationKey> {
        let (integration, rest) = encoded.split_once(':')?;
        let (len, rest) = rest.split_once(':')?;
        let len: usize = len.parse().ok()?;
        let conversation = rest.get(..len)?;
        let sender = rest.get(len..)?.strip_prefix(':')?;
        ConversationKey::new(integration.parse().ok()?, conversation, sender).ok()
    }

    fn errors_of(spec: IntegrationSpec) -> Vec<FieldError> {
        spec.into_integration(OffsetDateTime::UNIX_EPOCH)
            .expect_err("spec should be rejected")
    }

    fn fields(errors: &[FieldError]) -> Vec<&'static str> {
        errors.iter().map(|e| e.field).collect()
    }

    #[test]
    fn integration_id_accepts_subject_safe_tokens_only() {
        assert_eq!("a".parse::<IntegrationId>().unwrap().as_str(), "a");
        assert!("Acme_prod-01".parse::<IntegrationId>().is_ok());
        assert!("x".repeat(64).parse::<IntegrationId>().is_ok());
        assert_eq!(
            "".parse::<IntegrationId>(),
            Err(IdError::Empty {
                what: "integration id"
            })
        );
        assert!(matches!(
            "x".repeat(65).parse::<IntegrationId>(),
            Err(IdError::TooLong { len: 65, .. })
        ));
        for bad in ["a.b", "a b", "a*", "a>", "ä", "a:b"] {
            assert!(bad.parse::<IntegrationId>().is_err(), "{bad} accepted");
        }
        let err = "ab.c".parse::<IntegrationId>().unwrap_err().to_string();
        assert_eq!(
            err,
            "integration id may only contain ASCII letters, digits, '_' and '-'; found '.' at position 2"
        );
    }

    #[test]
    fn integration_id_validates_when_deserialized() {
        let id: IntegrationId = serde_json::from_str("\"acme\"").unwrap();
        assert_eq!(id.to_string(), "acme");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"acme\"");
        let err = serde_json::from_str::<IntegrationId>("\"a.b\"").unwrap_err();
        assert!(err.to_string().contains("may only contain"), "{err}");
        assert!(IntegrationId::try_from(String::from("ok")).is_ok());
    }

    #[test]
    fn minimal_spec_gets_documented_defaults() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let integration = valid_spec().into_integration(now).unwrap();
        assert_eq!(integration.robot_code(), "dingappkey");
        assert!(integration.http_callback_enabled());
        assert_eq!(integration.preferred_language(), Language::ZhHans);
        assert_eq!(integration.connection_mode(), ConnectionMode::Http);
        assert_eq!(integration.qps_limit().get(), 20);
        assert_eq!(integration.xpert_id(), None);
        assert_eq!(integration.created_at(), now);
        assert_eq!(integration.updated_at(), now);
    }

    #[test]
    fn explicit_robot_code_wins_over_client_id() {
        let spec = IntegrationSpec {
            robot_code: Some("dingrobot".into()),
            ..valid_spec()
        };
        let integration = spec.into_integration(OffsetDateTime::UNIX_EPOCH).unwrap();
        assert_eq!(integration.robot_code(), "dingrobot");
    }

    #[test]
    fn spec_round_trips_through_to_spec() {
        let spec = IntegrationSpec {
            name: Some("Acme".into()),
            xpert_id: Some("xpert-1".into()),
            preferred_language: Some("en".into()),
            connection_mode: Some("stream".into()),
            qps_limit: Some(40),
            robot_code: Some("dingrobot".into()),
            ..valid_spec()
        };
        let integration = spec.into_integration(OffsetDateTime::UNIX_EPOCH).unwrap();
        let again = integration
            .to_spec()
            .into_integration(OffsetDateTime::UNIX_EPOCH)
            .unwrap();
        assert_eq!(integration, again);
    }

    #[test]
    fn empty_spec_reports_every_required_field_at_once() {
        let errors = errors_of(IntegrationSpec::default());
        assert_eq!(
            fields(&errors),
            [
                "id",
                "client_id",
                "client_secret",
                "callback_token",
                "callback_aes_key"
            ]
        );
        assert!(errors.iter().all(|e| !e.message.is_empty()));
    }

    #[test]
    fn every_bad_field_is_reported_together() {
        let spec = IntegrationSpec {
            id: "bad id".into(),
            name: Some(" ".into()),
            client_id: String::new(),
            client_secret: Secret::default(),
            http_callback_enabled: Some(true),
            callback_token: Some(" tok".into()),
            callback_aes_key: Some("short".into()),
            robot_code: Some(String::new()),
            xpert_id: Some(String::new()),
            preferred_language: Some("fr".into()),
            connection_mode: Some("websocket".into()),
            qps_limit: Some(0),
            custom_robots: Some(vec![CustomRobotSpec::default()]),
        };
        let errors = errors_of(spec);
        assert_eq!(
            fields(&errors),
            [
                "id",
                "name",
                "client_id",
                "client_secret",
                "preferred_language",
                "connection_mode",
                "callback_token",
                "callback_aes_key",
                "robot_code",
                "xpert_id",
                "qps_limit",
                "custom_robots"
            ]
        );
        let message = |field| {
            errors
                .iter()
                .find(|e| e.field == field)
                .map(|e| e.message.clone())
                .unwrap()
        };
        assert_eq!(
            message("preferred_language"),
            "must be \"zh-Hans\" or \"en\", got \"fr\""
        );
        assert_eq!(
            message("connection_mode"),
            "must be \"http\" or \"stream\", got \"websocket\""
        );
        assert_eq!(message("qps_limit"), "must be between 1 and 10000, got 0");
        assert!(message("callback_aes_key").contains("exactly 43 characters"));
    }

    #[test]
    fn aes_key_must_be_43_base64_characters() {
        let with_key = |key: &str| IntegrationSpec {
            callback_aes_key: Some(key.into()),
            ..valid_spec()
        };
        let errors = errors_of(with_key(&AES_KEY[..42]));
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            "callback_aes_key: must be exactly 43 characters (as shown in the DingTalk console), got 42"
        );
        let mut bad_alphabet = AES_KEY.to_owned();
        bad_alphabet.replace_range(5..6, "-");
        let errors = errors_of(with_key(&bad_alphabet));
        assert_eq!(errors[0].field, "callback_aes_key");
        assert!(errors[0].message.contains("position 5"));
        assert!(!errors[0].message.contains(&bad_alphabet));
        assert!(with_key("+/+/abcdefghijklmnopqrstuvwxyz0123456789ABC")
            .into_integration(OffsetDateTime::UNIX_EPOCH)
            .is_ok());
    }

    #[test]
    fn callback_secrets_are_optional_without_http_callbacks() {
        let bare = || IntegrationSpec {
            callback_token: None,
            callback_aes_key: None,
            ..valid_spec()
        };
        let stream = IntegrationSpec {
            connection_mode: Some("stream".into()),
            ..bare()
        };
        assert!(stream.into_integration(OffsetDateTime::UNIX_EPOCH).is_ok());
        let disabled = IntegrationSpec {
            http_callback_enabled: Some(false),
            ..bare()
        };
        assert!(disabled
            .into_integration(OffsetDateTime::UNIX_EPOCH)
            .is_ok());
        let errors = errors_of(bare());
        assert_eq!(fields(&errors), ["callback_token", "callback_aes_key"]);
        assert!(errors[0].message.contains("connection_mode is \"http\""));
        // Given anyway, they must still be well-formed.
        let stream_bad_key = IntegrationSpec {
            connection_mode: Some("stream".into()),
            callback_aes_key: Some("nope".into()),
            ..valid_spec()
        };
        assert_eq!(fields(&errors_of(stream_bad_key)), ["callback_aes_key"]);
    }

    #[test]
    fn custom_robots_need_a_token_and_a_secret_each_and_no_token_twice() {
        let robot = |token: &str, secret: &str| CustomRobotSpec {
            access_token: token.into(),
            secret: secret.into(),
        };
        let with = |robots: Vec<CustomRobotSpec>| IntegrationSpec {
            custom_robots: Some(robots),
            ..valid_spec()
        };
        let ok = with(vec![robot("tok-1", "SEC1"), robot("tok-2", "SEC2")])
            .into_integration(OffsetDateTime::UNIX_EPOCH)
            .unwrap();
        assert_eq!(ok.custom_robot_secret("tok-2").unwrap().expose(), "SEC2");
        for (robots, says) in [
            (vec![robot("", "SEC1")], "[0].access_token is required"),
            (vec![robot("tok 1", "SEC1")], "printable ASCII"),
            (vec![robot("tok-1", "")], "[0].secret is required"),
            (vec![robot("tok-1", " SEC1")], "[0].secret must not start"),
            (
                vec![robot("tok-1", "SEC1"), robot("tok-1", "SEC2")],
                "[1].access_token is listed twice",
            ),
            (
                (0..=CUSTOM_ROBOTS_MAX)
                    .map(|i| robot(&format!("t{i}"), "S"))
                    .collect(),
                "at most 100",
            ),
        ] {
            let errors = errors_of(with(robots));
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_eq!(errors[0].field, "custom_robots");
            assert!(errors[0].message.contains(says), "{}", errors[0].message);
            assert!(!errors[0].message.contains("SEC"), "{}", errors[0].message);
        }
    }

    #[test]
    fn qps_limit_bounds_are_inclusive() {
        for (qps, ok) in [
            (1, true),
            (10_000, true),
            (0, false),
            (10_001, false),
            (-5, false),
        ] {
            let spec = IntegrationSpec {
                qps_limit: Some(qps),
                ..valid_spec()
            };
            assert_eq!(
                spec.into_integration(OffsetDateTime::UNIX_EPOCH).is_ok(),
                ok,
                "{qps}"
            );
        }
    }

    #[test]
    fn xpert_id_is_checked_for_length_and_whitespace() {
        let with = |id: String| IntegrationSpec {
            xpert_id: Some(id),
            ..valid_spec()
        };
        assert!(with("x".repeat(128))
            .into_integration(OffsetDateTime::UNIX_EPOCH)
            .is_ok());
        for bad in [String::new(), "x".repeat(129), "a b".into()] {
            assert_eq!(fields(&errors_of(with(bad))), ["xpert_id"]);
        }
    }

    #[test]
    fn spec_deserializes_snake_case_and_rejects_unknown_fields() {
        let spec: IntegrationSpec = serde_json::from_value(serde_json::json!({
            "id": "acme",
            "client_id": "k",
            "client_secret": "s",
            "http_callback_enabled": false,
            "preferred_language": "en",
            "connection_mode": "http",
            "qps_limit": 5
        }))
        .unwrap();
        assert_eq!(spec.qps_limit, Some(5));
        assert_eq!(spec.http_callback_enabled, Some(false));
        let err = serde_json::from_value::<IntegrationSpec>(serde_json::json!({
            "id": "acme", "client_secert": "s"
        }))
        .unwrap_err();
        assert!(err.to_string().contains("client_secert"), "{err}");
    }

    #[test]
    fn enums_serialize_exactly_as_documented() {
        assert_eq!(
            serde_json::to_string(&Language::ZhHans).unwrap(),
            "\"zh-Hans\""
        );
        assert_eq!(serde_json::to_string(&Language::En).unwrap(), "\"en\"");
        assert_eq!(
            serde_json::to_string(&ConnectionMode::Stream).unwrap(),
            "\"stream\""
        );
        assert!(serde_json::from_str::<QpsLimit>("0").is_err());
    }

    #[test]
    fn masked_view_never_contains_a_full_secret() {
        let spec = IntegrationSpec {
            client_secret: "abcdefghijklmnopqrstuvwxyz".into(),
            callback_token: Some("short-token".into()),
            ..valid_spec()
        };
        let integration = spec.into_integration(OffsetDateTime::UNIX_EPOCH).unwrap();
        let masked = integration.masked();
        assert_eq!(masked.client_secret, "abcd***");
        assert_eq!(masked.callback_token.as_deref(), Some("***"));
        assert_eq!(masked.callback_aes_key.as_deref(), Some("abcd***"));
        assert_eq!(masked.robot_code, "dingappkey");
        let json = serde_json::to_string(&masked).unwrap();
        for secret in ["abcdefghijklmnopqrstuvwxyz", "short-token", AES_KEY] {
            assert!(!json.contains(secret), "{json}");
        }
        assert!(json.contains("\"created_at\":\"1970-01-01T00:00:00Z\""));
        let debug = format!("{integration:?}");
        assert!(!debug.contains("abcdefghijklmnopqrstuvwxyz"), "{debug}");
        assert!(!debug.contains("short-token"), "{debug}");
    }

    #[test]
    fn conversation_keys_with_separators_never_collide() {
        let id: IntegrationId = "acme".parse().unwrap();
        let a = ConversationKey::new(id.clone(), "cid:a", "b").unwrap();
        let b = ConversationKey::new(id.clone(), "cid", "a:b").unwrap();
        assert_ne!(a.encoded(), b.encoded());
        let tricky = ConversationKey::new(id.clone(), "cid$:LWCP=+/", "$:LWCP_v1:$abc==").unwrap();
        assert_eq!(decode(&tricky.encoded()).as_ref(), Some(&tricky));
        assert_eq!(decode(&a.encoded()).as_ref(), Some(&a));
        assert_eq!(decode("acme:99:short:x"), None);
        assert!(ConversationKey::new(id.clone(), "", "s").is_err());
        assert!(ConversationKey::new(id, "c", "has space").is_err());
    }
}
