//! Bearer-token verification: signature by the provider's keys, issuer, audience, expiry and
//! authorized party, with verified claims cached by the token's digest until it expires. The
//! result is [`CallerClaims`]: who is calling, never yet what they may do.

use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, decode_header, Algorithm, Validation};
use quick_cache::sync::Cache;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::jwks::{JwksCache, JwksError};
use crate::crypto::{constant_time_eq, sha256};

/// Only asymmetric algorithms. Accepting HS* would let anyone holding the provider's *public*
/// key (everyone) forge tokens by using it as an HMAC secret; `none` is not even parseable.
pub(super) const ALLOWED_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Clock skew tolerated on `exp`/`nbf`.
pub(super) const LEEWAY_SECS: u64 = 30;
/// Verified bearer tokens are remembered at most this long, and never past their `exp`.
const VERIFIED_TTL_SECS: i64 = 300;

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("not a well-formed JWT")]
    Malformed,
    #[error("signing algorithm not allowed")]
    DisallowedAlgorithm,
    #[error("token header names no key id")]
    MissingKeyId,
    #[error(transparent)]
    Key(#[from] JwksError),
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    #[error("token was issued by another issuer")]
    WrongIssuer,
    #[error("token is meant for another audience")]
    WrongAudience,
    #[error("signature does not verify")]
    BadSignature,
    #[error("token was issued to a client that may not call the broker")]
    UnauthorizedParty,
    #[error("not an access token")]
    WrongTokenType,
    #[error("nonce does not match the consent request")]
    NonceMismatch,
    #[error("token claims are invalid: {0}")]
    Claims(String),
    #[error("token lives longer than the broker accepts")]
    LivesTooLong,
    #[error("token was issued in the future (iat)")]
    IssuedInTheFuture,
}

/// Only the number of audiences matters here; `jsonwebtoken` already checked their values.
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum Audience {
    #[default]
    None,
    One(serde::de::IgnoredAny),
    Many(Vec<serde::de::IgnoredAny>),
}

impl Audience {
    fn len(&self) -> usize {
        match self {
            Audience::None => 0,
            Audience::One(_) => 1,
            Audience::Many(v) => v.len(),
        }
    }
}

/// `aud` as a list, whether the token wrote one string or an array.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(untagged)]
enum AudienceList {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl AudienceList {
    fn contains_any(&self, wanted: &[String]) -> bool {
        match self {
            AudienceList::None => false,
            AudienceList::One(a) => wanted.contains(a),
            AudienceList::Many(list) => list.iter().any(|a| wanted.contains(a)),
        }
    }
}

/// Who is calling: the verified claims of a bearer access token.
#[derive(Clone, Debug, Deserialize)]
pub struct CallerClaims {
    pub sub: String,
    exp: i64,
    #[serde(default)]
    aud: AudienceList,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    /// Only ID tokens carry a nonce: its presence marks one used as a bearer.
    #[serde(default)]
    nonce: Option<serde::de::IgnoredAny>,
    /// Keycloak names a service account's user `service-account-<client>`.
    #[serde(default)]
    preferred_username: Option<String>,
    /// Keycloak marks its tokens: "Bearer" for access tokens, "ID", "Refresh", "Offline" else.
    #[serde(default)]
    typ: Option<String>,
    /// Keycloak's realm roles.
    #[serde(default)]
    realm_access: Option<RealmAccess>,
    /// Roles as other providers put them.
    #[serde(default)]
    roles: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RealmAccess {
    #[serde(default)]
    roles: Vec<String>,
}

impl CallerClaims {
    /// The client the token was issued to: `azp`, or Keycloak-style `client_id` without one.
    pub fn client(&self) -> Option<&str> {
        self.azp.as_deref().or(self.client_id.as_deref())
    }

    /// Whether this is the token of `client`'s own service account (client credentials), not
    /// a user's token issued to that client. With `pinned`, the operator named the service
    /// account's `sub`, and only that counts. Otherwise the provider's service-account shape:
    /// Keycloak (26, seen in tests/api/keycloak.rs) writes a `client_id` claim equal to `azp`
    /// into client-credentials tokens only (its `service_account` scope's mapper reads a note
    /// that only such sessions have), and the user name `service-account-<client>` when the
    /// `profile` scope applies; RFC 9068 and plain client-credentials tokens carry `sub` equal
    /// to the client id. A user's token of the same client has neither.
    pub fn is_service_account_of(&self, client: &str, pinned: Option<&str>) -> bool {
        if self.client() != Some(client) {
            return false;
        }
        if let Some(sub) = pinned {
            return self.sub == sub;
        }
        let account_name = format!("service-account-{client}");
        let keycloak = self.azp.as_deref() == Some(client)
            && self.client_id.as_deref() == Some(client)
            && self
                .preferred_username
                .as_deref()
                .is_none_or(|name| name == account_name);
        keycloak || self.sub == client
    }

    /// How long the token stays valid from now (zero once it has expired).
    pub fn remaining(&self) -> std::time::Duration {
        let left = self.exp.saturating_sub(chrono::Utc::now().timestamp());
        std::time::Duration::from_secs(u64::try_from(left).unwrap_or(0))
    }

    /// Whether the caller holds `role` (Keycloak `realm_access.roles`, or a `roles` claim).
    pub fn has_role(&self, role: &str) -> bool {
        let realm = self
            .realm_access
            .as_ref()
            .map(|r| r.roles.as_slice())
            .unwrap_or_default();
        let plain = self.roles.as_deref().unwrap_or_default();
        realm.iter().chain(plain).any(|r| r == role)
    }
}

/// The verified claims of the ID token returned with an authorization code.
#[derive(Debug, Deserialize)]
pub struct IdTokenClaims {
    pub sub: String,
    /// When the user authenticated at the provider (seconds since the epoch), if it says.
    #[serde(default)]
    pub auth_time: Option<i64>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    aud: Audience,
}

/// Verifies provider-signed JWTs locally: signature against the JWKS, issuer, expiry, audience.
pub struct TokenVerifier {
    jwks: Arc<JwksCache>,
    issuer: String,
    client_id: String,
    audiences: Vec<String>,
    authorized_parties: Vec<String>,
    /// SHA-256 of bearer tokens that verified, with their claims and until when to trust that:
    /// a `quick_cache` cache bounded by entries (`BEARER_CACHE_MAX_ENTRIES`). Signature checks
    /// dominate the hot path, and a task presents the same token many times.
    verified: Cache<[u8; 32], (Arc<CallerClaims>, i64)>,
}

impl TokenVerifier {
    pub fn new(
        jwks: Arc<JwksCache>,
        issuer: String,
        client_id: String,
        audiences: Vec<String>,
        authorized_parties: Vec<String>,
        max_remembered: u64,
    ) -> Self {
        Self {
            jwks,
            issuer,
            client_id,
            audiences,
            authorized_parties,
            // Each entry carries until when it may be trusted, checked on every lookup.
            verified: Cache::new(usize::try_from(max_remembered).unwrap_or(usize::MAX)),
        }
    }

    /// The audience and authorized parties a user's token must have (`OIDC_AUDIENCE`,
    /// `OIDC_AUTHORIZED_PARTIES`).
    /// Tokens the broker itself minted (its own client is their `azp`) are never a user's
    /// credential here: a task holding one must not manage grants with it.
    pub fn check_user(&self, claims: &CallerClaims) -> Result<(), JwtError> {
        self.check_any_caller(claims)?;
        if !self.authorized_parties.is_empty() {
            let party = claims.client();
            if !party.is_some_and(|p| self.authorized_parties.iter().any(|a| a == p)) {
                return Err(JwtError::UnauthorizedParty);
            }
        }
        Ok(())
    }

    /// The rules every caller's token must meet, a delegated service account's included: never
    /// a token issued to the broker's own client, and the audience (`OIDC_AUDIENCE`) if set.
    pub fn check_any_caller(&self, claims: &CallerClaims) -> Result<(), JwtError> {
        if claims.client() == Some(self.client_id.as_str()) {
            return Err(JwtError::UnauthorizedParty);
        }
        if !self.audiences.is_empty() && !claims.aud.contains_any(&self.audiences) {
            return Err(JwtError::WrongAudience);
        }
        Ok(())
    }

    /// Verifies a bearer token's signature and claims (issuer, expiry, not-before, that it is
    /// an access token), whoever it was issued to; remembers a success for a while.
    pub async fn verify_token(&self, token: &str) -> Result<Arc<CallerClaims>, JwtError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = chrono::Utc::now().timestamp();
        let remembered = self
            .verified
            .get(&digest)
            .filter(|(_, until)| *until > now)
            .map(|(claims, _)| claims);
        if let Some(claims) = remembered {
            return Ok(claims);
        }
        let claims = Arc::new(self.verify_token_now(token).await?);
        let until = claims.exp.min(now + VERIFIED_TTL_SECS);
        self.verified.insert(digest, (claims.clone(), until));
        Ok(claims)
    }

    /// An ID token (or any other token) used as a bearer is refused whatever the provider
    /// marks: a header `typ` other than `JWT` or `at+jwt` (RFC 9068), a `nonce` claim (only ID
    /// tokens carry one), or a Keycloak `typ` claim other than `Bearer`.
    async fn verify_token_now(&self, token: &str) -> Result<CallerClaims, JwtError> {
        let header = decode_header(token).map_err(|_| JwtError::Malformed)?;
        if let Some(typ) = &header.typ {
            let typ = typ.to_ascii_lowercase();
            if !matches!(typ.as_str(), "jwt" | "at+jwt" | "application/at+jwt") {
                return Err(JwtError::WrongTokenType);
            }
        }
        let claims: CallerClaims = self.verify(token, None).await?;
        if claims
            .typ
            .as_ref()
            .is_some_and(|typ| !typ.eq_ignore_ascii_case("bearer"))
        {
            return Err(JwtError::WrongTokenType);
        }
        if claims.nonce.is_some() {
            return Err(JwtError::WrongTokenType);
        }
        Ok(claims)
    }

    /// Verifies an ID token from the code exchange (OpenID Connect Core §3.1.3.7), including the
    /// nonce, which binds it to the consent request we started: an ID token replayed from another
    /// login carries another nonce.
    pub async fn verify_id_token(
        &self,
        token: &str,
        expected_nonce_hash: &[u8],
    ) -> Result<IdTokenClaims, JwtError> {
        let claims: IdTokenClaims = self
            .verify(token, Some(std::slice::from_ref(&self.client_id)))
            .await?;
        if claims.aud.len() > 1 && claims.azp.as_deref() != Some(self.client_id.as_str()) {
            return Err(JwtError::UnauthorizedParty);
        }
        let nonce_ok = claims
            .nonce
            .as_deref()
            .is_some_and(|n| constant_time_eq(&sha256(n.as_bytes()), expected_nonce_hash));
        if !nonce_ok {
            return Err(JwtError::NonceMismatch);
        }
        Ok(claims)
    }

    async fn verify<T: DeserializeOwned + HasSubject>(
        &self,
        token: &str,
        audiences: Option<&[String]>,
    ) -> Result<T, JwtError> {
        let header = decode_header(token).map_err(|_| JwtError::Malformed)?;
        if !ALLOWED_ALGORITHMS.contains(&header.alg) {
            return Err(JwtError::DisallowedAlgorithm);
        }
        let kid = header.kid.ok_or(JwtError::MissingKeyId)?;
        let key = self.jwks.key(&kid, header.alg).await?;

        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        match audiences {
            Some(audiences) => validation.set_audience(audiences),
            None => validation.validate_aud = false,
        }
        let claims = decode::<T>(token, &key, &validation)
            .map_err(refusal)?
            .claims;
        if claims.subject().is_empty() {
            return Err(JwtError::Claims("empty subject".into()));
        }
        Ok(claims)
    }
}

/// Why `jsonwebtoken` refused a token, in our terms.
pub(super) fn refusal(error: jsonwebtoken::errors::Error) -> JwtError {
    match error.kind() {
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
        ErrorKind::InvalidAudience => JwtError::WrongAudience,
        ErrorKind::InvalidSignature => JwtError::BadSignature,
        ErrorKind::InvalidAlgorithm => JwtError::DisallowedAlgorithm,
        other => JwtError::Claims(format!("{other:?}")),
    }
}

trait HasSubject {
    fn subject(&self) -> &str;
}

impl HasSubject for CallerClaims {
    fn subject(&self) -> &str {
        &self.sub
    }
}

impl HasSubject for IdTokenClaims {
    fn subject(&self) -> &str {
        &self.sub
    }
}

/// The `exp` of a JWT, read without verifying it: only for scheduling (when a refresh token
/// that happens to be a JWT, as Keycloak's are, stops working). Never for a decision about
/// who may do what.
pub fn peek_expiry(token: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let exp = peek_claims(token)?
        .get("exp")?
        .as_i64()
        .filter(|exp| *exp > 0)?;
    chrono::DateTime::from_timestamp(exp, 0)
}

/// The `scope` claim of a JWT access token, read without verifying it: only to check that a
/// token the provider just handed us over our own connection is no broader than asked for.
pub fn peek_scope(token: &str) -> Option<String> {
    Some(peek_claims(token)?.get("scope")?.as_str()?.to_owned())
}

pub(super) fn peek_claims(token: &str) -> Option<serde_json::Value> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn jwt(claims: &str) -> String {
        let encode = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", encode(r#"{"alg":"HS256"}"#), encode(claims))
    }

    #[test]
    fn the_expiry_of_a_jwt_is_read_and_anything_else_is_none() {
        let at = peek_expiry(&jwt(r#"{"exp":1900000000}"#)).unwrap();
        assert_eq!(at.timestamp(), 1_900_000_000);
        assert!(
            peek_expiry(&jwt(r#"{"exp":0}"#)).is_none(),
            "Keycloak's offline: no exp"
        );
        assert!(peek_expiry(&jwt(r#"{"sub":"x"}"#)).is_none());
        assert!(peek_expiry("opaque-refresh-token").is_none());
        assert!(peek_expiry("a.!!!.c").is_none());
    }
}
