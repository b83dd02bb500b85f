//! Sealing with AES-256-GCM under named keys: the newest key seals, every listed key opens, and the
//! row's id is bound in as associated data so a blob cannot be moved to another row.

use std::fmt;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use uuid::Uuid;
use zeroize::Zeroizing;

const NONCE_LEN: usize = 12;
const KEY_LEN: usize = 32;
/// Every AES-GCM ciphertext ends in a 16-byte tag: anything shorter was never sealed.
const TAG_LEN: usize = 16;

/// Names a key in `TOKEN_ENCRYPTION_KEYS`; stored beside every ciphertext so the key can rotate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyId(String);

impl KeyId {
    fn parse(raw: &str) -> Result<Self, KeyringError> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(KeyringError::BadKeyId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A sealed secret as stored: which key, the nonce, and the ciphertext with its GCM tag.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .field("len", &self.ciphertext.len())
            .finish()
    }
}

impl Sealed {
    /// One blob for secrets kept in a single column: `len(kid) | kid | nonce | ciphertext`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.key_id.len() + NONCE_LEN + self.ciphertext.len());
        // Key ids are at most 64 bytes (KeyId::parse), so the length fits one byte.
        out.push(self.key_id.len() as u8);
        out.extend_from_slice(self.key_id.as_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    pub fn from_bytes(blob: &[u8]) -> Result<Self, CryptoError> {
        let (&kid_len, rest) = blob.split_first().ok_or(CryptoError::Malformed)?;
        let kid_len = usize::from(kid_len);
        if rest.len() < kid_len + NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Malformed);
        }
        let (kid, rest) = rest.split_at(kid_len);
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        Ok(Self {
            key_id: String::from_utf8(kid.to_vec()).map_err(|_| CryptoError::Malformed)?,
            nonce: nonce.to_vec(),
            ciphertext: ciphertext.to_vec(),
        })
    }
}

/// What a ciphertext is bound to. It becomes the GCM associated data, so a ciphertext copied to
/// another row, another user or another purpose fails authentication instead of decrypting.
#[derive(Clone, Copy, Debug)]
pub struct Binding<'a> {
    pub purpose: &'static str,
    pub row_id: Uuid,
    pub user_id: &'a str,
}

impl Binding<'_> {
    fn associated_data(&self, key_id: &str) -> Vec<u8> {
        // Every field but the last has a fixed length or cannot hold '|', so the encoding is
        // unambiguous even when a user id contains the separator.
        format!(
            "token-broker/v1|{}|{}|{}|{}",
            self.purpose, self.row_id, key_id, self.user_id
        )
        .into_bytes()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyringError {
    #[error("no key given; expected one or more `kid:base64-of-32-bytes`, comma-separated")]
    Empty,
    #[error("each key must look like `kid:base64-of-32-bytes`")]
    BadEntry,
    #[error("a key id may hold only letters, digits, '-', '_' and '.', at most 64 of them")]
    BadKeyId,
    #[error("key `{0}` is not base64 of exactly 32 bytes")]
    BadKey(String),
    #[error("key id `{0}` appears twice")]
    DuplicateKeyId(String),
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("sealed with key `{0}`, which is not configured")]
    UnknownKey(String),
    #[error("ciphertext failed authentication (tampered, moved, or wrong key)")]
    Authentication,
    #[error("sealed value is malformed")]
    Malformed,
    #[error("encryption failed")]
    Encryption,
}

/// AES-256-GCM keys by id. The first key seals; every key opens what it sealed, so old
/// ciphertexts stay readable while `keys rotate` re-seals them.
pub struct Keyring {
    keys: Vec<(KeyId, Aes256Gcm)>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("Keyring")
            .field("key_ids", &ids)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// Parses `kid:base64,kid2:base64`. Decoded key bytes are zeroized once the cipher holds them.
    pub fn parse(spec: &str) -> Result<Self, KeyringError> {
        let mut keys: Vec<(KeyId, Aes256Gcm)> = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (kid, material) = entry.split_once(':').ok_or(KeyringError::BadEntry)?;
            let kid = KeyId::parse(kid.trim())?;
            if keys.iter().any(|(existing, _)| existing == &kid) {
                return Err(KeyringError::DuplicateKeyId(kid.0));
            }
            let bytes = Zeroizing::new(
                STANDARD
                    .decode(material.trim())
                    .map_err(|_| KeyringError::BadKey(kid.0.clone()))?,
            );
            if bytes.len() != KEY_LEN {
                return Err(KeyringError::BadKey(kid.0));
            }
            let cipher = Aes256Gcm::new_from_slice(&bytes)
                .map_err(|_| KeyringError::BadKey(kid.0.clone()))?;
            keys.push((kid, cipher));
        }
        if keys.is_empty() {
            return Err(KeyringError::Empty);
        }
        Ok(Self { keys })
    }

    /// A fresh random key in the `TOKEN_ENCRYPTION_KEYS` format.
    pub fn generate_entry(kid: &str) -> Result<Zeroizing<String>, KeyringError> {
        let kid = KeyId::parse(kid)?;
        let key = super::random_key();
        Ok(Zeroizing::new(format!(
            "{}:{}",
            kid.as_str(),
            STANDARD.encode(key.as_slice())
        )))
    }

    pub fn sealing_key_id(&self) -> &KeyId {
        // `parse` refuses an empty keyring, so there is always a first key.
        &self.keys[0].0
    }

    /// Seals under the first key with a fresh random 96-bit nonce: never reuse a nonce with
    /// GCM, since two messages under one (key, nonce) leak their XOR and the authentication key.
    pub fn seal(&self, plaintext: &[u8], binding: Binding<'_>) -> Result<Sealed, CryptoError> {
        let (kid, cipher) = &self.keys[0];
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = binding.associated_data(kid.as_str());
        let ciphertext = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Encryption)?;
        Ok(Sealed {
            key_id: kid.0.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Opens a sealed value; any tampering, a moved ciphertext or a wrong key is an error.
    pub fn open(
        &self,
        sealed: &Sealed,
        binding: Binding<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let cipher = self
            .keys
            .iter()
            .find(|(kid, _)| kid.as_str() == sealed.key_id)
            .map(|(_, cipher)| cipher)
            .ok_or_else(|| CryptoError::UnknownKey(sealed.key_id.clone()))?;
        if sealed.nonce.len() != NONCE_LEN {
            return Err(CryptoError::Malformed);
        }
        let aad = binding.associated_data(&sealed.key_id);
        cipher
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Authentication)
    }

    /// Opens a secret that was sealed from UTF-8 text.
    pub fn open_string(
        &self,
        sealed: &Sealed,
        binding: Binding<'_>,
    ) -> Result<secrecy::SecretString, CryptoError> {
        let bytes = self.open(sealed, binding)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| CryptoError::Malformed)?;
        Ok(secrecy::SecretString::from(text.to_owned()))
    }
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> String {
        STANDARD.encode([byte; 32])
    }

    fn binding(row_id: Uuid) -> Binding<'static> {
        Binding {
            purpose: "refresh_token",
            row_id,
            user_id: "alice",
        }
    }

    #[test]
    fn seals_and_opens_with_the_same_binding() {
        let ring = Keyring::parse(&format!("k1:{}", key(1))).unwrap();
        let row = Uuid::new_v4();
        let sealed = ring.seal(b"offline-token", binding(row)).unwrap();
        assert_eq!(sealed.key_id, "k1");
        assert_eq!(sealed.nonce.len(), 12);
        assert!(!sealed.ciphertext.windows(13).any(|w| w == b"offline-token"));
        assert_eq!(
            ring.open(&sealed, binding(row)).unwrap().as_slice(),
            b"offline-token"
        );
    }

    #[test]
    fn every_seal_uses_a_fresh_nonce() {
        let ring = Keyring::parse(&format!("k1:{}", key(1))).unwrap();
        let row = Uuid::new_v4();
        let a = ring.seal(b"same", binding(row)).unwrap();
        let b = ring.seal(b"same", binding(row)).unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn a_ciphertext_moved_to_another_row_or_user_does_not_open() {
        let ring = Keyring::parse(&format!("k1:{}", key(1))).unwrap();
        let row = Uuid::new_v4();
        let sealed = ring.seal(b"secret", binding(row)).unwrap();
        assert_eq!(
            ring.open(&sealed, binding(Uuid::new_v4())),
            Err(CryptoError::Authentication)
        );
        let other_user = Binding {
            user_id: "mallory",
            ..binding(row)
        };
        assert_eq!(
            ring.open(&sealed, other_user),
            Err(CryptoError::Authentication)
        );
        let other_purpose = Binding {
            purpose: "pkce_verifier",
            ..binding(row)
        };
        assert_eq!(
            ring.open(&sealed, other_purpose),
            Err(CryptoError::Authentication)
        );
    }

    #[test]
    fn tampering_is_detected() {
        let ring = Keyring::parse(&format!("k1:{}", key(1))).unwrap();
        let row = Uuid::new_v4();
        let mut sealed = ring.seal(b"secret", binding(row)).unwrap();
        sealed.ciphertext[0] ^= 1;
        assert_eq!(
            ring.open(&sealed, binding(row)),
            Err(CryptoError::Authentication)
        );
    }

    #[test]
    fn a_wrong_key_with_the_same_id_fails_and_an_unknown_id_is_named() {
        let ring = Keyring::parse(&format!("k1:{}", key(1))).unwrap();
        let impostor = Keyring::parse(&format!("k1:{}", key(2))).unwrap();
        let row = Uuid::new_v4();
        let sealed = ring.seal(b"secret", binding(row)).unwrap();
        assert_eq!(
            impostor.open(&sealed, binding(row)),
            Err(CryptoError::Authentication)
        );
        let other = Keyring::parse(&format!("k2:{}", key(1))).unwrap();
        assert_eq!(
            other.open(&sealed, binding(row)),
            Err(CryptoError::UnknownKey("k1".into()))
        );
    }

    #[test]
    fn older_keys_still_open_after_a_new_first_key() {
        let old = Keyring::parse(&format!("k1:{}", key(1))).unwrap();
        let row = Uuid::new_v4();
        let sealed = old.seal(b"secret", binding(row)).unwrap();
        let rotated = Keyring::parse(&format!("k2:{}, k1:{}", key(2), key(1))).unwrap();
        assert_eq!(rotated.sealing_key_id().as_str(), "k2");
        assert_eq!(
            rotated.open(&sealed, binding(row)).unwrap().as_slice(),
            b"secret"
        );
    }

    #[test]
    fn bad_specs_are_refused_with_a_reason() {
        assert_eq!(Keyring::parse("").unwrap_err(), KeyringError::Empty);
        assert_eq!(Keyring::parse("nokid").unwrap_err(), KeyringError::BadEntry);
        assert_eq!(
            Keyring::parse("k1:c2hvcnQ=").unwrap_err(),
            KeyringError::BadKey("k1".into())
        );
        assert_eq!(
            Keyring::parse("k|1:AAAA").unwrap_err(),
            KeyringError::BadKeyId
        );
        let dup = format!("k1:{},k1:{}", key(1), key(2));
        assert_eq!(
            Keyring::parse(&dup).unwrap_err(),
            KeyringError::DuplicateKeyId("k1".into())
        );
    }

    #[test]
    fn debug_shows_key_ids_only() {
        let ring = Keyring::parse(&format!("k1:{}", key(7))).unwrap();
        let printed = format!("{ring:?}");
        assert!(printed.contains("k1"));
        assert!(!printed.contains(&key(7)));
    }

    #[test]
    fn blobs_round_trip_and_truncation_is_malformed() {
        let ring = Keyring::parse(&format!("k1:{}", key(1))).unwrap();
        let sealed = ring.seal(b"verifier", binding(Uuid::new_v4())).unwrap();
        assert_eq!(Sealed::from_bytes(&sealed.to_bytes()).unwrap(), sealed);
        assert_eq!(Sealed::from_bytes(&[5, b'k']), Err(CryptoError::Malformed));
        assert_eq!(Sealed::from_bytes(&[]), Err(CryptoError::Malformed));
    }

    #[test]
    fn key_ids_take_letters_digits_dashes_underscores_and_dots() {
        for kid in ["k1", "2026-11", "key_2", "v1.2", "a-b_c.d"] {
            assert!(
                Keyring::parse(&format!("{kid}:{}", key(1))).is_ok(),
                "{kid}"
            );
        }
        for kid in ["k 1", "k|1", "k/1", "ключ", &"k".repeat(65)] {
            assert_eq!(
                Keyring::parse(&format!("{kid}:{}", key(1))).unwrap_err(),
                KeyringError::BadKeyId,
                "{kid}"
            );
        }
    }

    #[test]
    fn a_sealed_value_shows_its_key_and_length_but_not_its_bytes() {
        let sealed = Sealed {
            key_id: "k1".into(),
            nonce: vec![7; 12],
            ciphertext: vec![0xAB; 20],
        };
        let printed = format!("{sealed:?}");
        assert!(
            printed.contains("k1") && printed.contains("20"),
            "{printed}"
        );
        assert!(!printed.contains("171") && !printed.to_lowercase().contains("ab, "));
    }

    #[test]
    fn a_blob_too_short_for_a_tag_is_malformed() {
        let mut blob = vec![2, b'k', b'1'];
        blob.extend_from_slice(&[0; 12]);
        blob.extend_from_slice(&[0; 15]);
        assert_eq!(Sealed::from_bytes(&blob), Err(CryptoError::Malformed));
        blob.push(0);
        assert_eq!(Sealed::from_bytes(&blob).unwrap().ciphertext.len(), 16);
    }

    #[test]
    fn generated_entries_parse() {
        let entry = Keyring::generate_entry("2026-11").unwrap();
        assert!(Keyring::parse(&entry).is_ok());
    }
}
