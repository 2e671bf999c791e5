//! The callback AES key, parsed once from the console's 43-character form.

use std::fmt;
use std::str::FromStr;

use base64::alphabet;
use base64::engine::{GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;

use super::CryptoError;

/// Number of characters of the key as shown in the DingTalk console.
const ENCODED_LEN: usize = 43;

/// Standard base64 that ignores the two unused bits left by `43 chars + "="`.
///
/// Real console keys often have those bits set, and a strict decoder refuses them
/// (PROTOCOL §1.3), so the reference implementations all decode leniently.
const KEY_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// The 32-byte AES-256 key of an event subscription ("EncodingAESKey").
///
/// Holding an `AesKey` proves the configured string had the right shape, so encryption and
/// decryption never re-check it. Its `Debug` output is `***` so it cannot leak through logs.
#[derive(Clone)]
pub struct AesKey {
    bytes: [u8; 32],
}

impl AesKey {
    /// Parses the 43-character key from the console: `base64(key + "=")` must give 32 bytes.
    pub fn parse(encoded: &str) -> Result<Self, CryptoError> {
        let found = encoded.chars().count();
        if found != ENCODED_LEN {
            return Err(CryptoError::InvalidKeyLength { found });
        }
        let decoded = KEY_ENGINE
            .decode(format!("{encoded}="))
            .map_err(|_| CryptoError::InvalidKeyEncoding)?;
        let bytes = <[u8; 32]>::try_from(decoded.as_slice())
            .map_err(|_| CryptoError::InvalidKeyEncoding)?;
        Ok(Self { bytes })
    }

    /// The AES-256 key.
    pub(super) fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// The CBC initialisation vector, which DingTalk fixes to the first 16 key bytes.
    pub(super) fn iv(&self) -> [u8; 16] {
        let mut iv = [0; 16];
        iv.copy_from_slice(&self.bytes[..16]);
        iv
    }
}

impl FromStr for AesKey {
    type Err = CryptoError;

    /// Same as [`AesKey::parse`], so configuration code can use `str::parse`.
    fn from_str(encoded: &str) -> Result<Self, Self::Err> {
        Self::parse(encoded)
    }
}

impl fmt::Debug for AesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD;

    use super::*;

    const V1_KEY: &str = "Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7";
    const V3_KEY: &str = "4g5j64qlyl3zvetqxz5jiocdr586fn2zvjpa8zls3ij";

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn console_key_with_nonzero_trailing_bits_is_accepted_although_strict_base64_refuses_it() {
        assert!(STANDARD.decode(format!("{V1_KEY}=")).is_err());
        assert!(AesKey::parse(V1_KEY).is_ok());
    }

    #[test]
    fn key_bytes_are_base64_of_key_plus_padding_and_iv_is_their_first_half() {
        let key = AesKey::parse(V3_KEY).expect("V3 key is valid");
        assert_eq!(
            hex(key.bytes()),
            "e20e63eb8aa5ca5df3bdeb6ac73e638a871daf9f3a7e7db3be3a5af3396cde28"
        );
        assert_eq!(key.iv(), key.bytes()[..16]);
    }

    #[test]
    fn key_of_42_or_44_characters_is_refused_with_the_length_found() {
        assert_eq!(
            AesKey::parse(&V3_KEY[..42]).unwrap_err(),
            CryptoError::InvalidKeyLength { found: 42 }
        );
        let long = format!("{V3_KEY}a");
        assert_eq!(
            AesKey::parse(&long).unwrap_err(),
            CryptoError::InvalidKeyLength { found: 44 }
        );
        assert!(CryptoError::InvalidKeyLength { found: 44 }
            .to_string()
            .contains("exactly 43"));
    }

    #[test]
    fn key_length_counts_characters_not_bytes() {
        let key = "é".repeat(43);
        assert_eq!(
            AesKey::parse(&key).unwrap_err(),
            CryptoError::InvalidKeyEncoding
        );
    }

    #[test]
    fn key_outside_the_base64_alphabet_is_refused() {
        let key = format!("{}!", &V3_KEY[..42]);
        assert_eq!(
            AesKey::parse(&key).unwrap_err(),
            CryptoError::InvalidKeyEncoding
        );
        let url_safe = format!("{}-", &V3_KEY[..42]);
        assert_eq!(
            AesKey::parse(&url_safe).unwrap_err(),
            CryptoError::InvalidKeyEncoding
        );
    }

    #[test]
    fn key_parses_through_from_str() {
        let key: AesKey = V3_KEY.parse().expect("V3 key is valid");
        assert_eq!(key.bytes()[0], 0xe2);
    }

    #[test]
    fn key_debug_output_hides_the_key() {
        let key = AesKey::parse(V1_KEY).expect("V1 key is valid");
        assert_eq!(format!("{key:?}"), "***");
    }
}
