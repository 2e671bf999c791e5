//! The decryptor's padding and layout logic on arbitrary bytes.
//!
//! Input: one selector byte, then raw bytes (not base64). `selector & 1`:
//!
//! * 0 `ciphertext`: the bytes are base64-encoded and decrypted as the `encrypt` value (what an
//!   attacker without the key controls);
//! * 1 `plaintext`: the bytes are the *plaintext* — prefix, length field, message, receive id,
//!   padding, all chosen by the fuzzer — cut to whole AES blocks (or, with `selector & 2`,
//!   completed with PKCS#7-style padding to 16), encrypted with the real V3 key and IV, and
//!   decrypted; the result must equal an independent model of PROTOCOL §1.4–§1.5.
//!
//! Whatever decrypts goes on through `CallbackJson` → kind → normalize → event serialization.
#![no_main]

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use dingtalk_gateway_fuzz::{decrypted, expected_decryption, raw_encrypt, v3, Query};
use libfuzzer_sys::fuzz_target;

const QUERY: Query<'static> = Query {
    signature: "",
    timestamp: "1445827045067",
    nonce: "nEXhMP4r",
};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let card_route = selector & 4 != 0;
    let result = if selector & 1 == 0 {
        v3().decrypt(&STANDARD.encode(bytes))
    } else {
        let mut plaintext = bytes.to_vec();
        if selector & 2 == 0 {
            plaintext.truncate(plaintext.len() / 16 * 16);
        } else {
            let pad = 16 - plaintext.len() % 16;
            plaintext.resize(plaintext.len() + pad, pad as u8);
        }
        let result = v3().decrypt(&raw_encrypt(&plaintext));
        assert_eq!(
            result,
            expected_decryption(&plaintext),
            "plaintext {plaintext:?}"
        );
        result
    };
    match result {
        Ok(plaintext) => decrypted(&plaintext, QUERY, card_route),
        Err(err) => {
            let _ = std::hint::black_box(err.to_string());
        }
    }
});
