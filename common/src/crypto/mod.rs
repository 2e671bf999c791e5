//! DingTalk's request authentication and payload encryption, as pure functions.
//!
//! DingTalk authenticates what it sends us in two unrelated ways, and both live here so that
//! every service checks them the same way:
//!
//! * **Event-subscription callbacks** (PROTOCOL §1): the query string carries a SHA-1
//!   [`signature`] over the token, timestamp, nonce and body, and the body is AES-256-CBC
//!   ciphertext. [`CallbackCrypto`] verifies, decrypts, and builds the encrypted reply that
//!   DingTalk expects within 1500 ms.
//! * **Robot message callbacks** (PROTOCOL §2.1) and **custom group robots** (§4.9): an
//!   HMAC-SHA256 over the timestamp and the app secret, see [`robot_sign`] and
//!   [`verify_robot_sign`].
//!
//! Nothing in this module reads the clock, the network or the environment: the current time is
//! passed in (`now_ms`), keys are parsed once into [`AesKey`], and the only randomness is the
//! 16-byte prefix of [`CallbackCrypto::encrypt`], for which a deterministic
//! [`CallbackCrypto::encrypt_with_prefix`] exists.
//!
//! Every failure is a [`CryptoError`]; [`CryptoError::is_authentication_failure`] tells the HTTP
//! edge whether to answer 401 or 400.

mod callback;
mod error;
mod freshness;
mod key;
mod robot;
mod signature;

pub use callback::{CallbackCrypto, EncryptedReply};
pub use error::CryptoError;
pub use freshness::check_timestamp_ms;
pub use key::AesKey;
pub use robot::{robot_sign, verify_robot_sign, ROBOT_SIGN_WINDOW};
pub use signature::{hex_lower, signature, verify_signature};
