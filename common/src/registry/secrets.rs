//! Encryption of integration secrets at rest (AES-256-GCM), with key rotation.
//!
//! Redis is often shared, backed up and readable by more people than the gateway's
//! configuration, so when `SECRETS_KEY` is set every secret field of an integration is stored
//! as `{"kid": "<key id>", "nonce": "<base64>", "ct": "<base64>"}` instead of its value:
//!
//! * a fresh random 96-bit nonce per secret (GCM must never reuse a nonce under one key);
//! * the key id is the first 8 hex characters of SHA-256 of the key bytes: it tells which key
//!   sealed a value without revealing anything usable about the key;
//! * the associated data binds each ciphertext to its integration and field, so a ciphertext
//!   copied into another field or integration fails to open instead of being used there.
//!
//! Rotation: set the new key as `SECRETS_KEY` and the old one as `SECRETS_KEY_PREVIOUS`,
//! restart, run the re-encryption command ([`crate::registry::Registry::reencrypt_all`]), then
//! drop `SECRETS_KEY_PREVIOUS`. Writes always use `SECRETS_KEY`.
//!
//! Without `SECRETS_KEY`, secrets are stored as `{"plain": "…"}` — explicit, so a later switch
//! to encryption knows which values still need sealing — and the services warn at start-up.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::secret::Secret;

/// Environment variable holding the current key (base64 of 32 bytes).
pub const SECRETS_KEY_VAR: &str = "SECRETS_KEY";
/// Environment variable holding the previous key during a rotation.
pub const SECRETS_KEY_PREVIOUS_VAR: &str = "SECRETS_KEY_PREVIOUS";

/// Key size of AES-256.
const KEY_LEN: usize = 32;
/// GCM's standard nonce size.
const NONCE_LEN: usize = 12;

/// What went wrong loading keys or sealing/opening a secret. Messages name key ids and
/// variables, never key material or secret values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    /// An environment variable did not hold a usable key.
    #[error("{var} must be base64 of 32 bytes (e.g. the output of `openssl rand -base64 32`), got {got}")]
    BadKey {
        /// The variable's name.
        var: &'static str,
        /// What it held instead, described without echoing it.
        got: String,
    },
    /// Only the previous key was configured.
    #[error("{SECRETS_KEY_PREVIOUS_VAR} is set but {SECRETS_KEY_VAR} is not; writes always use {SECRETS_KEY_VAR}, so set it to the new key")]
    PreviousWithoutCurrent,
    /// A secret was sealed with a key we do not have.
    #[error("secret was encrypted with key id {kid}, which matches neither {SECRETS_KEY_VAR} (key id {current}) nor {SECRETS_KEY_PREVIOUS_VAR} ({previous}); set {SECRETS_KEY_PREVIOUS_VAR} to the key with id {kid}")]
    UnknownKeyId {
        /// The key id stored with the ciphertext.
        kid: String,
        /// The current key's id.
        current: String,
        /// The previous key's id, or "not set".
        previous: String,
    },
    /// A secret is encrypted but no key is configured at all.
    #[error("secret is encrypted with key id {kid} but {SECRETS_KEY_VAR} is not set; set it (or {SECRETS_KEY_PREVIOUS_VAR}, with a new {SECRETS_KEY_VAR}) to the key with that id")]
    NoKeyConfigured {
        /// The key id stored with the ciphertext.
        kid: String,
    },
    /// The key matched but the ciphertext did not authenticate.
    #[error("secret encrypted with key id {kid} failed to authenticate: the ciphertext was altered or copied from another field or integration")]
    Tampered {
        /// The key id stored with the ciphertext.
        kid: String,
    },
    /// The stored envelope is not well-formed (bad base64, wrong nonce size, not UTF-8).
    #[error("stored secret is malformed: {0}")]
    Malformed(&'static str),
    /// The cipher refused to encrypt (only possible for absurdly large inputs).
    #[error("encrypting a secret failed")]
    EncryptFailed,
}

/// Identifies a key without revealing it: first 8 hex chars of SHA-256 of the key bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyId(String);

impl KeyId {
    fn of(key: &[u8; KEY_LEN]) -> Self {
        let digest = Sha256::digest(key);
        let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        Self(hex)
    }

    /// The id as stored next to ciphertexts.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One AES-256-GCM key with its id.
#[derive(Clone)]
struct DataKey {
    id: KeyId,
    cipher: Aes256Gcm,
}

impl DataKey {
    fn new(bytes: &[u8; KEY_LEN]) -> Self {
        Self {
            id: KeyId::of(bytes),
            cipher: Aes256Gcm::new(bytes.into()),
        }
    }

    fn from_base64(var: &'static str, value: &str) -> Result<Self, SecretsError> {
        let decoded = STANDARD
            .decode(value.trim())
            .map_err(|_| SecretsError::BadKey {
                var,
                // The decoder's message quotes the offending character; we do not.
                got: "a value that is not valid standard base64".to_owned(),
            })?;
        let bytes: [u8; KEY_LEN] =
            decoded
                .as_slice()
                .try_into()
                .map_err(|_| SecretsError::BadKey {
                    var,
                    got: format!("{} bytes", decoded.len()),
                })?;
        Ok(Self::new(&bytes))
    }
}

/// A secret as stored in Redis: sealed with a key, or explicitly plain.
///
/// Untagged on purpose: the shape itself says which it is, and reads stay compatible when an
/// unencrypted deployment turns encryption on.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum SealedSecret {
    /// AES-256-GCM ciphertext (with tag) under the key with id `kid`.
    Encrypted {
        kid: String,
        nonce: String,
        ct: String,
    },
    /// Stored without encryption because no key was configured.
    Plain { plain: String },
}

impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Encrypted { kid, .. } => write!(f, "Encrypted {{ kid: {kid:?}, .. }}"),
            Self::Plain { .. } => f.write_str("Plain(***)"),
        }
    }
}

/// The keys the registry seals and opens secrets with.
///
/// `Debug` shows key ids only.
#[derive(Clone, Default)]
pub struct SecretsKeys {
    current: Option<DataKey>,
    previous: Option<DataKey>,
}

impl std::fmt::Debug for SecretsKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsKeys")
            .field("current", &self.current.as_ref().map(|k| k.id.as_str()))
            .field("previous", &self.previous.as_ref().map(|k| k.id.as_str()))
            .finish()
    }
}

impl SecretsKeys {
    /// Keys from `SECRETS_KEY` and `SECRETS_KEY_PREVIOUS` (both optional, base64 of 32 bytes),
    /// as read by `common::config`. Fails, naming the variable, when a value is unusable.
    pub fn from_base64(
        current: Option<&str>,
        previous: Option<&str>,
    ) -> Result<Self, SecretsError> {
        let current = current
            .map(|v| DataKey::from_base64(SECRETS_KEY_VAR, v))
            .transpose()?;
        let previous = previous
            .map(|v| DataKey::from_base64(SECRETS_KEY_PREVIOUS_VAR, v))
            .transpose()?;
        if current.is_none() && previous.is_some() {
            return Err(SecretsError::PreviousWithoutCurrent);
        }
        Ok(Self { current, previous })
    }

    /// Keys from raw bytes: `current` seals, both open.
    pub fn from_bytes(current: &[u8; KEY_LEN], previous: Option<&[u8; KEY_LEN]>) -> Self {
        Self {
            current: Some(DataKey::new(current)),
            previous: previous.map(DataKey::new),
        }
    }

    /// No keys: secrets are stored plain (development only).
    pub fn unencrypted() -> Self {
        Self::default()
    }

    /// Whether new secrets will be encrypted.
    pub fn is_encrypting(&self) -> bool {
        self.current.is_some()
    }

    /// The id of the key new secrets are sealed with.
    pub fn current_key_id(&self) -> Option<&KeyId> {
        self.current.as_ref().map(|k| &k.id)
    }

    /// Logs a single warning when secrets will be stored unencrypted; services call it once at
    /// start-up so the choice is visible in the logs without repeating per integration.
    pub fn warn_if_unencrypted(&self) {
        if !self.is_encrypting() {
            tracing::warn!(
                "{SECRETS_KEY_VAR} is not set: integration secrets are stored unencrypted in Redis; \
                 set it to base64 of 32 random bytes (`openssl rand -base64 32`)"
            );
        }
    }

    /// Seals `secret` for storage under the current key (plain when there is none). `aad`
    /// binds the ciphertext to where it is stored.
    pub(crate) fn seal(&self, secret: &Secret, aad: &[u8]) -> Result<SealedSecret, SecretsError> {
        let Some(key) = &self.current else {
            return Ok(SealedSecret::Plain {
                plain: secret.expose().to_owned(),
            });
        };
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ct = key
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: secret.expose().as_bytes(),
                    aad,
                },
            )
            .map_err(|_| SecretsError::EncryptFailed)?;
        Ok(SealedSecret::Encrypted {
            kid: key.id.0.clone(),
            nonce: STANDARD.encode(nonce),
            ct: STANDARD.encode(ct),
        })
    }

    /// Opens a stored secret with whichever configured key sealed it.
    pub(crate) fn open(&self, sealed: &SealedSecret, aad: &[u8]) -> Result<Secret, SecretsError> {
        let (kid, nonce, ct) = match sealed {
            SealedSecret::Plain { plain } => return Ok(Secret::new(plain.clone())),
            SealedSecret::Encrypted { kid, nonce, ct } => (kid, nonce, ct),
        };
        let key = [&self.current, &self.previous]
            .into_iter()
            .flatten()
            .find(|k| k.id.0 == *kid)
            .ok_or_else(|| match &self.current {
                None => SecretsError::NoKeyConfigured { kid: kid.clone() },
                Some(current) => SecretsError::UnknownKeyId {
                    kid: kid.clone(),
                    current: current.id.0.clone(),
                    previous: self
                        .previous
                        .as_ref()
                        .map_or_else(|| "not set".to_owned(), |k| format!("key id {}", k.id)),
                },
            })?;
        let nonce = STANDARD
            .decode(nonce)
            .map_err(|_| SecretsError::Malformed("nonce is not base64"))?;
        if nonce.len() != NONCE_LEN {
            return Err(SecretsError::Malformed("nonce is not 12 bytes"));
        }
        let ct = STANDARD
            .decode(ct)
            .map_err(|_| SecretsError::Malformed("ciphertext is not base64"))?;
        let plain = key
            .cipher
            .decrypt(Nonce::from_slice(&nonce), Payload { msg: &ct, aad })
            .map_err(|_| SecretsError::Tampered { kid: kid.clone() })?;
        String::from_utf8(plain)
            .map(Secret::new)
            .map_err(|_| SecretsError::Malformed("plaintext is not UTF-8"))
    }

    /// Whether `sealed` is already in the form a fresh write would produce (same key, or plain
    /// when no key is configured), i.e. re-encryption would not change anything useful.
    pub(crate) fn is_current(&self, sealed: &SealedSecret) -> bool {
        match (sealed, &self.current) {
            (SealedSecret::Plain { .. }, None) => true,
            (SealedSecret::Encrypted { kid, .. }, Some(key)) => *kid == key.id.0,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: [u8; 32] = [7; 32];
    const KEY_B: [u8; 32] = [9; 32];

    #[test]
    fn sealed_secret_round_trips_and_hides_the_value() {
        let keys = SecretsKeys::from_bytes(&KEY_A, None);
        let secret = Secret::new("app-secret-value");
        let sealed = keys.seal(&secret, b"acme/client_secret").unwrap();
        let json = serde_json::to_string(&sealed).unwrap();
        assert!(!json.contains("app-secret-value"), "{json}");
        assert!(json.contains(&format!("\"kid\":\"{}\"", KeyId::of(&KEY_A))));
        let back: SealedSecret = serde_json::from_str(&json).unwrap();
        assert_eq!(keys.open(&back, b"acme/client_secret").unwrap(), secret);
        assert!(keys.is_current(&back));
    }

    #[test]
    fn every_seal_uses_a_fresh_nonce() {
        let keys = SecretsKeys::from_bytes(&KEY_A, None);
        let secret = Secret::new("same");
        assert_ne!(
            keys.seal(&secret, b"x").unwrap(),
            keys.seal(&secret, b"x").unwrap()
        );
    }

    #[test]
    fn key_id_is_a_short_hash_not_the_key() {
        let id = KeyId::of(&KEY_A);
        assert_eq!(id.as_str().len(), 8);
        assert!(id.as_str().chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(id, KeyId::of(&KEY_B));
        // SHA-256 of 32 zero bytes starts with 66687aad.
        assert_eq!(KeyId::of(&[0; 32]).as_str(), "66687aad");
    }

    #[test]
    fn ciphertext_moved_to_another_field_does_not_open() {
        let keys = SecretsKeys::from_bytes(&KEY_A, None);
        let sealed = keys.seal(&Secret::new("s"), b"acme/client_secret").unwrap();
        let err = keys.open(&sealed, b"acme/callback_token").unwrap_err();
        assert!(matches!(err, SecretsError::Tampered { .. }), "{err}");
    }

    #[test]
    fn unknown_key_id_is_named_in_the_error() {
        let sealed = SecretsKeys::from_bytes(&KEY_A, None)
            .seal(&Secret::new("s"), b"aad")
            .unwrap();
        let err = SecretsKeys::from_bytes(&KEY_B, None)
            .open(&sealed, b"aad")
            .unwrap_err();
        let kid_a = KeyId::of(&KEY_A).to_string();
        let kid_b = KeyId::of(&KEY_B).to_string();
        assert_eq!(
            err.to_string(),
            format!(
                "secret was encrypted with key id {kid_a}, which matches neither SECRETS_KEY \
                 (key id {kid_b}) nor SECRETS_KEY_PREVIOUS (not set); set SECRETS_KEY_PREVIOUS \
                 to the key with id {kid_a}"
            )
        );
        let err = SecretsKeys::unencrypted()
            .open(&sealed, b"aad")
            .unwrap_err();
        assert_eq!(err, SecretsError::NoKeyConfigured { kid: kid_a });
    }

    #[test]
    fn previous_key_opens_during_rotation_and_current_key_seals() {
        let old = SecretsKeys::from_bytes(&KEY_A, None);
        let sealed = old.seal(&Secret::new("s"), b"aad").unwrap();
        let rotating = SecretsKeys::from_bytes(&KEY_B, Some(&KEY_A));
        assert_eq!(rotating.open(&sealed, b"aad").unwrap().expose(), "s");
        assert!(!rotating.is_current(&sealed));
        let resealed = rotating.seal(&Secret::new("s"), b"aad").unwrap();
        assert!(rotating.is_current(&resealed));
        let only_new = SecretsKeys::from_bytes(&KEY_B, None);
        assert_eq!(only_new.open(&resealed, b"aad").unwrap().expose(), "s");
        assert!(only_new.open(&sealed, b"aad").is_err());
    }

    #[test]
    fn without_a_key_secrets_are_marked_plain() {
        let keys = SecretsKeys::unencrypted();
        let sealed = keys.seal(&Secret::new("s"), b"aad").unwrap();
        assert_eq!(serde_json::to_string(&sealed).unwrap(), r#"{"plain":"s"}"#);
        assert!(keys.is_current(&sealed));
        assert!(!SecretsKeys::from_bytes(&KEY_A, None).is_current(&sealed));
        assert_eq!(format!("{sealed:?}"), "Plain(***)");
    }

    #[test]
    fn bad_key_values_name_the_variable_and_the_rule() {
        let sixteen = STANDARD.encode([1u8; 16]);
        let err = SecretsKeys::from_base64(Some(&sixteen), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "SECRETS_KEY must be base64 of 32 bytes (e.g. the output of `openssl rand -base64 32`), got 16 bytes"
        );
        let err = SecretsKeys::from_base64(Some(&STANDARD.encode(KEY_A)), Some("!!notbase64!!"))
            .unwrap_err();
        assert!(err
            .to_string()
            .starts_with("SECRETS_KEY_PREVIOUS must be base64 of 32 bytes"));
        assert!(!err.to_string().contains("!!notbase64!!"));
        let err = SecretsKeys::from_base64(None, Some(&STANDARD.encode(KEY_A))).unwrap_err();
        assert_eq!(err, SecretsError::PreviousWithoutCurrent);
        let keys = SecretsKeys::from_base64(Some(&format!(" {}\n", STANDARD.encode(KEY_A))), None)
            .unwrap();
        assert_eq!(keys.current_key_id(), Some(&KeyId::of(&KEY_A)));
    }

    #[test]
    fn debug_shows_key_ids_only() {
        let keys = SecretsKeys::from_bytes(&KEY_A, Some(&KEY_B));
        let debug = format!("{keys:?}");
        assert_eq!(
            debug,
            format!(
                "SecretsKeys {{ current: Some({:?}), previous: Some({:?}) }}",
                KeyId::of(&KEY_A).as_str(),
                KeyId::of(&KEY_B).as_str()
            )
        );
    }
}
