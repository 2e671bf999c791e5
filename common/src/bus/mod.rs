//! The public bus contract, version 1: subjects, message types and streams.
//!
//! Other teams publish commands and consume events and results on these subjects, so every
//! type here is documented, versioned (`v`) and backward compatible: readers ignore fields they
//! do not know, writers only ever add optional fields within a version. `docs/bus.md` is the
//! human description and `docs/schema/` the generated JSON Schemas (a test keeps them fresh).

pub mod backlog;
pub mod command;
pub mod event;
pub mod query;
pub mod result;
pub mod schema;
pub mod streams;
pub mod subjects;

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;

use crate::registry::IntegrationId;

/// The header JetStream de-duplicates on; set to the event id or the command id.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// The contract version this build writes and reads.
pub const VERSION: u32 = 1;

/// The `v` field: always `1` in this version. Reading any other value fails with a message that
/// says which version this build understands, instead of misreading a future shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct V1;

impl Serialize for V1 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u32(VERSION)
    }
}

impl<'de> Deserialize<'de> for V1 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let v = u64::deserialize(deserializer)?;
        if v == u64::from(VERSION) {
            Ok(V1)
        } else {
            Err(serde::de::Error::custom(format!(
                "unsupported contract version v={v}; this build reads v={VERSION}"
            )))
        }
    }
}

impl JsonSchema for V1 {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Version".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Contract version; this document describes version 1.",
            "type": "integer",
            "const": VERSION,
        })
    }
}

/// A point in time, written as RFC 3339 (`2026-11-25T15:04:05.123Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub OffsetDateTime);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self(OffsetDateTime::now_utc())
    }

    /// From milliseconds since the Unix epoch, as DingTalk writes times; `None` outside the
    /// years 0000–9999, which RFC 3339 cannot write (so every `Timestamp` serializes).
    pub fn from_unix_millis(ms: i64) -> Option<Self> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .ok()
            .filter(|t| (0..=9999).contains(&t.year()))
            .map(Self)
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(&self) -> i64 {
        (self.0.unix_timestamp_nanos() / 1_000_000) as i64
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self
            .0
            .format(&time::format_description::well_known::Rfc3339)
        {
            Ok(text) => f.write_str(&text),
            Err(_) => write!(f, "{}", self.0),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        time::serde::rfc3339::serialize(&self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        time::serde::rfc3339::deserialize(deserializer).map(Self)
    }
}

impl JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "RFC 3339 date and time.",
            "type": "string",
            "format": "date-time",
        })
    }
}

impl JsonSchema for IntegrationId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IntegrationId".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "An integration (one DingTalk app of a tenant); also a subject token.",
            "type": "string",
            "pattern": "^[A-Za-z0-9_-]{1,64}$",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_times_rfc3339_can_write_become_timestamps() {
        const YEAR_0_START_MS: i64 = -62_167_219_200_000;
        assert!(Timestamp::from_unix_millis(YEAR_0_START_MS - 1).is_none());
        assert!(Timestamp::from_unix_millis(i64::MAX).is_none());
        let earliest = Timestamp::from_unix_millis(YEAR_0_START_MS).unwrap();
        assert_eq!(
            serde_json::to_string(&earliest).unwrap(),
            r#""0000-01-01T00:00:00Z""#
        );
        assert_eq!(
            Timestamp::from_unix_millis(1_700_000_000_000)
                .unwrap()
                .unix_millis(),
            1_700_000_000_000
        );
    }
}

/// Why a bus message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    /// Not JSON, a missing or mistyped field, or an unsupported `v`.
    #[error("malformed {what}: {source}")]
    Malformed {
        /// The message type, e.g. `command`.
        what: &'static str,
        /// The parser's description, with the field path.
        source: serde_json::Error,
    },
    /// Well-formed JSON that breaks a rule of the contract.
    #[error("invalid {what}: {}", problems.join("; "))]
    Invalid {
        /// The message type, e.g. `command`.
        what: &'static str,
        /// Every rule broken, each naming its field.
        problems: Vec<String>,
    },
}

/// Headers a stage sets on a message it parks in the DLQ (`dingtalk.dlq.{stage}.{integration_id}`);
/// the body is the original message, unchanged.
pub mod dlq_headers {
    /// The subject the message was originally published on.
    pub const ORIGINAL_SUBJECT: &str = "Dingtalk-Original-Subject";
    /// Why the stage gave up (a stable code, then a colon and the detail).
    pub const REASON: &str = "Dingtalk-Reason";
    /// How many times the stage tried.
    pub const ATTEMPTS: &str = "Dingtalk-Attempts";
}
