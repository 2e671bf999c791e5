//! The ingress callback path, step by step as `ingress/src/webhook.rs` runs it, minus the network:
//! body → `CallbackJson` → (`encrypt` → signature → decrypt → freshness → `CallbackJson`) →
//! kind → normalize → the event serialization `publish` does (which `expect`s success). Shared
//! by the fuzz targets so both reach the same code behind the crypto.
//!
//! Every step that can fail is allowed to fail; what must never happen is a panic, and a few
//! properties are asserted on top (our own ciphertexts decrypt to what was encrypted, our own
//! signatures verify, the decryptor agrees with a reference model of the plaintext layout).

use std::sync::OnceLock;
use std::time::Duration;

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockEncryptMut as _, KeyIvInit as _};
use aes::Aes256;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::Value;

use common::bus::event::Event;
use common::bus::{subjects, Timestamp, V1};
use common::crypto::{self, AesKey, CallbackCrypto, CryptoError};
use common::registry::IntegrationId;
use ingress::error::CallbackError;
use ingress::normalize::{self, CallbackJson, Normalized, PlainKind};

/// PROTOCOL §1.7 vector V3: token.
pub const TOKEN: &str = "123456";
/// PROTOCOL §1.7 vector V3: the console's 43-character AES key.
pub const AES_KEY: &str = "4g5j64qlyl3zvetqxz5jiocdr586fn2zvjpa8zls3ij";
/// PROTOCOL §1.7 vector V3: the receive id (suite key) every plaintext ends with.
pub const RECEIVE_ID: &str = "suite4xxxxxxxxxxxxxxx";
/// PROTOCOL §1.7 vector V3: the key bytes, as derived there (hex
/// `e20e63eb8aa5ca5df3bdeb6ac73e638a871daf9f3a7e7db3be3a5af3396cde28`).
pub const KEY_BYTES: [u8; 32] = [
    0xe2, 0x0e, 0x63, 0xeb, 0x8a, 0xa5, 0xca, 0x5d, 0xf3, 0xbd, 0xeb, 0x6a, 0xc7, 0x3e, 0x63, 0x8a,
    0x87, 0x1d, 0xaf, 0x9f, 0x3a, 0x7e, 0x7d, 0xb3, 0xbe, 0x3a, 0x5a, 0xf3, 0x39, 0x6c, 0xde, 0x28,
];
/// "Now" for every freshness check: V3's timestamp, so V3's query is fresh.
pub const NOW_MS: i64 = 1_445_827_045_067;
/// The encrypted-callback skew the ingress is configured with by default (5 minutes).
pub const MAX_SKEW: Duration = Duration::from_secs(300);
/// The integration every event is published for.
pub const INTEGRATION: &str = "fuzz";

/// The V3 subscription, built once.
pub fn v3() -> &'static CallbackCrypto {
    static CRYPTO: OnceLock<CallbackCrypto> = OnceLock::new();
    CRYPTO.get_or_init(|| {
        CallbackCrypto::new(
            TOKEN,
            AesKey::parse(AES_KEY).expect("V3 key parses"),
            RECEIVE_ID,
        )
    })
}

fn integration() -> &'static IntegrationId {
    static ID: OnceLock<IntegrationId> = OnceLock::new();
    ID.get_or_init(|| INTEGRATION.parse().expect("valid integration id"))
}

/// The query of an encrypted callback (`signature`, `timestamp`, `nonce`).
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// `signature` / `msg_signature`.
    pub signature: &'a str,
    /// `timestamp` / `timeStamp`.
    pub timestamp: &'a str,
    /// `nonce`.
    pub nonce: &'a str,
}

/// Splits `data` on NUL bytes into exactly `N` parts (missing ones are empty; the last part
/// keeps any further NULs). NUL never occurs in JSON text, so a body is always one part.
pub fn split<const N: usize>(data: &[u8]) -> [&[u8]; N] {
    let mut parts = [&[][..]; N];
    let mut rest = data;
    for (i, part) in parts.iter_mut().enumerate() {
        if i + 1 == N {
            *part = rest;
            break;
        }
        match rest.iter().position(|&b| b == 0) {
            Some(at) => {
                *part = &rest[..at];
                rest = &rest[at + 1..];
            }
            None => {
                *part = rest;
                rest = &[];
            }
        }
    }
    parts
}

/// Bytes as text the way axum hands them over (query values and headers are always valid UTF-8).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What `webhook::publish` does with a normalized event before it touches NATS: build the
/// [`Event`], derive its subject, and serialize it — with the same `expect`.
pub fn publish(normalized: Normalized) {
    let event = Event {
        v: V1,
        id: format!("{}:{}", integration(), normalized.key),
        integration_id: integration().clone(),
        received_at: Timestamp::from_unix_millis(NOW_MS).expect("in range"),
        body: normalized.body,
    };
    let _subject = subjects::event(&event.integration_id, event.kind());
    let payload = serde_json::to_vec(&event).expect("an event always serializes");
    std::hint::black_box(payload);
}

fn refuse(err: CryptoError) {
    let _ = err.is_authentication_failure();
    std::hint::black_box(CallbackError::from_crypto(err));
}

/// `webhook::handle` from the body on (the integration is known and accepts callbacks).
///
/// Unlike the handler, both plain normalizers run on every JSON object (the Stream connector
/// may call either), and `subscription_event` runs on the body text too.
pub fn plain_body(body: &[u8], query: Query<'_>, card_route: bool) {
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    if let Ok(normalized) = normalize::subscription_event(text) {
        publish(normalized);
    }
    // The lenient typed reading must accept every JSON object a tree accepts, except one that
    // repeats a field the reader knows (serde refuses duplicates; DingTalk never sends them).
    let parsed = CallbackJson::parse(text);
    let tree = serde_json::from_str::<Value>(text);
    if let (Err(err), Ok(Value::Object(_))) = (&parsed, &tree) {
        assert!(
            err.0.contains("duplicate field"),
            "a JSON object was refused: {}",
            err.0
        );
    }
    let Ok(json) = parsed else {
        return;
    };
    if let Some(encrypt) = json.encrypt() {
        encrypted(query, encrypt, card_route);
        // Fall through: the plain normalizers must also cope with an `encrypt` field.
    }
    let kind = if card_route {
        PlainKind::CardAction
    } else {
        json.kind()
    };
    let robot = json.robot_message();
    let card = normalize::card_action(text);
    let (chosen, other) = match kind {
        PlainKind::RobotMessage => (robot, card),
        PlainKind::CardAction => (card, robot),
    };
    for result in [chosen, other] {
        match result {
            Ok(normalized) => publish(normalized),
            Err(err) => std::hint::black_box(drop(CallbackError::malformed(err.0))),
        }
    }
}

/// `webhook::encrypted` with the V3 subscription.
pub fn encrypted(query: Query<'_>, encrypt: &str, card_route: bool) {
    let crypto = v3();
    let verified =
        crypto.verify_and_decrypt(query.signature, query.timestamp, query.nonce, encrypt);
    let plaintext = match verified {
        Ok(plaintext) => plaintext,
        Err(err) => return refuse(err),
    };
    // A verified ciphertext must decrypt the same way without the signature.
    assert_eq!(crypto.decrypt(encrypt).as_deref(), Ok(plaintext.as_str()));
    decrypted(&plaintext, query, card_route);
}

/// The part of `webhook::encrypted` after decryption. The freshness result is computed but
/// does not stop the fuzzer from reaching normalization.
pub fn decrypted(plaintext: &str, query: Query<'_>, card_route: bool) {
    if let Err(err) = crypto::check_timestamp_ms(query.timestamp, NOW_MS, MAX_SKEW) {
        refuse(err);
    }
    // "subscription_event on the raw string", whatever the plaintext is.
    if let Ok(normalized) = normalize::subscription_event(plaintext) {
        publish(normalized);
    }
    let Ok(decrypted) = CallbackJson::parse(plaintext) else {
        return;
    };
    if matches!(
        decrypted.event_type(),
        "check_url" | "check_create_suite_url" | "check_update_suite_url"
    ) {
        let reply = v3().encrypted_reply_with_prefix(
            "success",
            query.timestamp,
            query.nonce,
            b"1234567890123456",
        );
        std::hint::black_box(serde_json::to_vec(&reply).expect("a reply serializes"));
        return;
    }
    let is_card = card_route || decrypted.kind() == PlainKind::CardAction;
    let normalized = if is_card {
        normalize::card_action(plaintext)
    } else {
        decrypted.subscription_event()
    };
    if let Ok(normalized) = normalized {
        publish(normalized);
    }
}

/// Encrypts `msg` with the real V3 key and a fuzzer-chosen prefix, signs it, and sends it
/// through the handler as DingTalk would: `{"encrypt": …}` with the signed query.
pub fn sealed(msg: &str, timestamp: &str, nonce: &str, prefix: &[u8; 16], card_route: bool) {
    let crypto = v3();
    let reply = crypto.encrypted_reply_with_prefix(msg, timestamp, nonce, prefix);
    let roundtrip = crypto.verify_and_decrypt(
        &reply.msg_signature,
        &reply.time_stamp,
        &reply.nonce,
        &reply.encrypt,
    );
    assert_eq!(roundtrip.as_deref(), Ok(msg), "own ciphertext must decrypt");
    let body = serde_json::json!({ "encrypt": reply.encrypt }).to_string();
    let query = Query {
        signature: &reply.msg_signature,
        timestamp,
        nonce,
    };
    plain_body(body.as_bytes(), query, card_route);
}

/// Arbitrary text as the `encrypt` value, with and without a (fuzzer-chosen) signature.
pub fn decrypt_text(encrypt: &str, query: Query<'_>, card_route: bool) {
    match v3().decrypt(encrypt) {
        Ok(plaintext) => decrypted(&plaintext, query, card_route),
        Err(err) => refuse(err),
    }
    encrypted(query, encrypt, card_route);
}

/// The signature, robot sign, timestamp and key checks on arbitrary strings, plus the
/// properties that tie them to their signing counterparts.
pub fn auth(parts: [&str; 5], now_ms: i64, window: Duration) {
    let [a, b, c, d, e] = parts;

    // Event-subscription SHA-1 signature (§1.2): `a` claimed, over (token b, ts c, nonce d, e).
    if let Err(err) = crypto::verify_signature(a, b, c, d, e) {
        refuse(err);
    }
    let good = crypto::signature(b, c, d, e);
    assert_eq!(good.len(), 40);
    assert_eq!(crypto::verify_signature(&good, b, c, d, e), Ok(()));
    assert_eq!(
        crypto::verify_signature(&good.to_ascii_uppercase(), b, c, d, e),
        Ok(())
    );
    // Sorted before hashing, so the argument order does not matter.
    assert_eq!(crypto::signature(e, d, c, b), good);

    // Robot sign (§2.1): secret a, timestamp header b, sign c.
    if let Err(err) = crypto::verify_robot_sign(a, b, c, now_ms, window) {
        refuse(err);
    }
    let sign = crypto::robot_sign(a, b);
    match crypto::check_timestamp_ms(b, now_ms, window) {
        Ok(ts) => {
            assert_eq!(
                crypto::verify_robot_sign(a, b, &sign, now_ms, window),
                Ok(())
            );
            assert_eq!(
                crypto::verify_robot_sign(a, b, &sign, ts, Duration::ZERO),
                Ok(())
            );
        }
        Err(err) => {
            assert!(crypto::verify_robot_sign(a, b, &sign, now_ms, window).is_err());
            refuse(err);
        }
    }

    // Freshness of the other strings.
    for ts in [c, d] {
        if let Err(err) = crypto::check_timestamp_ms(ts, now_ms, window) {
            refuse(err);
        }
    }

    // Key parsing; a key that parses must round-trip a message with any receive id.
    for candidate in [a, e] {
        match AesKey::parse(candidate) {
            Ok(key) => {
                let crypto = CallbackCrypto::new(b, key, c);
                let reply = crypto.encrypted_reply_with_prefix(d, b, c, &[b'x'; 16]);
                assert_eq!(
                    crypto.verify_and_decrypt(
                        &reply.msg_signature,
                        &reply.time_stamp,
                        &reply.nonce,
                        &reply.encrypt
                    ),
                    Ok(d.to_owned())
                );
            }
            Err(err) => refuse(err),
        }
    }

    // The success acknowledgement for a fuzzer-chosen timestamp and nonce.
    let reply = v3().encrypted_reply_with_prefix("success", b, c, b"1234567890123456");
    assert_eq!(
        v3().verify_and_decrypt(
            &reply.msg_signature,
            &reply.time_stamp,
            &reply.nonce,
            &reply.encrypt
        )
        .as_deref(),
        Ok("success")
    );
}

/// AES-256-CBC with the V3 key and IV and no padding: turns a chosen plaintext (a whole number
/// of 16-byte blocks) into the base64 `encrypt` value DingTalk would send.
pub fn raw_encrypt(plaintext: &[u8]) -> String {
    assert_eq!(plaintext.len() % 16, 0, "whole AES blocks");
    let mut buf = plaintext.to_vec();
    let len = buf.len();
    let iv: [u8; 16] = KEY_BYTES[..16].try_into().expect("16 bytes");
    let ciphertext = cbc::Encryptor::<Aes256>::new(&KEY_BYTES.into(), &iv.into())
        .encrypt_padded_mut::<NoPadding>(&mut buf, len)
        .expect("whole blocks");
    STANDARD.encode(ciphertext)
}

/// What `CallbackCrypto::decrypt` must answer for a plaintext (PROTOCOL §1.4–§1.5), written
/// independently of `common`: pad `n` in 1..=32 of value `n`, 16-byte prefix, big-endian
/// length, message, receive id.
pub fn expected_decryption(plaintext: &[u8]) -> Result<String, CryptoError> {
    let Some(&last) = plaintext.last() else {
        return Err(CryptoError::BadCiphertextLength { len: 0 });
    };
    let pad = usize::from(last);
    if pad == 0 || pad > 32 || pad > plaintext.len() {
        return Err(CryptoError::BadPadding);
    }
    let (body, padding) = plaintext.split_at(plaintext.len() - pad);
    if padding.iter().any(|&b| b != last) {
        return Err(CryptoError::BadPadding);
    }
    if body.len() < 20 {
        return Err(CryptoError::BadLayout {
            plaintext_len: body.len(),
            declared_msg_len: None,
        });
    }
    let declared = u32::from_be_bytes(body[16..20].try_into().expect("4 bytes"));
    let rest = &body[20..];
    if declared as usize > rest.len() {
        return Err(CryptoError::BadLayout {
            plaintext_len: body.len(),
            declared_msg_len: Some(declared),
        });
    }
    let (msg, receive_id) = rest.split_at(declared as usize);
    if receive_id != RECEIVE_ID.as_bytes() {
        return Err(CryptoError::WrongReceiveId {
            expected: RECEIVE_ID.to_owned(),
            found: String::from_utf8_lossy(receive_id).into_owned(),
        });
    }
    String::from_utf8(msg.to_vec()).map_err(|_| CryptoError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V3_SIGNATURE: &str = "5a65ceeef9aab2d149439f82dc191dd6c5cbe2c0";
    const V3_TIMESTAMP: &str = "1445827045067";
    const V3_NONCE: &str = "nEXhMP4r";
    const V3_ENCRYPT: &str = "1a3NBxmCFwkCJvfoQ7WhJHB+iX3qHPsc9JbaDznE1i03peOk1LaOQoRz3+nlyGNhwmwJ3vDMG+OzrHMeiZI7gTRWVdUBmfxjZ8Ej23JVYa9VrYeJ5as7XM/ZpulX8NEQis44w53h1qAgnC3PRzM7Zc/D6Ibr0rgUathB6zRHP8PYrfgnNOS9PhSBdHlegK+AGGanfwjXuQ9+0pZcy0w9lQ==";
    const V3_PLAINTEXT: &str = r#"{"EventType":"check_create_suite_url","Random":"LPIdSnlF","TestSuiteKey":"suite4xxxxxxxxxxxxxxx"}"#;
    const V4_ENCRYPT: &str = "5DJFWzjRNOQk+5GSZxW+VrFMDWCIidPjEjg3//gm5x556BedVi62rDj1F9uXU97a4jw1R4FACUv9RCpoDobNqxhxRB2YtW901k4KHbP1/wpFJ3xdLG0n0A8U1VhENg80zKJd+YROR0YMGum4WYuoXJ6J98vt0ihYeIFoapNddLML5MyNAGM9saSpkouDMSvD+iU14i7V8ix1ia1Tb9ogog==";

    fn v4_plaintext() -> Vec<u8> {
        let mut buf = b"1234567890123456".to_vec();
        buf.extend_from_slice(&(V3_PLAINTEXT.len() as u32).to_be_bytes());
        buf.extend_from_slice(V3_PLAINTEXT.as_bytes());
        buf.extend_from_slice(RECEIVE_ID.as_bytes());
        let pad = 32 - buf.len() % 32;
        buf.resize(buf.len() + pad, pad as u8);
        buf
    }

    #[test]
    fn raw_encryption_reproduces_vector_v4_and_the_model_reads_it() {
        let plaintext = v4_plaintext();
        assert_eq!(raw_encrypt(&plaintext), V4_ENCRYPT);
        assert_eq!(expected_decryption(&plaintext).as_deref(), Ok(V3_PLAINTEXT));
        assert_eq!(v3().decrypt(V4_ENCRYPT).as_deref(), Ok(V3_PLAINTEXT));
    }

    #[test]
    fn the_v3_capture_reaches_decryption() {
        let query = Query {
            signature: V3_SIGNATURE,
            timestamp: V3_TIMESTAMP,
            nonce: V3_NONCE,
        };
        let body = format!(r#"{{"encrypt":"{V3_ENCRYPT}"}}"#);
        plain_body(body.as_bytes(), query, false);
        assert_eq!(
            v3().verify_and_decrypt(V3_SIGNATURE, V3_TIMESTAMP, V3_NONCE, V3_ENCRYPT)
                .as_deref(),
            Ok(V3_PLAINTEXT)
        );
    }

    #[test]
    fn split_keeps_empty_parts_and_the_tail() {
        assert_eq!(split::<3>(b"a\0\0b\0c"), [&b"a"[..], b"", b"b\0c"]);
        assert_eq!(split::<3>(b"a"), [&b"a"[..], b"", b""]);
    }
}
