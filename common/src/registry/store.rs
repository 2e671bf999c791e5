//! The Redis side of the registry: key names, the stored record format and the commands.
//!
//! Every command runs through [`Store::run`], which bounds it with the configured timeout and
//! turns failures into [`RegistryError`]s that name the operation (never a value). Writes that
//! other processes cache publish their invalidation inside the same `MULTI`/Lua call, so a
//! write and its notification cannot be separated by a crash between two round trips.

use std::future::Future;
use std::time::Duration;

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::model::{ConversationKey, CustomRobotSpec, Integration, IntegrationId, IntegrationSpec};
use super::secrets::{SealedSecret, SecretsKeys};
use super::RegistryError;

/// Prefix of every key the registry owns.
const PREFIX: &str = "dtg:";
/// Pub/sub channel carrying the id of every integration whose cached data changed.
pub(crate) const INVALIDATE_CHANNEL: &str = "dtg:registry:invalidate";
/// Set of all integration ids, so listing does not need `SCAN`.
pub(crate) const INTEGRATIONS_SET: &str = "dtg:integrations";

pub(crate) fn integration_key(id: &IntegrationId) -> String {
    format!("{PREFIX}integration:{id}")
}

pub(crate) fn trigger_key(id: &IntegrationId) -> String {
    format!("{PREFIX}trigger:{id}")
}

pub(crate) fn binding_key(key: &ConversationKey) -> String {
    format!("{PREFIX}conv:{}", key.encoded())
}

pub(crate) fn generation_key(key: &ConversationKey) -> String {
    format!("{PREFIX}conv-gen:{}", key.encoded())
}

pub(crate) fn waiting_key(key: &ConversationKey) -> String {
    format!("{PREFIX}conv-wait:{}", key.encoded())
}

/// Associated data for a sealed secret: its storage location, so a ciphertext only opens in
/// the field and integration it was written for.
fn aad(id: &str, field: &str) -> Vec<u8> {
    format!("{PREFIX}integration:{id}#{field}").into_bytes()
}

/// An integration as stored at `dtg:integration:<id>` (JSON).
///
/// The same loose shape as [`IntegrationSpec`] plus timestamps, with secrets sealed: reading
/// goes back through the spec's validation, so a hand-edited or outdated record is reported as
/// corrupt instead of producing an `Integration` that breaks its own rules.
#[derive(Debug, Serialize, Deserialize)]
struct IntegrationRecord {
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    client_id: String,
    client_secret: SealedSecret,
    http_callback_enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    callback_token: Option<SealedSecret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    callback_aes_key: Option<SealedSecret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    robot_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    xpert_id: Option<String>,
    preferred_language: String,
    connection_mode: String,
    qps_limit: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    custom_robots: Vec<CustomRobotRecord>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

/// A custom robot's token and signing secret, both sealed (the token alone lets anyone post
/// to the robot's group).
#[derive(Debug, Serialize, Deserialize)]
struct CustomRobotRecord {
    access_token: SealedSecret,
    secret: SealedSecret,
}

/// Just the creation time of a stored record, read when an integration is replaced.
#[derive(Deserialize)]
struct CreatedAt {
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

/// Serializes an integration for storage, sealing its secrets under the current key.
pub(crate) fn encode_integration(
    integration: &Integration,
    keys: &SecretsKeys,
) -> Result<String, RegistryError> {
    let id = integration.id().as_str();
    let seal = |field: &'static str, secret: &crate::secret::Secret| {
        keys.seal(secret, &aad(id, field))
            .map_err(|source| RegistryError::Secrets {
                id: id.to_owned(),
                field,
                source,
            })
    };
    let spec = integration.to_spec();
    let record = IntegrationRecord {
        id: spec.id,
        name: spec.name,
        client_id: spec.client_id,
        client_secret: seal("client_secret", &spec.client_secret)?,
        http_callback_enabled: integration.http_callback_enabled(),
        callback_token: spec
            .callback_token
            .as_ref()
            .map(|s| seal("callback_token", s))
            .transpose()?,
        callback_aes_key: spec
            .callback_aes_key
            .as_ref()
            .map(|s| seal("callback_aes_key", s))
            .transpose()?,
        robot_code: spec.robot_code,
        xpert_id: spec.xpert_id,
        preferred_language: integration.preferred_language().as_str().to_owned(),
        connection_mode: integration.connection_mode().as_str().to_owned(),
        qps_limit: i64::from(integration.qps_limit().get()),
        custom_robots: spec
            .custom_robots
            .unwrap_or_default()
            .iter()
            .map(|robot| {
                Ok(CustomRobotRecord {
                    access_token: seal("custom_robots.access_token", &robot.access_token)?,
                    secret: seal("custom_robots.secret", &robot.secret)?,
                })
            })
            .collect::<Result<_, RegistryError>>()?,
        created_at: integration.created_at(),
        updated_at: integration.updated_at(),
    };
    serde_json::to_string(&record).map_err(|e| RegistryError::Corrupt {
        key: integration_key(integration.id()),
        reason: format!("could not serialize: {e}"),
    })
}

/// What a stored record decoded to.
pub(crate) struct Decoded {
    pub(crate) integration: Integration,
    /// Whether every secret is already sealed the way a fresh write would seal it.
    pub(crate) sealed_with_current_key: bool,
}

/// Parses and validates a stored record found at `key` for integration `expected`.
pub(crate) fn decode_integration(
    expected: &IntegrationId,
    json: &str,
    keys: &SecretsKeys,
) -> Result<Decoded, RegistryError> {
    let key = integration_key(expected);
    let corrupt = |reason: String| RegistryError::Corrupt {
        key: key.clone(),
        reason,
    };
    let record: IntegrationRecord = serde_json::from_str(json)
        .map_err(|e| corrupt(format!("not an integration record: {e}")))?;
    if record.id != expected.as_str() {
        return Err(corrupt(format!(
            "record is for integration {:?}",
            record.id
        )));
    }
    let open = |field: &'static str, sealed: &SealedSecret| {
        keys.open(sealed, &aad(expected.as_str(), field))
            .map_err(|source| RegistryError::Secrets {
                id: expected.to_string(),
                field,
                source,
            })
    };
    let sealed_with_current_key = [
        Some(&record.client_secret),
        record.callback_token.as_ref(),
        record.callback_aes_key.as_ref(),
    ]
    .into_iter()
    .flatten()
    .chain(
        record
            .custom_robots
            .iter()
            .flat_map(|robot| [&robot.access_token, &robot.secret]),
    )
    .all(|sealed| keys.is_current(sealed));
    let custom_robots = record
        .custom_robots
        .iter()
        .map(|robot| {
            Ok(CustomRobotSpec {
                access_token: open("custom_robots.access_token", &robot.access_token)?,
                secret: open("custom_robots.secret", &robot.secret)?,
            })
        })
        .collect::<Result<Vec<_>, RegistryError>>()?;
    let spec = IntegrationSpec {
        id: record.id.clone(),
        name: record.name,
        client_id: record.client_id,
        client_secret: open("client_secret", &record.client_secret)?,
        http_callback_enabled: Some(record.http_callback_enabled),
        callback_token: record
            .callback_token
            .as_ref()
            .map(|s| open("callback_token", s))
            .transpose()?,
        callback_aes_key: record
            .callback_aes_key
            .as_ref()
            .map(|s| open("callback_aes_key", s))
            .transpose()?,
        robot_code: record.robot_code,
        xpert_id: record.xpert_id,
        preferred_language: Some(record.preferred_language),
        connection_mode: Some(record.connection_mode),
        qps_limit: Some(record.qps_limit),
        custom_robots: (!custom_robots.is_empty()).then_some(custom_robots),
    };
    let integration = spec
        .into_integration(record.updated_at)
        .map_err(|errors| {
            let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
            corrupt(format!("fails validation: {}", list.join("; ")))
        })?
        .with_timestamps(record.created_at, record.updated_at);
    Ok(Decoded {
        integration,
        sealed_with_current_key,
    })
}

/// Reads `created_at` from a stored record without opening its secrets (so replacing an
/// integration works even if its old secrets were sealed with a retired key).
pub(crate) fn stored_created_at(json: &str) -> Option<OffsetDateTime> {
    serde_json::from_str::<CreatedAt>(json)
        .ok()
        .map(|r| r.created_at)
}

/// Sets a trigger only if its integration exists, and announces it, atomically.
pub(crate) const SET_TRIGGER_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
";

/// Binds a conversation only if its generation is still the one the caller derived the thread
/// from: returns `{1, generation}` on success, `{0, current generation}` otherwise.
pub(crate) const BIND_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[2]) or '0'
if current ~= ARGV[1] then return {0, current} end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return {1, current}
";

/// Replaces a record only if it is still exactly what re-encryption read.
pub(crate) const REPLACE_IF_UNCHANGED_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
";

/// A Redis connection that reconnects by itself, with a deadline on every call.
#[derive(Clone)]
pub(crate) struct Store {
    conn: ConnectionManager,
    timeout: Duration,
}

impl Store {
    pub(crate) fn new(conn: ConnectionManager, timeout: Duration) -> Self {
        Self { conn, timeout }
    }

    /// Runs one Redis interaction (a command, pipeline or script) under the timeout.
    pub(crate) async fn run<T, F, Fut>(&self, op: &'static str, call: F) -> Result<T, RegistryError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(self.timeout, call(self.conn.clone())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(RegistryError::Redis { op, source }),
            Err(_) => Err(RegistryError::Timeout {
                op,
                timeout: self.timeout,
            }),
        }
    }

    /// Runs a single command.
    pub(crate) async fn query<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        cmd: redis::Cmd,
    ) -> Result<T, RegistryError> {
        self.run(
            op,
            |mut conn| async move { cmd.query_async(&mut conn).await },
        )
        .await
    }

    /// Runs a pipeline (atomic when built with `.atomic()`).
    pub(crate) async fn pipeline<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        pipe: redis::Pipeline,
    ) -> Result<T, RegistryError> {
        self.run(
            op,
            |mut conn| async move { pipe.query_async(&mut conn).await },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::model::IntegrationSpec;
    use crate::registry::secrets::SecretsError;

    const KEY_A: [u8; 32] = [1; 32];
    const KEY_B: [u8; 32] = [2; 32];

    fn integration() -> Integration {
        IntegrationSpec {
            id: "acme".into(),
            name: Some("Acme".into()),
            client_id: "dingappkey".into(),
            client_secret: "client-secret-value".into(),
            callback_token: Some("callback-token-value".into()),
            callback_aes_key: Some("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG".into()),
            xpert_id: Some("xpert-1".into()),
            ..IntegrationSpec::default()
        }
        .into_integration(OffsetDateTime::UNIX_EPOCH)
        .unwrap()
        .with_created_at(OffsetDateTime::UNIX_EPOCH - time::Duration::days(1))
    }

    fn id() -> IntegrationId {
        "acme".parse().unwrap()
    }

    #[test]
    fn encrypted_record_round_trips_without_plaintext_secrets() {
        let keys = SecretsKeys::from_bytes(&KEY_A, None);
        let json = encode_integration(&integration(), &keys).unwrap();
        for secret in [
            "client-secret-value",
            "callback-token-value",
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
        ] {
            assert!(!json.contains(secret), "{json}");
        }
        let decoded = decode_integration(&id(), &json, &keys).unwrap();
        assert_eq!(decoded.integration, integration());
        assert!(decoded.sealed_with_current_key);
    }

    #[test]
    fn plain_record_is_marked_plain() {
        let keys = SecretsKeys::unencrypted();
        let json = encode_integration(&integration(), &keys).unwrap();
        assert!(json.contains(r#""client_secret":{"plain":"client-secret-value"}"#));
        let decoded = decode_integration(&id(), &json, &keys).unwrap();
        assert_eq!(decoded.integration, integration());
        assert!(decoded.sealed_with_current_key);
        let encrypting = SecretsKeys::from_bytes(&KEY_A, None);
        let decoded = decode_integration(&id(), &json, &encrypting).unwrap();
        assert!(
            !decoded.sealed_with_current_key,
            "plain must be re-encrypted"
        );
    }

    #[test]
    fn rotation_reads_with_previous_key_and_reseals_with_current() {
        let json_a =
            encode_integration(&integration(), &SecretsKeys::from_bytes(&KEY_A, None)).unwrap();
        let rotating = SecretsKeys::from_bytes(&KEY_B, Some(&KEY_A));
        let decoded = decode_integration(&id(), &json_a, &rotating).unwrap();
        assert!(!decoded.sealed_with_current_key);
        let json_b = encode_integration(&decoded.integration, &rotating).unwrap();
        let only_b = SecretsKeys::from_bytes(&KEY_B, None);
        let decoded = decode_integration(&id(), &json_b, &only_b).unwrap();
        assert_eq!(decoded.integration, integration());
        assert!(decoded.sealed_with_current_key);
        let err = decode_integration(&id(), &json_a, &only_b).err().unwrap();
        match err {
            RegistryError::Secrets { field, source, .. } => {
                assert_eq!(field, "client_secret");
                assert!(matches!(source, SecretsError::UnknownKeyId { .. }));
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn record_under_the_wrong_key_name_is_corrupt() {
        let keys = SecretsKeys::unencrypted();
        let json = encode_integration(&integration(), &keys).unwrap();
        let other: IntegrationId = "other".parse().unwrap();
        let err = decode_integration(&other, &json, &keys).err().unwrap();
        assert!(
            matches!(&err, RegistryError::Corrupt { key, .. } if key == "dtg:integration:other"),
            "{err}"
        );
        // A ciphertext copied to another integration's record does not open either.
        let sealed = encode_integration(&integration(), &SecretsKeys::from_bytes(&KEY_A, None))
            .unwrap()
            .replace("\"id\":\"acme\"", "\"id\":\"other\"");
        let err = decode_integration(&other, &sealed, &SecretsKeys::from_bytes(&KEY_A, None))
            .err()
            .unwrap();
        assert!(matches!(err, RegistryError::Secrets { .. }), "{err}");
    }

    #[test]
    fn record_breaking_the_rules_is_corrupt_not_loaded() {
        let keys = SecretsKeys::unencrypted();
        let json = encode_integration(&integration(), &keys)
            .unwrap()
            .replace("\"qps_limit\":20", "\"qps_limit\":0");
        let err = decode_integration(&id(), &json, &keys).err().unwrap();
        assert_eq!(
            err.to_string(),
            "stored value at dtg:integration:acme is corrupt: fails validation: qps_limit: must be between 1 and 10000, got 0"
        );
        assert_eq!(
            stored_created_at(&json),
            Some(OffsetDateTime::UNIX_EPOCH - time::Duration::days(1))
        );
    }

    #[test]
    fn key_names_follow_the_documented_layout() {
        let key = ConversationKey::new(id(), "cid:x==", "$:LWCP_v1:$u").unwrap();
        assert_eq!(integration_key(&id()), "dtg:integration:acme");
        assert_eq!(trigger_key(&id()), "dtg:trigger:acme");
        assert_eq!(binding_key(&key), "dtg:conv:acme:7:cid:x==:$:LWCP_v1:$u");
        assert_eq!(
            generation_key(&key),
            "dtg:conv-gen:acme:7:cid:x==:$:LWCP_v1:$u"
        );
        assert_eq!(
            waiting_key(&key),
            "dtg:conv-wait:acme:7:cid:x==:$:LWCP_v1:$u"
        );
    }
}
