//! Scopes as sets (RFC 6749 §3.3): what a consent granted, what a task key or a request may
//! narrow it to.

use std::collections::BTreeSet;
use std::fmt;

pub const MAX_LEN: usize = 1000;
pub const MAX_TOKENS: usize = 50;

/// What is granted when a provider did not say (RFC 6749 §5.1: "as requested").
pub const CONSENT_SCOPE: &str = "openid offline_access";

/// A set of scope tokens, sorted, so equal sets compare (and key caches) alike.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(BTreeSet<String>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("scope must be 1 to 50 space-separated tokens of printable ASCII without '\"' or '\\\\', at most 1000 characters")]
pub struct ScopeError;

impl Scope {
    pub fn parse(raw: &str) -> Result<Scope, ScopeError> {
        if raw.len() > MAX_LEN {
            return Err(ScopeError);
        }
        // scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
        let valid = |t: &str| {
            t.bytes()
                .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
        };
        // Counted as sent, before duplicates fold: the limit is on what a caller may send.
        let sent: Vec<&str> = raw.split(' ').filter(|t| !t.is_empty()).collect();
        if sent.is_empty() || sent.len() > MAX_TOKENS || !sent.iter().all(|t| valid(t)) {
            return Err(ScopeError);
        }
        Ok(Scope(sent.into_iter().map(str::to_owned).collect()))
    }

    /// The scope stored for a row, or what a consent asks for when none was stored.
    pub fn granted(stored: Option<&str>) -> Scope {
        stored
            .and_then(|s| Scope::parse(s).ok())
            .unwrap_or_else(|| Scope(CONSENT_SCOPE.split(' ').map(str::to_owned).collect()))
    }

    /// The same set without `token`.
    pub fn without(&self, token: &str) -> Scope {
        let mut rest = self.0.clone();
        rest.remove(token);
        Scope(rest)
    }

    pub fn is_subset(&self, of: &Scope) -> bool {
        self.0.is_subset(&of.0)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let joined: Vec<&str> = self.0.iter().map(String::as_str).collect();
        f.write_str(&joined.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_sets_in_a_fixed_order() {
        let a = Scope::parse("profile openid  openid").unwrap();
        assert_eq!(a.to_string(), "openid profile");
        assert_eq!(a, Scope::parse("openid profile").unwrap());
        assert!(Scope::parse("openid").unwrap().is_subset(&a));
        assert!(!Scope::parse("openid email").unwrap().is_subset(&a));
    }

    #[test]
    fn bad_scopes_are_refused() {
        for raw in [
            "",
            "   ",
            "a\"b",
            "a\\b",
            "caf\u{e9}",
            "a\tb",
            &"x".repeat(1001),
        ] {
            assert_eq!(Scope::parse(raw), Err(ScopeError), "{raw:?}");
        }
        let many: Vec<String> = (0..51).map(|i| format!("s{i}")).collect();
        assert!(Scope::parse(&many.join(" ")).is_err());
    }

    #[test]
    fn an_unknown_grant_is_what_a_consent_asks_for() {
        assert_eq!(Scope::granted(None).to_string(), "offline_access openid");
        assert_eq!(
            Scope::granted(Some("openid email")).to_string(),
            "email openid"
        );
    }
}
