//! The SHA-1 signature of event-subscription callbacks and of our replies (PROTOCOL §1.2).

use sha1::{Digest as _, Sha1};
use subtle::ConstantTimeEq as _;

use super::CryptoError;

/// Length of a SHA-1 digest in bytes.
const DIGEST_LEN: usize = 20;

/// Computes the callback signature: lowercase hex SHA-1 of the four values sorted bytewise and
/// concatenated without separator.
///
/// DingTalk signs each callback this way, and expects the same construction in the
/// `msg_signature` of our reply.
pub fn signature(token: &str, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    hex_lower(&digest(token, timestamp, nonce, encrypt))
}

/// Lowercase hexadecimal of `bytes`, two digits per byte (digests in signatures and keys).
pub fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(2 * bytes.len());
    for &byte in bytes {
        hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    hex
}

/// Checks a received callback signature in constant time, so a forger learns nothing from
/// response timing.
///
/// The signature must be 40 hexadecimal characters (either case); anything else is
/// [`CryptoError::MalformedSignature`], a mismatch is [`CryptoError::BadSignature`].
pub fn verify_signature(
    signature: &str,
    token: &str,
    timestamp: &str,
    nonce: &str,
    encrypt: &str,
) -> Result<(), CryptoError> {
    let claimed = parse_hex_digest(signature)?;
    let expected = digest(token, timestamp, nonce, encrypt);
    if bool::from(expected[..].ct_eq(&claimed[..])) {
        Ok(())
    } else {
        Err(CryptoError::BadSignature)
    }
}

/// SHA-1 over the bytewise-sorted concatenation.
fn digest(token: &str, timestamp: &str, nonce: &str, encrypt: &str) -> [u8; DIGEST_LEN] {
    let mut parts = [token, timestamp, nonce, encrypt];
    // `str` orders by bytes, which is the ordinal order DingTalk uses (not a locale order).
    parts.sort_unstable();
    let mut hasher = Sha1::new();
    for part in parts {
        hasher.update(part.as_bytes());
    }
    hasher.finalize().into()
}

/// Decodes 40 hex characters into a digest.
fn parse_hex_digest(hex: &str) -> Result<[u8; DIGEST_LEN], CryptoError> {
    let malformed = || CryptoError::MalformedSignature { len: hex.len() };
    if hex.len() != 2 * DIGEST_LEN {
        return Err(malformed());
    }
    let mut digest = [0; DIGEST_LEN];
    for (byte, pair) in digest.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        let high = hex_value(pair[0]).ok_or_else(malformed)?;
        let low = hex_value(pair[1]).ok_or_else(malformed)?;
        *byte = high << 4 | low;
    }
    Ok(digest)
}

/// The value of one hexadecimal digit.
fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_two_lowercase_digits_per_byte() {
        assert_eq!(hex_lower(&[]), "");
        assert_eq!(hex_lower(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        let all: Vec<u8> = (0..=255).collect();
        let expected: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex_lower(&all), expected);
    }

    const V1_ENCRYPT: &str = "0vJiX6vliEpwG3U45CtXqi+m8PXbQRARJ8p8BbDuD1EMTDf0jKpQ79QS93qEk7XHpP6u+oTTrd15NRPvNvmBKyDCYxxOK+HZeKju4yhELOFchzNukR+t8SB/qk4ROMu3";
    const V1_SIGNATURE: &str = "03044561471240d4a14bb09372dfcfd4fd0e40cb";

    fn v1_verify(signature: &str) -> Result<(), CryptoError> {
        verify_signature(signature, "mryue", "1608001896814", "WL4PK6yA", V1_ENCRYPT)
    }

    #[test]
    fn signature_of_the_real_check_url_capture_matches() {
        assert_eq!(
            signature("mryue", "1608001896814", "WL4PK6yA", V1_ENCRYPT),
            V1_SIGNATURE
        );
        assert_eq!(v1_verify(V1_SIGNATURE), Ok(()));
    }

    #[test]
    fn signature_sorts_its_inputs_so_argument_order_does_not_matter() {
        assert_eq!(
            signature(V1_ENCRYPT, "WL4PK6yA", "mryue", "1608001896814"),
            V1_SIGNATURE
        );
    }

    #[test]
    fn signature_sorts_bytewise_with_uppercase_before_lowercase() {
        // Bytewise, "B" < "a"; a case-insensitive sort would give "aB".
        let expected = {
            let mut hasher = Sha1::new();
            hasher.update(b"Ba");
            hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        assert_eq!(signature("a", "B", "", ""), expected);
    }

    #[test]
    fn uppercase_hex_signature_is_accepted() {
        assert_eq!(v1_verify(&V1_SIGNATURE.to_uppercase()), Ok(()));
    }

    #[test]
    fn signature_for_other_values_is_refused() {
        let other = signature("mryue", "1608001896815", "WL4PK6yA", V1_ENCRYPT);
        assert_eq!(v1_verify(&other), Err(CryptoError::BadSignature));
    }

    #[test]
    fn signature_of_wrong_length_is_malformed() {
        assert_eq!(
            v1_verify(&V1_SIGNATURE[..39]),
            Err(CryptoError::MalformedSignature { len: 39 })
        );
        assert_eq!(
            v1_verify(&format!("{V1_SIGNATURE}0")),
            Err(CryptoError::MalformedSignature { len: 41 })
        );
        assert_eq!(
            v1_verify(""),
            Err(CryptoError::MalformedSignature { len: 0 })
        );
    }

    #[test]
    fn signature_with_non_hex_characters_is_malformed() {
        let non_hex = format!("{}g", &V1_SIGNATURE[..39]);
        assert_eq!(
            v1_verify(&non_hex),
            Err(CryptoError::MalformedSignature { len: 40 })
        );
        // 20 two-byte characters: 40 bytes, but not hex.
        let multibyte = "é".repeat(20);
        assert_eq!(
            v1_verify(&multibyte),
            Err(CryptoError::MalformedSignature { len: 40 })
        );
    }

    #[test]
    fn signature_failures_are_authentication_failures() {
        assert!(CryptoError::BadSignature.is_authentication_failure());
        assert!(CryptoError::MalformedSignature { len: 3 }.is_authentication_failure());
    }
}
