//! Consents: a pending row is stored, its `state` claimed once by the callback, and the row
//! activated with the consented token (or failed). [`ConsentStore`] is the role; the statements
//! both backends accept are written once in [`statements`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::lifecycle::{Status, StatusReason, Transition};
use super::VaultError;
use crate::crypto::Sealed;

/// A consent about to be stored as a pending row. Holds digests and sealed values only.
#[derive(Debug)]
pub struct NewConsent {
    pub id: Uuid,
    pub user_id: String,
    pub task_id: String,
    pub state_hash: Vec<u8>,
    pub state_expires_at: DateTime<Utc>,
    /// `Sealed::to_bytes` of the PKCE verifier.
    pub pkce_verifier: Vec<u8>,
    pub nonce_hash: Vec<u8>,
    pub redirect_uri: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub metadata: serde_json::Value,
    /// Client ids whose service accounts may redeem the row.
    pub delegates: Vec<String>,
}

/// A new consent for a row that already exists (re-consent): the same secrets as a
/// [`NewConsent`], stored beside the row's current token, which keeps working meanwhile.
#[derive(Debug)]
pub struct NewReconsent {
    pub id: Uuid,
    /// Only this user's row is changed.
    pub user_id: String,
    pub state_hash: Vec<u8>,
    pub state_expires_at: DateTime<Utc>,
    pub pkce_verifier: Vec<u8>,
    pub nonce_hash: Vec<u8>,
    pub redirect_uri: Option<String>,
    pub now: DateTime<Utc>,
}

/// The row a consent belongs to, as it was when its `state` was claimed.
#[derive(Clone, Debug)]
pub struct ClaimedRow {
    pub id: Uuid,
    pub user_id: String,
    pub task_id: String,
    /// The row's status when the state was claimed: `Pending` for a first consent; anything
    /// else is a re-consent of an existing row.
    pub status: Status,
    pub redirect_uri: Option<String>,
}

/// A consent whose `state` was just redeemed: its row and the secrets the callback needs to
/// finish it. Only [`ConsentStore::claim_consent`] makes one, and [`ConsentStore::activate`]
/// consumes it, so a row is activated only through a claimed state, and once.
#[derive(Debug)]
pub struct ClaimedConsent {
    pub row: ClaimedRow,
    pkce_verifier: Option<Vec<u8>>,
    nonce_hash: Option<Vec<u8>>,
}

impl ClaimedConsent {
    /// The sealed PKCE verifier (`Sealed::to_bytes`); none if the row never had one.
    pub fn pkce_verifier(&self) -> Option<&[u8]> {
        self.pkce_verifier.as_deref()
    }

    /// The digest of the nonce sent with the consent.
    pub fn nonce_hash(&self) -> Option<&[u8]> {
        self.nonce_hash.as_deref()
    }
}

impl std::ops::Deref for ClaimedConsent {
    type Target = ClaimedRow;

    fn deref(&self) -> &ClaimedRow {
        &self.row
    }
}

/// A completed consent, written into its row.
#[derive(Debug)]
pub struct Activation<'a> {
    pub sealed: &'a Sealed,
    /// The row's hard end: no refresh can pass it.
    pub expires_at: DateTime<Utc>,
    /// When the new refresh token stops working if unused, when known.
    pub refresh_expires_at: Option<DateTime<Utc>>,
    /// The scope the provider granted (space-separated).
    pub granted_scope: Option<String>,
    pub now: DateTime<Utc>,
}

#[async_trait]
pub trait ConsentStore: Send + Sync {
    /// Stores a new pending consent, unless its user already has `max_pending` consents whose
    /// links still work (checked in the same statement). False when refused.
    async fn create_pending(
        &self,
        consent: &NewConsent,
        max_pending: u32,
    ) -> Result<bool, VaultError>;

    /// Stores the secrets of a re-consent in an existing row of `user_id` that is not revoked
    /// or pending. The row keeps its status and token until the callback completes. False if
    /// no such row.
    async fn start_reconsent(&self, consent: &NewReconsent) -> Result<bool, VaultError>;

    /// Atomically redeems a consent `state`: the unexpired row holding this digest is returned
    /// once, and its state digest, PKCE verifier and nonce digest are erased in the same
    /// statement. A replayed, unknown or expired state yields `None` and changes nothing.
    async fn claim_consent(
        &self,
        state_hash: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<ClaimedConsent>, VaultError>;

    /// Stores a freshly consented offline token and marks the row active, if the row still has
    /// the status it had when its state was claimed (a pending consent), or, for a re-consent,
    /// is still neither pending nor revoked. Any refresh in flight loses its claim. The
    /// transition made; `None` if the row changed meanwhile (revoked, cleaned up).
    async fn activate(
        &self,
        consent: ClaimedConsent,
        activation: &Activation<'_>,
    ) -> Result<Option<Transition>, VaultError>;

    /// Marks a pending row failed with a reason. `None` if the row is no longer pending.
    async fn fail_pending(
        &self,
        id: Uuid,
        reason: &StatusReason,
        now: DateTime<Utc>,
    ) -> Result<Option<Transition>, VaultError>;
}

mod statements;
pub(super) use statements::{
    activation, bind_activation, claimable, consent_store, still_claimable, ClaimRecord,
    CLAIM_COLUMNS,
};
