//! The HMAC-SHA256 `sign` of robot message callbacks (PROTOCOL §2.1) and custom group robots
//! (§4.9), which share one construction.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

use super::{check_timestamp_ms, CryptoError};

/// How far a robot callback's `timestamp` header may be from our clock, either way.
///
/// DingTalk's documentation calls a difference of more than one hour illegal; the sign covers
/// only the timestamp, so this window is also how long a captured request can be replayed
/// (de-duplicate on `msgId` to close that gap).
pub const ROBOT_SIGN_WINDOW: Duration = Duration::from_secs(60 * 60);

/// Computes `base64(HMAC-SHA256(key = secret, message = timestamp_ms + "\n" + secret))`.
///
/// Used to check incoming robot callbacks and to sign outgoing custom-robot webhook calls (the
/// caller URL-encodes the result for the query string there).
pub fn robot_sign(secret: &str, timestamp_ms: &str) -> String {
    let mut mac =
        <Hmac<Sha256>>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(timestamp_ms.as_bytes());
    mac.update(b"\n");
    mac.update(secret.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Authenticates a robot callback from its `timestamp` and `sign` headers.
///
/// The timestamp must be milliseconds within `window` of `now_ms` (pass the real clock and
/// [`ROBOT_SIGN_WINDOW`] in production), and `sign` must equal [`robot_sign`] over the header
/// exactly as received; the comparison takes constant time.
pub fn verify_robot_sign(
    secret: &str,
    timestamp_header: &str,
    sign: &str,
    now_ms: i64,
    window: Duration,
) -> Result<(), CryptoError> {
    check_timestamp_ms(timestamp_header, now_ms, window)?;
    let expected = robot_sign(secret, timestamp_header);
    if bool::from(expected.as_bytes().ct_eq(sign.as_bytes())) {
        Ok(())
    } else {
        Err(CryptoError::BadRobotSign)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "testAppSecret123";
    const TS_HEADER: &str = "1577262236757";
    const TS: i64 = 1_577_262_236_757;
    const SIGN: &str = "/u/NmL78bEwbWCrXKtyloL0DktNIZ2Q7oKeLE4xd5wU=";
    const HOUR_MS: i64 = 3_600_000;

    fn verify_at(now_ms: i64) -> Result<(), CryptoError> {
        verify_robot_sign(SECRET, TS_HEADER, SIGN, now_ms, ROBOT_SIGN_WINDOW)
    }

    #[test]
    fn robot_sign_matches_the_protocol_example() {
        assert_eq!(robot_sign(SECRET, TS_HEADER), SIGN);
    }

    #[test]
    fn robot_sign_with_fresh_timestamp_is_accepted() {
        assert_eq!(verify_at(TS), Ok(()));
        assert_eq!(verify_at(TS + 1_234), Ok(()));
    }

    #[test]
    fn robot_sign_exactly_one_hour_old_or_ahead_is_accepted() {
        assert_eq!(ROBOT_SIGN_WINDOW.as_millis(), 3_600_000);
        assert_eq!(verify_at(TS + HOUR_MS), Ok(()));
        assert_eq!(verify_at(TS - HOUR_MS), Ok(()));
    }

    #[test]
    fn robot_sign_one_hour_and_one_millisecond_old_is_refused() {
        assert_eq!(
            verify_at(TS + HOUR_MS + 1),
            Err(CryptoError::Stale {
                skew_ms: HOUR_MS + 1,
                max_skew_ms: 3_600_000
            })
        );
    }

    #[test]
    fn robot_sign_from_more_than_one_hour_in_the_future_is_refused() {
        assert_eq!(
            verify_at(TS - HOUR_MS - 1),
            Err(CryptoError::Stale {
                skew_ms: -HOUR_MS - 1,
                max_skew_ms: 3_600_000
            })
        );
    }

    #[test]
    fn robot_sign_with_non_numeric_timestamp_is_refused() {
        let err = verify_robot_sign(SECRET, "yesterday", SIGN, TS, ROBOT_SIGN_WINDOW).unwrap_err();
        assert_eq!(
            err,
            CryptoError::BadTimestamp {
                found: "yesterday".to_owned()
            }
        );
        assert!(err.is_authentication_failure());
    }

    #[test]
    fn wrong_robot_sign_is_refused() {
        let other_secret = robot_sign("anotherSecret", TS_HEADER);
        let err =
            verify_robot_sign(SECRET, TS_HEADER, &other_secret, TS, ROBOT_SIGN_WINDOW).unwrap_err();
        assert_eq!(err, CryptoError::BadRobotSign);
        assert!(err.is_authentication_failure());

        for bad in ["", "not base64", &SIGN[..SIGN.len() - 1]] {
            assert_eq!(
                verify_robot_sign(SECRET, TS_HEADER, bad, TS, ROBOT_SIGN_WINDOW),
                Err(CryptoError::BadRobotSign)
            );
        }
    }

    #[test]
    fn robot_sign_covers_the_timestamp_as_sent() {
        // Same instant, different text: the sign was made over the text.
        let padded = format!("0{TS_HEADER}");
        assert_eq!(
            verify_robot_sign(SECRET, &padded, SIGN, TS, ROBOT_SIGN_WINDOW),
            Err(CryptoError::BadRobotSign)
        );
    }

    #[test]
    fn robot_sign_error_does_not_reveal_the_secret() {
        let err = verify_robot_sign(SECRET, TS_HEADER, "x", TS, ROBOT_SIGN_WINDOW).unwrap_err();
        assert!(!err.to_string().contains(SECRET));
        assert!(!format!("{err:?}").contains(SECRET));
    }
}
