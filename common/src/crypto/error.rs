//! The one error type of [`crate::crypto`], and how the HTTP edge should classify it.

/// Why a key, a signature, a timestamp or a ciphertext was refused.
///
/// Messages say what was wrong and what is allowed. They never contain key material or the
/// token; they may contain receive ids and timestamps, which are not secret.
///
/// Mapping at the HTTP edge:
///
/// * [`is_authentication_failure`](Self::is_authentication_failure) is `true` for the request
///   whose signature, robot sign or timestamp is refused: answer **401**.
/// * The decryption variants (`BadBase64` … `WrongReceiveId`) mean the request was authentic
///   enough to reach decryption but its payload is unusable: answer **400**.
/// * `InvalidKeyLength` and `InvalidKeyEncoding` only come from [`AesKey::parse`] while loading
///   configuration: fail at startup, never per request.
///
/// [`AesKey::parse`]: super::AesKey::parse
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The configured AES key does not have the console's 43 characters.
    #[error(
        "AES key must be exactly 43 characters (the EncodingAESKey shown in the DingTalk \
         console), found {found}"
    )]
    InvalidKeyLength {
        /// Number of characters of the key that was given.
        found: usize,
    },

    /// The configured AES key has 43 characters but is not base64 for 32 bytes.
    #[error(
        "AES key must consist of standard base64 characters (A-Z, a-z, 0-9, '+', '/') \
         that decode to 32 bytes"
    )]
    InvalidKeyEncoding,

    /// The callback signature is not a 40-character hexadecimal SHA-1 digest.
    #[error(
        "signature must be 40 hexadecimal characters (a SHA-1 digest); got a {len}-byte value \
         that is not"
    )]
    MalformedSignature {
        /// Length in bytes of the value that was received.
        len: usize,
    },

    /// The callback signature is well-formed but does not match the request.
    #[error(
        "signature does not match the SHA-1 of the sorted token, timestamp, nonce and encrypt \
         values; check the configured token"
    )]
    BadSignature,

    /// The robot `sign` header does not match the HMAC of the timestamp.
    #[error(
        "robot sign must equal base64(HMAC-SHA256(appSecret, timestamp + \"\\n\" + appSecret)) \
         and does not; check the configured app secret"
    )]
    BadRobotSign,

    /// A timestamp is not a plain decimal number of milliseconds.
    #[error(
        "timestamp must be milliseconds since the Unix epoch written as decimal digits, \
         found {found:?}"
    )]
    BadTimestamp {
        /// The value received, cut to its first 32 characters.
        found: String,
    },

    /// A timestamp is too far from the current time.
    #[error(
        "timestamp is {skew_ms} ms away from the current time (positive: in the past, \
         negative: in the future); at most {max_skew_ms} ms either way is allowed"
    )]
    Stale {
        /// `now - timestamp` in milliseconds, saturated to the range of `i64`.
        skew_ms: i64,
        /// The largest accepted distance in milliseconds.
        max_skew_ms: u64,
    },

    /// The `encrypt` value is not base64.
    #[error("encrypt must be standard base64 with '=' padding")]
    BadBase64,

    /// The ciphertext cannot be AES-CBC output.
    #[error("ciphertext must be a non-empty multiple of 16 bytes (AES blocks), found {len} bytes")]
    BadCiphertextLength {
        /// Length in bytes of the decoded ciphertext.
        len: usize,
    },

    /// The decrypted padding is not DingTalk's PKCS#7-style padding.
    #[error(
        "decrypted padding is invalid: the last byte n must be in 1..=32 and the last n bytes \
         must all equal n; the AES key is probably wrong"
    )]
    BadPadding,

    /// The decrypted plaintext does not have the documented layout.
    #[error(
        "decrypted plaintext ({plaintext_len} bytes without padding) does not fit the layout \
         16 random bytes | 4-byte big-endian message length | message | receiveId{}",
        declared_msg_len.map(|n| format!(" (declared message length: {n} bytes)")).unwrap_or_default()
    )]
    BadLayout {
        /// Length of the plaintext after the padding was removed.
        plaintext_len: usize,
        /// The message length field, when the plaintext was long enough to hold one.
        declared_msg_len: Option<u32>,
    },

    /// The decrypted message is not UTF-8 text.
    #[error("decrypted message must be UTF-8 text and is not")]
    NotUtf8,

    /// The ciphertext was addressed to another app, corp or suite.
    #[error("decrypted receiveId {found:?} does not match the configured receiveId {expected:?}")]
    WrongReceiveId {
        /// The receive id this gateway is configured with (the app's client id).
        expected: String,
        /// The receive id found at the end of the plaintext (lossily decoded as UTF-8).
        found: String,
    },
}

impl CryptoError {
    /// Whether the request failed authentication (HTTP 401) rather than carrying an unusable
    /// payload (HTTP 400), so the ingress maps errors in one place.
    pub fn is_authentication_failure(&self) -> bool {
        matches!(
            self,
            Self::MalformedSignature { .. }
                | Self::BadSignature
                | Self::BadRobotSign
                | Self::BadTimestamp { .. }
                | Self::Stale { .. }
        )
    }
}
