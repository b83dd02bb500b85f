//! A grant's lifecycle in one place: its statuses, why a row has the status it has, and which
//! changes of status may happen, written as data. The vault's SQL makes exactly these changes
//! (the contract tests walk the table on both backends); every vault method that changes a
//! status says which [`Transition`] it made.
//!
//! ```text
//! pending --callback ok--> active --refresh refused--> failed
//!    |                      |  ^                          |
//!    |                      |  +------ re-consent --------+ (and from expired)
//!    +--callback failed--> failed
//!    +--timed out--> expired <--max age-- active
//! any live row --DELETE / admin--> revoked
//! ```

use std::fmt;
use std::str::FromStr;

use super::error::VaultError;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Active,
    Failed,
    Revoked,
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Active => "active",
            Status::Failed => "failed",
            Status::Revoked => "revoked",
            Status::Expired => "expired",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Status::Pending),
            "active" => Ok(Status::Active),
            "failed" => Ok(Status::Failed),
            "revoked" => Ok(Status::Revoked),
            "expired" => Ok(Status::Expired),
            _ => Err(()),
        }
    }
}

/// Why a row has its status: a closed set of codes, stored as [`StatusReason::as_str`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusReason {
    /// Revoked by its owner (`DELETE /offline-tokens/{id}`).
    RevokedByUser,
    /// Revoked by an operator on the admin page.
    RevokedByAdmin,
    /// The provider refused the grant on a refresh (`invalid_grant`): ended there.
    RevokedByProvider,
    /// A consent not completed in time.
    ConsentTimeout,
    /// A grant past its hard end (`OFFLINE_TOKEN_MAX_AGE_SECS`, `OFFLINE_SESSION_MAX_SECS`).
    MaxAgeReached,
    /// Callback failures, each a check the consent did not pass.
    IssuerMismatch,
    MissingCode,
    CodeExchangeFailed,
    ProviderUnavailable,
    MissingRefreshToken,
    MissingIdToken,
    NonceMismatch,
    InvalidIdToken,
    SubjectMismatch,
    OfflineAccessNotGranted,
    RowEnded,
    InternalError,
    /// The provider's own error code on the callback (RFC 6749 §4.1.2.1, e.g. `access_denied`):
    /// an ASCII word of at most 64 characters; anything else is `provider_error`.
    Provider(String),
}

/// The codes with a variant of their own, in one table (`as_str` and parsing read it).
const NAMED: &[(StatusReason, &str)] = &[
    (StatusReason::RevokedByUser, "revoked_by_user"),
    (StatusReason::RevokedByAdmin, "revoked_by_admin"),
    (StatusReason::RevokedByProvider, "revoked_by_provider"),
    (StatusReason::ConsentTimeout, "consent_timeout"),
    (StatusReason::MaxAgeReached, "max_age_reached"),
    (StatusReason::IssuerMismatch, "issuer_mismatch"),
    (StatusReason::MissingCode, "missing_code"),
    (StatusReason::CodeExchangeFailed, "code_exchange_failed"),
    (StatusReason::ProviderUnavailable, "provider_unavailable"),
    (StatusReason::MissingRefreshToken, "missing_refresh_token"),
    (StatusReason::MissingIdToken, "missing_id_token"),
    (StatusReason::NonceMismatch, "nonce_mismatch"),
    (StatusReason::InvalidIdToken, "invalid_id_token"),
    (StatusReason::SubjectMismatch, "subject_mismatch"),
    (
        StatusReason::OfflineAccessNotGranted,
        "offline_access_not_granted",
    ),
    (StatusReason::RowEnded, "row_ended"),
    (StatusReason::InternalError, "internal_error"),
];

impl StatusReason {
    pub fn as_str(&self) -> &str {
        match self {
            StatusReason::Provider(code) => code,
            named => NAMED
                .iter()
                .find(|(reason, _)| reason == named)
                .map_or("provider_error", |(_, code)| code),
        }
    }

    /// The provider's error code on a callback, kept when it is a well-formed word.
    pub fn from_provider(code: &str) -> Self {
        let well_formed = !code.is_empty()
            && code.len() <= 64
            && code.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        StatusReason::Provider(if well_formed { code } else { "provider_error" }.to_owned())
    }
}

impl FromStr for StatusReason {
    type Err = std::convert::Infallible;

    /// A stored code: a named one, else a provider's code as stored.
    fn from_str(code: &str) -> Result<Self, Self::Err> {
        Ok(NAMED
            .iter()
            .find(|(_, named)| *named == code)
            .map_or_else(|| StatusReason::from_provider(code), |(r, _)| r.clone()))
    }
}

impl fmt::Display for StatusReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every change of status the vault makes, and what makes it. A change not listed here is a
/// bug: the contract tests check both backends against this table.
pub const TRANSITIONS: &[(Status, Status, &str)] = &[
    (
        Status::Pending,
        Status::Active,
        "the callback completes the consent",
    ),
    (
        Status::Pending,
        Status::Failed,
        "the callback fails (a status reason says why)",
    ),
    (
        Status::Pending,
        Status::Expired,
        "the consent times out (consent_timeout)",
    ),
    (
        Status::Pending,
        Status::Revoked,
        "the owner or an operator revokes it",
    ),
    (
        Status::Active,
        Status::Active,
        "a re-consent completes in place",
    ),
    (
        Status::Active,
        Status::Failed,
        "the provider refuses a refresh (revoked_by_provider)",
    ),
    (
        Status::Active,
        Status::Expired,
        "the grant reaches its hard end (max_age_reached)",
    ),
    (
        Status::Active,
        Status::Revoked,
        "the owner or an operator revokes it",
    ),
    (
        Status::Failed,
        Status::Active,
        "a re-consent completes in place",
    ),
    (
        Status::Failed,
        Status::Revoked,
        "the owner or an operator revokes it",
    ),
    (
        Status::Expired,
        Status::Active,
        "a re-consent completes in place",
    ),
    (
        Status::Expired,
        Status::Revoked,
        "the owner or an operator revokes it",
    ),
];

impl Status {
    /// Whether a row may go from this status to `to` ([`TRANSITIONS`]). Revoked is final.
    pub fn may_become(self, to: Status) -> bool {
        TRANSITIONS
            .iter()
            .any(|(from, into, _)| *from == self && *into == to)
    }
}

/// A change of status the vault made: from, to, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: Status,
    pub to: Status,
    pub reason: Option<StatusReason>,
}

impl Transition {
    /// Whether the change is a success for whoever made it (a failure is not).
    pub fn succeeded(&self) -> bool {
        self.to != Status::Failed
    }

    /// The transition a conditional update made: `from` to `to` when it changed its one row,
    /// else none (the row was not in `from`, or its fence moved on).
    pub(crate) fn made(
        rows_affected: u64,
        from: Status,
        to: Status,
        reason: Option<&StatusReason>,
    ) -> Option<Transition> {
        (rows_affected == 1).then(|| Transition {
            from,
            to,
            reason: reason.cloned(),
        })
    }

    /// The transition an activation made, from the status it replaced (`None`: it changed
    /// nothing).
    pub(crate) fn activated(
        id: uuid::Uuid,
        replaced: Option<String>,
    ) -> Result<Option<Transition>, VaultError> {
        replaced
            .map(|status| {
                let from = status.parse().map_err(|_| VaultError::Corrupt {
                    id,
                    problem: "unknown status",
                })?;
                Ok(Transition {
                    from,
                    to: Status::Active,
                    reason: None,
                })
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_reads_back_as_itself() {
        for (reason, code) in NAMED {
            assert_eq!(reason.as_str(), *code);
            assert_eq!(code.parse::<StatusReason>().unwrap(), *reason);
        }
        let provider = StatusReason::from_provider("access_denied");
        assert_eq!(provider.as_str(), "access_denied");
        assert_eq!("access_denied".parse::<StatusReason>().unwrap(), provider);
        assert_eq!(
            StatusReason::from_provider("<script>").as_str(),
            "provider_error"
        );
        assert_eq!(
            StatusReason::from_provider(&"x".repeat(65)).as_str(),
            "provider_error"
        );
    }

    #[test]
    fn revoked_is_final_and_nothing_returns_to_pending() {
        for to in [
            Status::Pending,
            Status::Active,
            Status::Failed,
            Status::Expired,
        ] {
            assert!(!Status::Revoked.may_become(to), "revoked -> {to}");
        }
        for from in [
            Status::Active,
            Status::Failed,
            Status::Expired,
            Status::Revoked,
        ] {
            assert!(!from.may_become(Status::Pending), "{from} -> pending");
        }
        assert!(!Status::Failed.may_become(Status::Expired));
        assert!(Status::Active.may_become(Status::Failed));
    }
}
