//! Sealing secrets at rest and making unguessable one-time values.

mod keyring;
mod random;

pub use keyring::{Binding, CryptoError, KeyId, Keyring, KeyringError, Sealed};
pub use random::{constant_time_eq, keyed_hash, random_key, random_token, sha256};

/// What a sealed value is, bound into its associated data so one kind cannot pass for another.
pub mod purpose {
    pub const REFRESH_TOKEN: &str = "refresh_token";
    pub const PKCE_VERIFIER: &str = "pkce_verifier";
    /// The last access token minted for a row, kept so other instances can hand it out.
    pub const ACCESS_TOKEN: &str = "access_token";
    /// A secret the broker made for itself (`broker_secrets`).
    pub const BROKER_SECRET: &str = "broker_secret";
    /// An operator's sign-in in progress, held in the browser's cookie (`/admin`).
    pub const ADMIN_SIGN_IN: &str = "admin_sign_in";
}
