//! Event-subscription callback encryption ("DingCallbackCrypto", PROTOCOL §1.4–§1.6).
//!
//! Plaintext layout, padded to a multiple of 32 bytes and encrypted with AES-256-CBC:
//!
//! ```text
//! | 16 random bytes | u32 big-endian len(msg) | msg (UTF-8) | receiveId | pad: n bytes of value n |
//! ```

use std::fmt;

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut as _, BlockEncryptMut as _, KeyIvInit as _};
use aes::Aes256;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand::distr::Alphanumeric;
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use super::{signature, verify_signature, AesKey, CryptoError};

/// Length of the random prefix that starts every plaintext.
const PREFIX_LEN: usize = 16;

/// Length of the big-endian message length field after the prefix.
const LEN_FIELD_LEN: usize = 4;

/// DingTalk pads to 32 bytes (not the AES block size); the official Go and Rust samples pad to
/// 16, which is why decryption accepts any pad count in `1..=32`.
const PAD_BLOCK: usize = 32;

/// The message every callback must be answered with, encrypted.
const SUCCESS: &str = "success";

/// The keys of one event subscription, as configured next to each other in the console.
///
/// Built once from configuration, it turns callback bodies into JSON text and builds the
/// encrypted reply. Its `Debug` output hides the token and the key.
#[derive(Clone)]
pub struct CallbackCrypto {
    token: String,
    key: AesKey,
    receive_id: String,
}

/// The JSON body DingTalk requires in answer to every callback (PROTOCOL §1.6).
///
/// Field names are DingTalk's, including the capital `S` of `timeStamp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedReply {
    /// Signature over (token, `time_stamp`, `nonce`, `encrypt`), see [`signature`].
    pub msg_signature: String,
    /// The timestamp we sign with; echoing the request's is recommended.
    #[serde(rename = "timeStamp")]
    pub time_stamp: String,
    /// The nonce we sign with; echoing the request's is recommended.
    pub nonce: String,
    /// Base64 ciphertext of the reply message.
    pub encrypt: String,
}

impl CallbackCrypto {
    /// Combines the console's token and AES key with the receive id DingTalk appends to every
    /// plaintext: the app's client id (AppKey) for an enterprise-internal app, the corp id for
    /// the legacy register API, the suite key for an ISV app.
    pub fn new(token: impl Into<String>, key: AesKey, receive_id: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            key,
            receive_id: receive_id.into(),
        }
    }

    /// The receive id plaintexts must end with, for logs and error reports.
    pub fn receive_id(&self) -> &str {
        &self.receive_id
    }

    /// Authenticates a callback and returns its decrypted JSON text.
    ///
    /// The signature is checked first and nothing is decrypted when it fails, so an attacker
    /// without the token cannot use us as a decryption or padding oracle.
    pub fn verify_and_decrypt(
        &self,
        signature: &str,
        timestamp: &str,
        nonce: &str,
        encrypt: &str,
    ) -> Result<String, CryptoError> {
        verify_signature(signature, &self.token, timestamp, nonce, encrypt)?;
        self.decrypt(encrypt)
    }

    /// Decrypts an `encrypt` value without checking any signature.
    ///
    /// Callers handling requests should use [`verify_and_decrypt`](Self::verify_and_decrypt):
    /// CBC ciphertext is malleable, and only the signature proves it came from DingTalk.
    pub fn decrypt(&self, encrypt: &str) -> Result<String, CryptoError> {
        let mut buf = STANDARD
            .decode(encrypt)
            .map_err(|_| CryptoError::BadBase64)?;
        let plaintext = decrypt_blocks(&self.key, &mut buf)?;
        let unpadded = strip_padding(plaintext)?;
        let (msg, receive_id) = split_layout(unpadded)?;
        if receive_id != self.receive_id.as_bytes() {
            return Err(CryptoError::WrongReceiveId {
                expected: self.receive_id.clone(),
                found: String::from_utf8_lossy(receive_id).into_owned(),
            });
        }
        String::from_utf8(msg.to_vec()).map_err(|_| CryptoError::NotUtf8)
    }

    /// Encrypts a message for DingTalk, with a fresh random alphanumeric prefix.
    ///
    /// # Panics
    ///
    /// If `msg` is 4 GiB or longer, which the 32-bit length field cannot describe.
    pub fn encrypt(&self, msg: &str) -> String {
        self.encrypt_with_prefix(msg, &random_prefix())
    }

    /// Encrypts with a caller-chosen prefix, so tests can compare exact bytes with published
    /// vectors. Production code uses [`encrypt`](Self::encrypt).
    ///
    /// # Panics
    ///
    /// If `msg` is 4 GiB or longer, which the 32-bit length field cannot describe.
    pub fn encrypt_with_prefix(&self, msg: &str, prefix: &[u8; PREFIX_LEN]) -> String {
        let msg = msg.as_bytes();
        let declared_len =
            u32::try_from(msg.len()).expect("callback messages are shorter than 4 GiB");
        let unpadded_len = PREFIX_LEN + LEN_FIELD_LEN + msg.len() + self.receive_id.len();
        let pad_len = PAD_BLOCK - unpadded_len % PAD_BLOCK;
        let pad_byte = u8::try_from(pad_len).expect("pad length is at most 32");

        let mut buf = Vec::with_capacity(unpadded_len + pad_len);
        buf.extend_from_slice(prefix);
        buf.extend_from_slice(&declared_len.to_be_bytes());
        buf.extend_from_slice(msg);
        buf.extend_from_slice(self.receive_id.as_bytes());
        buf.resize(unpadded_len + pad_len, pad_byte);

        STANDARD.encode(encrypt_blocks(&self.key, &mut buf))
    }

    /// Builds the signed, encrypted reply carrying `msg`.
    ///
    /// # Panics
    ///
    /// If `msg` is 4 GiB or longer.
    pub fn encrypted_reply(&self, msg: &str, timestamp: &str, nonce: &str) -> EncryptedReply {
        self.reply_for(self.encrypt(msg), timestamp, nonce)
    }

    /// [`encrypted_reply`](Self::encrypted_reply) with a caller-chosen prefix, for tests.
    ///
    /// # Panics
    ///
    /// If `msg` is 4 GiB or longer.
    pub fn encrypted_reply_with_prefix(
        &self,
        msg: &str,
        timestamp: &str,
        nonce: &str,
        prefix: &[u8; PREFIX_LEN],
    ) -> EncryptedReply {
        self.reply_for(self.encrypt_with_prefix(msg, prefix), timestamp, nonce)
    }

    /// The encrypted `success` acknowledgement DingTalk expects for every callback, including
    /// the `check_url` handshake; without it the push counts as failed.
    pub fn success_reply(&self, timestamp: &str, nonce: &str) -> EncryptedReply {
        self.encrypted_reply(SUCCESS, timestamp, nonce)
    }

    /// Signs an already encrypted reply.
    fn reply_for(&self, encrypt: String, timestamp: &str, nonce: &str) -> EncryptedReply {
        EncryptedReply {
            msg_signature: signature(&self.token, timestamp, nonce, &encrypt),
            time_stamp: timestamp.to_owned(),
            nonce: nonce.to_owned(),
            encrypt,
        }
    }
}

impl fmt::Debug for CallbackCrypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackCrypto")
            .field("token", &"***")
            .field("key", &self.key)
            .field("receive_id", &self.receive_id)
            .finish()
    }
}

/// Sixteen random alphanumeric ASCII bytes, as every reference implementation sends.
fn random_prefix() -> [u8; PREFIX_LEN] {
    let mut prefix = [0; PREFIX_LEN];
    let mut rng = rand::rng();
    for byte in &mut prefix {
        *byte = rng.sample(Alphanumeric);
    }
    prefix
}

/// AES-256-CBC encryption in place of an already padded buffer.
fn encrypt_blocks<'a>(key: &AesKey, buf: &'a mut [u8]) -> &'a [u8] {
    let len = buf.len();
    cbc::Encryptor::<Aes256>::new(key.bytes().into(), &key.iv().into())
        .encrypt_padded_mut::<NoPadding>(buf, len)
        .expect("plaintext is padded to a multiple of 32 bytes, hence of the AES block")
}

/// AES-256-CBC decryption in place, leaving DingTalk's padding for [`strip_padding`].
fn decrypt_blocks<'a>(key: &AesKey, buf: &'a mut [u8]) -> Result<&'a [u8], CryptoError> {
    let len = buf.len();
    if len == 0 {
        return Err(CryptoError::BadCiphertextLength { len });
    }
    // With `NoPadding` the only failure is a length that is not whole AES blocks.
    cbc::Decryptor::<Aes256>::new(key.bytes().into(), &key.iv().into())
        .decrypt_padded_mut::<NoPadding>(buf)
        .map_err(|_| CryptoError::BadCiphertextLength { len })
}

/// Removes `n` trailing bytes of value `n`, `n` in `1..=32`.
fn strip_padding(plaintext: &[u8]) -> Result<&[u8], CryptoError> {
    let &last = plaintext.last().ok_or(CryptoError::BadPadding)?;
    let pad_len = usize::from(last);
    if !(1..=PAD_BLOCK).contains(&pad_len) || pad_len > plaintext.len() {
        return Err(CryptoError::BadPadding);
    }
    let (body, pad) = plaintext.split_at(plaintext.len() - pad_len);
    if pad.iter().all(|&byte| byte == last) {
        Ok(body)
    } else {
        Err(CryptoError::BadPadding)
    }
}

/// Splits an unpadded plaintext into the message and the trailing receive id.
fn split_layout(unpadded: &[u8]) -> Result<(&[u8], &[u8]), CryptoError> {
    let bad_layout = |declared_msg_len| CryptoError::BadLayout {
        plaintext_len: unpadded.len(),
        declared_msg_len,
    };
    let (len_field, rest) = unpadded
        .get(PREFIX_LEN..)
        .and_then(<[u8]>::split_first_chunk::<LEN_FIELD_LEN>)
        .ok_or_else(|| bad_layout(None))?;
    let declared = u32::from_be_bytes(*len_field);
    match usize::try_from(declared) {
        Ok(msg_len) if msg_len <= rest.len() => Ok(rest.split_at(msg_len)),
        _ => Err(bad_layout(Some(declared))),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// AES block size: every ciphertext length is a multiple of it.
    const AES_BLOCK: usize = 16;

    const V1_TOKEN: &str = "mryue";
    const V1_KEY: &str = "Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7";
    const V1_RECEIVE_ID: &str = "ding6ccabc44d2c8d38b";
    const V1_SIGNATURE: &str = "03044561471240d4a14bb09372dfcfd4fd0e40cb";
    const V1_TIMESTAMP: &str = "1608001896814";
    const V1_NONCE: &str = "WL4PK6yA";
    const V1_ENCRYPT: &str = "0vJiX6vliEpwG3U45CtXqi+m8PXbQRARJ8p8BbDuD1EMTDf0jKpQ79QS93qEk7XHpP6u+oTTrd15NRPvNvmBKyDCYxxOK+HZeKju4yhELOFchzNukR+t8SB/qk4ROMu3";
    const V1_PLAINTEXT: &str = r#"{"EventType":"check_url"}"#;

    const V3_TOKEN: &str = "123456";
    const V3_KEY: &str = "4g5j64qlyl3zvetqxz5jiocdr586fn2zvjpa8zls3ij";
    const V3_RECEIVE_ID: &str = "suite4xxxxxxxxxxxxxxx";
    const V3_SIGNATURE: &str = "5a65ceeef9aab2d149439f82dc191dd6c5cbe2c0";
    const V3_TIMESTAMP: &str = "1445827045067";
    const V3_NONCE: &str = "nEXhMP4r";
    const V3_ENCRYPT: &str = "1a3NBxmCFwkCJvfoQ7WhJHB+iX3qHPsc9JbaDznE1i03peOk1LaOQoRz3+nlyGNhwmwJ3vDMG+OzrHMeiZI7gTRWVdUBmfxjZ8Ej23JVYa9VrYeJ5as7XM/ZpulX8NEQis44w53h1qAgnC3PRzM7Zc/D6Ibr0rgUathB6zRHP8PYrfgnNOS9PhSBdHlegK+AGGanfwjXuQ9+0pZcy0w9lQ==";
    const V3_PLAINTEXT: &str = r#"{"EventType":"check_create_suite_url","Random":"LPIdSnlF","TestSuiteKey":"suite4xxxxxxxxxxxxxxx"}"#;

    const V4_PREFIX: &[u8; 16] = b"1234567890123456";
    const V4_SIGNATURE: &str = "bcf6dcefa4ce2dbaf7b0666c7264d46fd9aad4bd";
    const V4_ENCRYPT: &str = "5DJFWzjRNOQk+5GSZxW+VrFMDWCIidPjEjg3//gm5x556BedVi62rDj1F9uXU97a4jw1R4FACUv9RCpoDobNqxhxRB2YtW901k4KHbP1/wpFJ3xdLG0n0A8U1VhENg80zKJd+YROR0YMGum4WYuoXJ6J98vt0ihYeIFoapNddLML5MyNAGM9saSpkouDMSvD+iU14i7V8ix1ia1Tb9ogog==";

    const D1_SIGNATURE: &str = "73813ea128535f7945c17f81069c6b8045361375";
    const D1_ENCRYPT: &str =
        "5DJFWzjRNOQk+5GSZxW+VpU/+Yf0KeplvXZ8LNdyQj5iN6tX2KSwwhy5oymzMpsFAiG4RS3L0/vY7TX4ZwLTFA==";

    fn v1() -> CallbackCrypto {
        CallbackCrypto::new(
            V1_TOKEN,
            AesKey::parse(V1_KEY).expect("V1 key"),
            V1_RECEIVE_ID,
        )
    }

    fn v3() -> CallbackCrypto {
        CallbackCrypto::new(
            V3_TOKEN,
            AesKey::parse(V3_KEY).expect("V3 key"),
            V3_RECEIVE_ID,
        )
    }

    /// Decrypts without removing or checking anything, to inspect the exact plaintext.
    fn raw_plaintext(crypto: &CallbackCrypto, encrypt: &str) -> Vec<u8> {
        let mut buf = STANDARD.decode(encrypt).expect("base64");
        decrypt_blocks(&crypto.key, &mut buf)
            .expect("whole blocks")
            .to_vec()
    }

    /// Encrypts a hand-made plaintext (a multiple of 16 bytes) with no padding added.
    fn raw_encrypt(crypto: &CallbackCrypto, plaintext: &[u8]) -> String {
        let mut buf = plaintext.to_vec();
        STANDARD.encode(encrypt_blocks(&crypto.key, &mut buf))
    }

    /// A plaintext with the documented layout for V3, before padding.
    fn v3_layout(msg: &[u8]) -> Vec<u8> {
        let mut buf = V4_PREFIX.to_vec();
        let len = u32::try_from(msg.len()).expect("short");
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(msg);
        buf.extend_from_slice(V3_RECEIVE_ID.as_bytes());
        buf
    }

    /// `v3_layout`, then zeros up to whole AES blocks once `tail` (the padding under test) is
    /// appended; the padding check comes before the layout check, so the zeros do not matter.
    fn v3_with_raw_tail(msg: &[u8], tail: &[u8]) -> Vec<u8> {
        let mut buf = v3_layout(msg);
        let fill = (AES_BLOCK - (buf.len() + tail.len()) % AES_BLOCK) % AES_BLOCK;
        buf.extend(std::iter::repeat_n(0, fill));
        buf.extend_from_slice(tail);
        buf
    }

    // --- Vectors of PROTOCOL §1.7 ------------------------------------------------------

    #[test]
    fn real_check_url_capture_verifies_and_decrypts() {
        let plaintext = v1()
            .verify_and_decrypt(V1_SIGNATURE, V1_TIMESTAMP, V1_NONCE, V1_ENCRYPT)
            .expect("V1 verifies and decrypts");
        assert_eq!(plaintext, V1_PLAINTEXT);
    }

    #[test]
    fn real_check_url_capture_has_32_byte_padding_and_the_documented_prefix() {
        let raw = raw_plaintext(&v1(), V1_ENCRYPT);
        assert_eq!(raw.len(), 96);
        assert_eq!(raw.last(), Some(&31));
        assert_eq!(&raw[..16], b"l7Y3EcX2CU5w8av3");
    }

    #[test]
    fn suite_url_check_verifies_and_decrypts() {
        let plaintext = v3()
            .verify_and_decrypt(V3_SIGNATURE, V3_TIMESTAMP, V3_NONCE, V3_ENCRYPT)
            .expect("V3 verifies and decrypts");
        assert_eq!(plaintext, V3_PLAINTEXT);
        let raw = raw_plaintext(&v3(), V3_ENCRYPT);
        assert_eq!((raw.len(), raw.last()), (160, Some(&22)));
    }

    #[test]
    fn suite_url_check_with_another_nonce_fails_the_signature_and_is_not_decrypted() {
        assert_eq!(
            v3().verify_and_decrypt(V3_SIGNATURE, V3_TIMESTAMP, "xxxxx", V3_ENCRYPT),
            Err(CryptoError::BadSignature)
        );
    }

    #[test]
    fn signature_is_checked_before_anything_is_decoded() {
        // Garbage that would fail base64: the signature error must win.
        assert_eq!(
            v3().verify_and_decrypt(V3_SIGNATURE, V3_TIMESTAMP, V3_NONCE, "%%%"),
            Err(CryptoError::BadSignature)
        );
    }

    #[test]
    fn encryption_with_fixed_prefix_reproduces_the_published_vector() {
        assert_eq!(
            v3().encrypt_with_prefix(V3_PLAINTEXT, V4_PREFIX),
            V4_ENCRYPT
        );
        let reply =
            v3().encrypted_reply_with_prefix(V3_PLAINTEXT, V3_TIMESTAMP, V3_NONCE, V4_PREFIX);
        assert_eq!(
            reply,
            EncryptedReply {
                msg_signature: V4_SIGNATURE.to_owned(),
                time_stamp: V3_TIMESTAMP.to_owned(),
                nonce: V3_NONCE.to_owned(),
                encrypt: V4_ENCRYPT.to_owned(),
            }
        );
    }

    #[test]
    fn success_reply_with_fixed_prefix_matches_the_regression_value() {
        let reply = v3().encrypted_reply_with_prefix(SUCCESS, V3_TIMESTAMP, V3_NONCE, V4_PREFIX);
        assert_eq!(reply.encrypt, D1_ENCRYPT);
        assert_eq!(reply.msg_signature, D1_SIGNATURE);
    }

    #[test]
    fn success_reply_decrypts_to_success_and_its_signature_verifies() {
        let crypto = v1();
        let reply = crypto.success_reply(V1_TIMESTAMP, V1_NONCE);
        assert_eq!(
            (reply.time_stamp.as_str(), reply.nonce.as_str()),
            (V1_TIMESTAMP, V1_NONCE)
        );
        assert_eq!(
            crypto.verify_and_decrypt(
                &reply.msg_signature,
                &reply.time_stamp,
                &reply.nonce,
                &reply.encrypt
            ),
            Ok(SUCCESS.to_owned())
        );
    }

    #[test]
    fn reply_serializes_with_exactly_dingtalks_field_names() {
        let reply = v3().encrypted_reply_with_prefix(SUCCESS, V3_TIMESTAMP, V3_NONCE, V4_PREFIX);
        let json = serde_json::to_value(&reply).expect("serializable");
        assert_eq!(
            json,
            serde_json::json!({
                "msg_signature": D1_SIGNATURE,
                "timeStamp": V3_TIMESTAMP,
                "nonce": V3_NONCE,
                "encrypt": D1_ENCRYPT,
            })
        );
    }

    // --- Refusals ----------------------------------------------------------------------

    #[test]
    fn ciphertext_for_another_receive_id_is_refused_and_names_both_ids() {
        let other = CallbackCrypto::new(
            V1_TOKEN,
            AesKey::parse(V1_KEY).expect("V1 key"),
            "dingotherapp",
        );
        let err = other.decrypt(V1_ENCRYPT).unwrap_err();
        assert_eq!(
            err,
            CryptoError::WrongReceiveId {
                expected: "dingotherapp".to_owned(),
                found: V1_RECEIVE_ID.to_owned(),
            }
        );
        assert!(!err.is_authentication_failure());
        assert!(!err.to_string().contains(V1_KEY));
    }

    #[test]
    fn ciphertext_under_another_key_is_refused_without_panicking() {
        let wrong_key = CallbackCrypto::new(
            V1_TOKEN,
            AesKey::parse(V3_KEY).expect("V3 key"),
            V1_RECEIVE_ID,
        );
        assert!(wrong_key.decrypt(V1_ENCRYPT).is_err());
    }

    #[test]
    fn tampered_ciphertext_never_yields_the_original_message() {
        let crypto = v1();
        let original = STANDARD.decode(V1_ENCRYPT).expect("base64");
        for index in 0..original.len() {
            let mut tampered = original.clone();
            tampered[index] ^= 0x01;
            let encrypt = STANDARD.encode(&tampered);
            assert_ne!(
                crypto.decrypt(&encrypt),
                Ok(V1_PLAINTEXT.to_owned()),
                "flip at byte {index}"
            );
            assert_eq!(
                crypto.verify_and_decrypt(V1_SIGNATURE, V1_TIMESTAMP, V1_NONCE, &encrypt),
                Err(CryptoError::BadSignature)
            );
        }
    }

    #[test]
    fn flipped_length_field_is_a_layout_error() {
        // Flipping ciphertext byte 0 flips plaintext byte 16, the top byte of the length.
        let mut tampered = STANDARD.decode(V1_ENCRYPT).expect("base64");
        tampered[0] ^= 0x80;
        assert_eq!(
            v1().decrypt(&STANDARD.encode(&tampered)),
            Err(CryptoError::BadLayout {
                plaintext_len: 65,
                declared_msg_len: Some(0x8000_0000 + 25),
            })
        );
    }

    #[test]
    fn encrypt_that_is_not_base64_is_refused() {
        for bad in ["not base64!", "abc", "YWJj"] {
            let err = v1().decrypt(bad).unwrap_err();
            // "YWJj" is valid base64 for 3 bytes: a length error, not an encoding error.
            if bad == "YWJj" {
                assert_eq!(err, CryptoError::BadCiphertextLength { len: 3 });
            } else {
                assert_eq!(err, CryptoError::BadBase64);
            }
        }
    }

    #[test]
    fn empty_or_partial_block_ciphertext_is_refused() {
        assert_eq!(
            v1().decrypt(""),
            Err(CryptoError::BadCiphertextLength { len: 0 })
        );
        let seventeen = STANDARD.encode([7u8; 17]);
        assert_eq!(
            v1().decrypt(&seventeen),
            Err(CryptoError::BadCiphertextLength { len: 17 })
        );
    }

    #[test]
    fn padding_byte_zero_is_refused() {
        let crypto = v3();
        let plaintext = v3_with_raw_tail(b"{}", &[0]);
        assert_eq!(
            crypto.decrypt(&raw_encrypt(&crypto, &plaintext)),
            Err(CryptoError::BadPadding)
        );
    }

    #[test]
    fn padding_byte_above_32_is_refused() {
        let crypto = v3();
        let plaintext = v3_with_raw_tail(b"{}", &[33; 33]);
        assert_eq!(
            crypto.decrypt(&raw_encrypt(&crypto, &plaintext)),
            Err(CryptoError::BadPadding)
        );
    }

    #[test]
    fn padding_with_inconsistent_bytes_is_refused() {
        let crypto = v3();
        let plaintext = v3_with_raw_tail(b"{}", &[4, 4, 3, 4]);
        assert_eq!(
            crypto.decrypt(&raw_encrypt(&crypto, &plaintext)),
            Err(CryptoError::BadPadding)
        );
    }

    #[test]
    fn padding_longer_than_the_plaintext_is_refused() {
        let crypto = v3();
        assert_eq!(
            crypto.decrypt(&raw_encrypt(&crypto, &[32; 16])),
            Err(CryptoError::BadPadding)
        );
    }

    #[test]
    fn ciphertext_padded_to_16_bytes_like_the_go_and_rust_samples_still_decrypts() {
        let crypto = v3();
        let msg = r#"{"EventType":"padded_to_16"}"#;
        let mut plaintext = v3_layout(msg.as_bytes());
        let pad = AES_BLOCK - plaintext.len() % AES_BLOCK;
        plaintext.extend(std::iter::repeat_n(u8::try_from(pad).expect("small"), pad));
        assert_ne!(
            plaintext.len() % PAD_BLOCK,
            0,
            "test needs padding 32 would not give"
        );
        assert_eq!(
            crypto.decrypt(&raw_encrypt(&crypto, &plaintext)),
            Ok(msg.to_owned())
        );
    }

    #[test]
    fn plaintext_too_short_for_prefix_and_length_is_a_layout_error() {
        let crypto = v3();
        let mut plaintext = vec![b'a'; 16];
        plaintext.extend_from_slice(&[0, 0]);
        plaintext.extend(std::iter::repeat_n(14, 14));
        assert_eq!(
            crypto.decrypt(&raw_encrypt(&crypto, &plaintext)),
            Err(CryptoError::BadLayout {
                plaintext_len: 18,
                declared_msg_len: None
            })
        );
    }

    #[test]
    fn declared_length_beyond_the_plaintext_is_a_layout_error() {
        let crypto = v3();
        let mut plaintext = v3_layout(b"{}");
        plaintext[16..20].copy_from_slice(&1000u32.to_be_bytes());
        let pad = PAD_BLOCK - plaintext.len() % PAD_BLOCK;
        plaintext.extend(std::iter::repeat_n(u8::try_from(pad).expect("small"), pad));
        let err = crypto
            .decrypt(&raw_encrypt(&crypto, &plaintext))
            .unwrap_err();
        assert_eq!(
            err,
            CryptoError::BadLayout {
                plaintext_len: 16 + 4 + 2 + V3_RECEIVE_ID.len(),
                declared_msg_len: Some(1000)
            }
        );
        assert!(err
            .to_string()
            .contains("declared message length: 1000 bytes"));
    }

    #[test]
    fn message_that_is_not_utf8_is_refused() {
        let crypto = v3();
        let mut plaintext = v3_layout(&[0xff, 0xfe]);
        let pad = PAD_BLOCK - plaintext.len() % PAD_BLOCK;
        plaintext.extend(std::iter::repeat_n(u8::try_from(pad).expect("small"), pad));
        assert_eq!(
            crypto.decrypt(&raw_encrypt(&crypto, &plaintext)),
            Err(CryptoError::NotUtf8)
        );
    }

    #[test]
    fn decryption_errors_are_not_authentication_failures() {
        for err in [
            CryptoError::BadBase64,
            CryptoError::BadCiphertextLength { len: 1 },
            CryptoError::BadPadding,
            CryptoError::BadLayout {
                plaintext_len: 0,
                declared_msg_len: None,
            },
            CryptoError::NotUtf8,
        ] {
            assert!(!err.is_authentication_failure(), "{err}");
        }
    }

    #[test]
    fn debug_output_hides_token_and_key_but_shows_receive_id() {
        let shown = format!("{:?}", v1());
        assert!(!shown.contains(V1_TOKEN), "{shown}");
        assert!(!shown.contains(V1_KEY), "{shown}");
        assert!(shown.contains(V1_RECEIVE_ID), "{shown}");
    }

    #[test]
    fn random_prefix_is_alphanumeric_and_changes_between_encryptions() {
        let crypto = v1();
        let first = crypto.encrypt(SUCCESS);
        let second = crypto.encrypt(SUCCESS);
        assert_ne!(first, second);
        for encrypt in [first, second] {
            let raw = raw_plaintext(&crypto, &encrypt);
            assert!(raw[..16].iter().all(u8::is_ascii_alphanumeric), "{raw:?}");
            assert_eq!(crypto.decrypt(&encrypt), Ok(SUCCESS.to_owned()));
        }
    }

    // --- Properties --------------------------------------------------------------------

    fn messages() -> impl Strategy<Value = String> {
        prop_oneof!["[a-z中文消息😀]{0,300}", any::<String>()]
    }

    proptest! {
        #[test]
        fn any_message_survives_encrypt_then_decrypt(msg in messages()) {
            let crypto = v1();
            prop_assert_eq!(crypto.decrypt(&crypto.encrypt(&msg)), Ok(msg));
        }

        #[test]
        fn non_ascii_messages_survive_encrypt_then_decrypt(msg in "[中文消息😀]{1,100}") {
            let crypto = v3();
            let reply = crypto.encrypted_reply(&msg, V3_TIMESTAMP, V3_NONCE);
            prop_assert_eq!(
                crypto.verify_and_decrypt(
                    &reply.msg_signature, &reply.time_stamp, &reply.nonce, &reply.encrypt
                ),
                Ok(msg)
            );
        }

        #[test]
        fn plaintext_layout_has_utf8_byte_length_and_32_byte_padding(
            msg in messages(),
            prefix in any::<[u8; 16]>(),
        ) {
            let crypto = v3();
            let raw = raw_plaintext(&crypto, &crypto.encrypt_with_prefix(&msg, &prefix));
            prop_assert_eq!(raw.len() % PAD_BLOCK, 0);
            prop_assert_eq!(&raw[..16], &prefix[..]);
            let declared = u32::from_be_bytes([raw[16], raw[17], raw[18], raw[19]]);
            prop_assert_eq!(usize::try_from(declared).ok(), Some(msg.len()));
            prop_assert_eq!(&raw[20..20 + msg.len()], msg.as_bytes());

            let pad = usize::from(*raw.last().expect("non-empty"));
            prop_assert!((1..=PAD_BLOCK).contains(&pad));
            prop_assert!(raw[raw.len() - pad..].iter().all(|&b| usize::from(b) == pad));
            prop_assert_eq!(20 + msg.len() + V3_RECEIVE_ID.len() + pad, raw.len());
            prop_assert_eq!(&raw[20 + msg.len()..raw.len() - pad], V3_RECEIVE_ID.as_bytes());
        }

        #[test]
        fn decrypting_arbitrary_bytes_returns_an_error_or_text_but_never_panics(
            bytes in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let _ = v1().decrypt(&STANDARD.encode(&bytes));
        }

        #[test]
        fn decrypting_arbitrary_whole_blocks_never_panics(
            blocks in prop::collection::vec(any::<[u8; 16]>(), 0..12),
        ) {
            let bytes: Vec<u8> = blocks.concat();
            let _ = v1().decrypt(&STANDARD.encode(&bytes));
        }

        #[test]
        fn decrypting_arbitrary_text_never_panics(text in any::<String>()) {
            let _ = v1().decrypt(&text);
        }
    }
}
