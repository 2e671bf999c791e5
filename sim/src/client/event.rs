//! Encrypted event-subscription callbacks as DingTalk sends them (PROTOCOL §1): the JSON event
//! encrypted with the app's AES key and receiveId = AppKey, signed over token, timestamp and
//! nonce. All the crypto is `common::crypto`'s.

use common::crypto::{signature, AesKey, CallbackCrypto, CryptoError, EncryptedReply};
use common::secret::Secret;
use serde_json::{json, Value};

/// The app-side secrets DingTalk shares with an event subscription.
#[derive(Debug, Clone)]
pub struct EventSigner {
    token: Secret,
    crypto: CallbackCrypto,
}

/// One sealed event, ready to post: query `signature`, `timestamp`, `nonce` and body
/// `{"encrypt": …}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedEvent {
    /// `signature` query parameter.
    pub signature: String,
    /// `timestamp` query parameter (ms).
    pub timestamp: String,
    /// `nonce` query parameter.
    pub nonce: String,
    /// The body's `encrypt`.
    pub encrypt: String,
}

impl SealedEvent {
    /// The request body.
    pub fn body(&self) -> Value {
        json!({ "encrypt": self.encrypt })
    }

    /// The query parameters.
    pub fn query(&self) -> [(&'static str, &str); 3] {
        [
            ("signature", &self.signature),
            ("timestamp", &self.timestamp),
            ("nonce", &self.nonce),
        ]
    }
}

impl EventSigner {
    /// From the console's Token and 43-character AES key, for the app `app_key` (the receiveId).
    pub fn new(token: &str, aes_key: &str, app_key: &str) -> Result<Self, CryptoError> {
        Ok(Self {
            token: Secret::new(token),
            crypto: CallbackCrypto::new(token, AesKey::parse(aes_key)?, app_key),
        })
    }

    /// Encrypts and signs `event` (its JSON text) with the given timestamp and nonce.
    pub fn seal(&self, event: &str, timestamp: &str, nonce: &str) -> SealedEvent {
        let encrypt = self.crypto.encrypt(event);
        SealedEvent {
            signature: signature(self.token.expose(), timestamp, nonce, &encrypt),
            timestamp: timestamp.to_owned(),
            nonce: nonce.to_owned(),
            encrypt,
        }
    }

    /// Verifies and decrypts the receiver's encrypted answer (it should say `success`).
    pub fn open_reply(&self, reply: &EncryptedReply) -> Result<String, CryptoError> {
        self.crypto.verify_and_decrypt(
            &reply.msg_signature,
            &reply.time_stamp,
            &reply.nonce,
            &reply.encrypt,
        )
    }
}

/// The URL-verification event DingTalk sends when the callback URL is saved.
pub fn check_url() -> Value {
    json!({ "EventType": "check_url" })
}

/// A contact-change event (`user_modify_org`) for `user_ids`, with a unique id, as the load
/// generator sends.
pub fn user_modified(corp_id: &str, user_ids: &[&str], now_ms: i64) -> Value {
    json!({
        "EventType": "user_modify_org",
        "EventId": crate::ids::alphanumeric(24),
        "CorpId": corp_id,
        "UserId": user_ids,
        "TimeStamp": now_ms.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use common::crypto::verify_signature;

    use super::*;

    const KEY: &str = "4g5j64qlyl3zvetqxz5jiocdr586fn2zvjpa8zls3ij";

    #[test]
    fn sealed_event_verifies_and_decrypts_with_common_crypto() {
        let signer = EventSigner::new("tok", KEY, "dingapp").unwrap();
        let event = check_url().to_string();
        let sealed = signer.seal(&event, "1700000000000", "abcd1234");
        assert_eq!(
            verify_signature(
                &sealed.signature,
                "tok",
                "1700000000000",
                "abcd1234",
                &sealed.encrypt
            ),
            Ok(())
        );
        let receiver = CallbackCrypto::new("tok", AesKey::parse(KEY).unwrap(), "dingapp");
        assert_eq!(receiver.decrypt(&sealed.encrypt), Ok(event));
    }

    #[test]
    fn the_receivers_success_reply_opens() {
        let signer = EventSigner::new("tok", KEY, "dingapp").unwrap();
        let receiver = CallbackCrypto::new("tok", AesKey::parse(KEY).unwrap(), "dingapp");
        let reply = receiver.success_reply("1", "n");
        assert_eq!(signer.open_reply(&reply), Ok("success".to_owned()));
    }
}
