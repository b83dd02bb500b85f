//! Random values and digests: consent states, PKCE verifiers, nonces, task-key secrets, and the
//! keyed digests stored in their place.

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::OsRng;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// `bytes` of operating-system randomness, base64url without padding.
///
/// Used for consent `state` and OIDC `nonce` values: 32 bytes (256 bits) makes guessing hopeless
/// and the value carries no meaning, unlike the original's base64 of "user:task:id".
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// A fresh 256-bit key (AES-256) from the operating system, wiped from memory when dropped. A
/// plain byte array, so wiping it needs no optional feature of a dependency's dependency.
pub fn random_key() -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(key.as_mut_slice());
    key
}

/// SHA-256 digest. One-time values are stored only as digests, so a leaked database row cannot
/// be replayed against the callback.
pub fn sha256(value: &[u8]) -> Vec<u8> {
    Sha256::digest(value).to_vec()
}

/// HMAC-SHA256 of `value` under `key`: a digest only the holder of `key` can compute, so a
/// stolen table of them neither gives the values nor lets anyone add one of their own.
pub fn keyed_hash(key: &[u8], value: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length; the fallback only keeps this panic-free.
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(value);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => sha256(value),
    }
}

/// Compares digests without leaking, through timing, how many leading bytes matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_tokens_are_long_and_distinct() {
        let a = random_token(32);
        let b = random_token(32);
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }

    #[test]
    fn keyed_hashes_depend_on_the_key() {
        assert_eq!(keyed_hash(b"k1", b"v"), keyed_hash(b"k1", b"v"));
        assert_ne!(keyed_hash(b"k1", b"v"), keyed_hash(b"k2", b"v"));
        assert_ne!(keyed_hash(b"k1", b"v"), sha256(b"v"));
        assert_eq!(keyed_hash(b"k1", b"v").len(), 32);
    }

    #[test]
    fn digests_compare_by_value() {
        assert!(constant_time_eq(&sha256(b"x"), &sha256(b"x")));
        assert!(!constant_time_eq(&sha256(b"x"), &sha256(b"y")));
        assert!(!constant_time_eq(b"short", b"longer"));
    }
}
