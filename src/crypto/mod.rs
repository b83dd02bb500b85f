//! Sealing secrets at rest and making unguessable one-time values.

mod keyring;
mod random;

pub use keyring::{Binding, CryptoError, KeyId, Keyring, KeyringError, Sealed};
pub use random::{constant_time_eq, random_token, sha256};
