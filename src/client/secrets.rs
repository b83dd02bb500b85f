//! `secure://` values: AES-256-GCM, the format of the original CLI's encrypted secrets
//! (`secure://` + base64 of nonce, ciphertext and tag), with the field's name as associated
//! data so an encrypted access token cannot be swapped into the refresh-token field.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use secrecy::SecretString;
use zeroize::Zeroizing;

pub const PREFIX: &str = "secure://";
const NONCE_LEN: usize = 12;

/// Why a `secure://` value could not be sealed or opened; names the field, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("cannot encrypt {field}")]
    Encrypt { field: String },
    #[error(
        "cannot decrypt {field} in the config file: wrong secrets key \
         (secrets-encryption or TOKEN_BROKER_SECRETS_KEY) or a damaged value; set the \
         right key, or run `token-broker logout` (it needs no key) and sign in again"
    )]
    Decrypt { field: String },
}

/// The key that encrypts token values in config.yaml.
pub struct SecretsKey(Aes256Gcm);

impl SecretsKey {
    /// Parses base64 of 32 bytes.
    pub fn parse(encoded: &str) -> Option<Self> {
        let bytes = Zeroizing::new(STANDARD.decode(encoded.trim()).ok()?);
        (bytes.len() == 32)
            .then(|| Aes256Gcm::new_from_slice(&bytes).ok())
            .flatten()
            .map(Self)
    }

    /// A new random key and its base64 form (to store under `secrets-encryption`).
    pub fn generate() -> (Self, Zeroizing<String>) {
        let key = crate::crypto::random_key();
        let encoded = Zeroizing::new(STANDARD.encode(key.as_slice()));
        (Self(Aes256Gcm::new(&(*key).into())), encoded)
    }

    pub fn encrypt(&self, field: &str, value: &str) -> Result<String, SecretsError> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = self
            .0
            .encrypt(
                &nonce,
                Payload {
                    msg: value.as_bytes(),
                    aad: field.as_bytes(),
                },
            )
            .map_err(|_| SecretsError::Encrypt {
                field: field.to_owned(),
            })?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&sealed);
        Ok(format!("{PREFIX}{}", STANDARD.encode(blob)))
    }

    pub fn decrypt(&self, field: &str, value: &str) -> Result<SecretString, SecretsError> {
        let wrong = || SecretsError::Decrypt {
            field: field.to_owned(),
        };
        let encoded = value.strip_prefix(PREFIX).ok_or_else(wrong)?;
        let blob = STANDARD.decode(encoded).map_err(|_| wrong())?;
        if blob.len() <= NONCE_LEN {
            return Err(wrong());
        }
        let (nonce, sealed) = blob.split_at(NONCE_LEN);
        let plain = Zeroizing::new(
            self.0
                .decrypt(
                    Nonce::from_slice(nonce),
                    Payload {
                        msg: sealed,
                        aad: field.as_bytes(),
                    },
                )
                .map_err(|_| wrong())?,
        );
        let text = std::str::from_utf8(&plain).map_err(|_| wrong())?;
        Ok(SecretString::from(text.to_owned()))
    }
}

pub fn is_encrypted(value: &str) -> bool {
    value.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn values_round_trip_and_never_show_in_clear() {
        let (key, encoded) = SecretsKey::generate();
        let sealed = key.encrypt("device-token.refresh-token", "rt-123").unwrap();
        assert!(is_encrypted(&sealed));
        assert!(!sealed.contains("rt-123"));
        let opened = key.decrypt("device-token.refresh-token", &sealed).unwrap();
        assert_eq!(opened.expose_secret(), "rt-123");
        assert!(SecretsKey::parse(&encoded).is_some());
    }

    #[test]
    fn wrong_key_field_or_damage_is_an_error() {
        let (key, _) = SecretsKey::generate();
        let (other, _) = SecretsKey::generate();
        let sealed = key.encrypt("a", "secret").unwrap();
        assert!(other.decrypt("a", &sealed).is_err());
        assert!(key.decrypt("b", &sealed).is_err(), "bound to its field");
        assert!(key.decrypt("a", "secure://AAAA").is_err());
        assert!(key.decrypt("a", "plain").is_err());
        assert!(SecretsKey::parse("c2hvcnQ=").is_none());
    }
}
