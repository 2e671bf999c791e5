//! The ingress callback path on arbitrary input.
//!
//! Input: one selector byte, then NUL-separated parts (NUL never occurs in JSON text).
//! `selector & 3` picks the mode, `selector & 4` the `/card` route:
//!
//! * 0 `plain`:   body ␀ signature ␀ timestamp ␀ nonce — the webhook body as received:
//!   `CallbackJson` → kind → robot_message and card_action → event serialization; a string `encrypt`
//!   field goes through verify_and_decrypt with the V3 subscription and the given query;
//!   subscription_event also runs on the body text.
//! * 1 `sealed`:  message ␀ timestamp ␀ nonce ␀ prefix — the message is encrypted and signed
//!   with the real V3 key first, so normalization runs behind a valid ciphertext:
//!   encrypt → `{"encrypt":…}` body → verify_and_decrypt → `CallbackJson` → kind → normalize.
//! * 2 `decrypt`: encrypt ␀ signature ␀ timestamp ␀ nonce — arbitrary (base64-ish) `encrypt`
//!   text through decrypt and verify_and_decrypt, then normalization if it ever decrypts.
//! * 3 `auth`:    a ␀ b ␀ c ␀ d ␀ e — verify_signature, verify_robot_sign, check_timestamp_ms
//!   and AesKey::parse on arbitrary strings; `now` and the window come from the input too.
#![no_main]

use std::time::Duration;

use dingtalk_gateway_fuzz::{auth, decrypt_text, plain_body, sealed, split, text, Query, NOW_MS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let card_route = selector & 4 != 0;
    match selector & 3 {
        0 => {
            let [body, signature, timestamp, nonce] = split::<4>(rest);
            let (signature, timestamp, nonce) = (text(signature), text(timestamp), text(nonce));
            let query = Query {
                signature: &signature,
                timestamp: &timestamp,
                nonce: &nonce,
            };
            plain_body(body, query, card_route);
        }
        1 => {
            let [msg, timestamp, nonce, prefix_bytes] = split::<4>(rest);
            let mut prefix = [b'0'; 16];
            for (slot, byte) in prefix.iter_mut().zip(prefix_bytes) {
                *slot = *byte;
            }
            sealed(
                &text(msg),
                &text(timestamp),
                &text(nonce),
                &prefix,
                card_route,
            );
        }
        2 => {
            let [encrypt, signature, timestamp, nonce] = split::<4>(rest);
            let (signature, timestamp, nonce) = (text(signature), text(timestamp), text(nonce));
            let query = Query {
                signature: &signature,
                timestamp: &timestamp,
                nonce: &nonce,
            };
            decrypt_text(&text(encrypt), query, card_route);
        }
        _ => {
            let [a, b, c, d, e] = split::<5>(rest);
            // `now` from the first 8 bytes of `e` when it has them (extremes included), else V3's.
            let now_ms = e.get(..8).map_or(NOW_MS, |b| {
                i64::from_le_bytes(b.try_into().expect("8 bytes"))
            });
            let window = match selector >> 3 & 3 {
                0 => Duration::from_secs(3600),
                1 => Duration::ZERO,
                2 => Duration::from_millis(300_000),
                _ => Duration::MAX,
            };
            let (a, b, c, d, e) = (text(a), text(b), text(c), text(d), text(e));
            auth([&a, &b, &c, &d, &e], now_ms, window);
        }
    }
});
