//! Timestamp freshness, shared by the robot sign check and the encrypted-callback check.
//!
//! Both DingTalk schemes put a millisecond timestamp in the request and leave it to us to refuse
//! old (replayed) or far-future ones; the arithmetic is the same, so it lives here once.

use std::time::Duration;

use super::CryptoError;

/// How much of a refused timestamp is echoed in [`CryptoError::BadTimestamp`].
const ECHO_CHARS: usize = 32;

/// Parses a millisecond timestamp and checks `|now_ms - timestamp| <= max_skew`.
///
/// The caller passes the clock (`now_ms`, milliseconds since the Unix epoch) so that this stays
/// a pure function. The timestamp must be plain decimal digits (no sign, no fraction, no
/// exponent) that fit an `i64`; the boundary `max_skew` itself is accepted. Returns the parsed
/// timestamp.
pub fn check_timestamp_ms(
    timestamp_ms: &str,
    now_ms: i64,
    max_skew: Duration,
) -> Result<i64, CryptoError> {
    let timestamp = parse_millis(timestamp_ms)?;
    let distance = u128::from(now_ms.abs_diff(timestamp));
    if distance <= max_skew.as_millis() {
        Ok(timestamp)
    } else {
        Err(CryptoError::Stale {
            skew_ms: now_ms.saturating_sub(timestamp),
            max_skew_ms: u64::try_from(max_skew.as_millis()).unwrap_or(u64::MAX),
        })
    }
}

/// Accepts only ASCII digits, because `i64::from_str` would also take a leading `+`.
fn parse_millis(text: &str) -> Result<i64, CryptoError> {
    let refuse = || CryptoError::BadTimestamp {
        found: text.chars().take(ECHO_CHARS).collect(),
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refuse());
    }
    text.parse().map_err(|_| refuse())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: i64 = 1_577_262_236_757;
    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn timestamp_within_the_window_is_returned_parsed() {
        assert_eq!(check_timestamp_ms("1577262236757", TS + 5, HOUR), Ok(TS));
    }

    #[test]
    fn window_boundary_is_inclusive_in_both_directions() {
        assert_eq!(
            check_timestamp_ms("1577262236757", TS + 3_600_000, HOUR),
            Ok(TS)
        );
        assert_eq!(
            check_timestamp_ms("1577262236757", TS - 3_600_000, HOUR),
            Ok(TS)
        );
    }

    #[test]
    fn one_millisecond_past_the_window_is_stale() {
        assert_eq!(
            check_timestamp_ms("1577262236757", TS + 3_600_001, HOUR),
            Err(CryptoError::Stale {
                skew_ms: 3_600_001,
                max_skew_ms: 3_600_000
            })
        );
        assert_eq!(
            check_timestamp_ms("1577262236757", TS - 3_600_001, HOUR),
            Err(CryptoError::Stale {
                skew_ms: -3_600_001,
                max_skew_ms: 3_600_000
            })
        );
    }

    #[test]
    fn timestamp_in_seconds_instead_of_milliseconds_is_stale() {
        let err = check_timestamp_ms("1577262236", TS, HOUR).unwrap_err();
        assert!(matches!(err, CryptoError::Stale { .. }));
        assert!(err.is_authentication_failure());
    }

    #[test]
    fn timestamp_that_is_not_decimal_digits_is_refused() {
        for bad in [
            "",
            "abc",
            "+1577262236757",
            "-1",
            "1.5e12",
            " 1577262236757",
            "12a",
        ] {
            assert_eq!(
                check_timestamp_ms(bad, TS, HOUR),
                Err(CryptoError::BadTimestamp {
                    found: bad.to_owned()
                }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn timestamp_overflowing_i64_is_refused_and_long_input_is_not_echoed_in_full() {
        let huge = "9".repeat(40);
        match check_timestamp_ms(&huge, TS, HOUR) {
            Err(CryptoError::BadTimestamp { found }) => assert_eq!(found.len(), ECHO_CHARS),
            other => panic!("expected BadTimestamp, got {other:?}"),
        }
    }

    #[test]
    fn extreme_clock_values_do_not_overflow() {
        let err = check_timestamp_ms(&i64::MAX.to_string(), i64::MIN, HOUR).unwrap_err();
        assert_eq!(
            err,
            CryptoError::Stale {
                skew_ms: i64::MIN,
                max_skew_ms: 3_600_000
            }
        );
        assert!(check_timestamp_ms("0", 0, Duration::MAX).is_ok());
    }

    #[test]
    fn timestamp_errors_are_authentication_failures() {
        assert!(CryptoError::BadTimestamp {
            found: String::new()
        }
        .is_authentication_failure());
    }
}
