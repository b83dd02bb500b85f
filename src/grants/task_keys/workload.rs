//! Workload bindings: which platform identity a binding admits, and whether a verified
//! platform token is that identity.
//!
//! A binding names an issuer of `WORKLOAD_ISSUERS`, the exact `sub`, and optional exact
//! matches on further claims by path: `repository_id` (GitHub), or
//! `kubernetes.io.serviceaccount.uid` (Kubernetes), whose first segment `kubernetes.io`
//! itself contains a dot. So a path is matched against the nested claims by trying, at each
//! level, the longest key that the rest of the path starts with first, then shorter ones.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{KeyRefusal, TaskKeyError};
use crate::vault::WorkloadIdentity;

pub const MAX_CLAIMS: usize = 20;
pub const MAX_SUBJECT_LEN: usize = 1024;
pub const MAX_PATH_LEN: usize = 200;
pub const MAX_VALUE_LEN: usize = 1024;

/// What the owner asks a binding to admit, as sent.
#[derive(Debug, Default)]
pub struct WorkloadRequest {
    pub issuer: String,
    pub subject: String,
    pub claims: BTreeMap<String, Value>,
}

/// Why a workload whose token verified gets no token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadRefusal {
    #[error("no live binding matches this workload")]
    NoBinding,
    #[error("this workload is bound to several grants; name one with `resource`")]
    SeveralGrants,
    /// The binding that matched may not be used now (revoked, expired, used up, address).
    #[error("the workload's binding is refused: {0}")]
    Refused(KeyRefusal),
}

impl WorkloadRequest {
    /// The identity to store, if the request is well-formed and names a trusted issuer.
    pub fn validate(self, issuers: &[String]) -> Result<WorkloadIdentity, TaskKeyError> {
        let invalid = |m: String| Err(TaskKeyError::Invalid(m));
        if !issuers.contains(&self.issuer) {
            return invalid(format!(
                "issuer must be one of WORKLOAD_ISSUERS ({}), exactly as its tokens write `iss`",
                issuers.join(", ")
            ));
        }
        if !exact_text(&self.subject, MAX_SUBJECT_LEN) {
            return invalid(format!(
                "subject must be 1 to {MAX_SUBJECT_LEN} characters, none of them a control \
                 character, without spaces around them (it is matched exactly)"
            ));
        }
        if self.claims.len() > MAX_CLAIMS {
            return invalid(format!("claims may hold at most {MAX_CLAIMS} entries"));
        }
        for (path, value) in &self.claims {
            if !claim_path(path) {
                return invalid(format!(
                    "claims: `{}` is not a claim path like repository_id or \
                     kubernetes.io.serviceaccount.uid",
                    path.chars().take(64).collect::<String>()
                ));
            }
            let scalar = match value {
                Value::String(s) => s.chars().count() <= MAX_VALUE_LEN,
                Value::Number(_) | Value::Bool(_) => true,
                Value::Null | Value::Array(_) | Value::Object(_) => false,
            };
            if !scalar {
                return invalid(format!(
                    "claims: the value of `{path}` must be a string, number or boolean"
                ));
            }
        }
        Ok(WorkloadIdentity {
            issuer: self.issuer,
            subject: self.subject,
            claims: self.claims,
        })
    }
}

/// 1 to `max` characters, no control character, no whitespace at either end.
pub(crate) fn exact_text(text: &str, max: usize) -> bool {
    !text.is_empty()
        && text.trim() == text
        && text.chars().count() <= max
        && !text.chars().any(char::is_control)
}

/// Segments of at least one character, none of them a dot, whitespace or a control character,
/// joined by dots; at most [`MAX_PATH_LEN`] characters.
pub(crate) fn claim_path(path: &str) -> bool {
    path.chars().count() <= MAX_PATH_LEN
        && path.split('.').all(|segment| {
            !segment.is_empty()
                && segment
                    .chars()
                    .all(|c| !c.is_control() && !c.is_whitespace())
        })
}

/// Whether a verified token's `claims` are `identity`: the same issuer and subject (checked
/// by the lookup and again here), and every claim the binding names, exactly.
pub fn matches(identity: &WorkloadIdentity, claims: &Map<String, Value>) -> bool {
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    text("iss") == Some(identity.issuer.as_str())
        && text("sub") == Some(identity.subject.as_str())
        && identity
            .claims
            .iter()
            .all(|(path, wanted)| claim_at(claims, path).is_some_and(|found| same(found, wanted)))
}

/// The claim at a dotted `path`, where a key may itself hold dots: at each level the longest
/// key the path starts with is tried first.
fn claim_at<'a>(object: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(value) = object.get(path) {
        return Some(value);
    }
    let splits = path.match_indices('.').map(|(i, _)| i).collect::<Vec<_>>();
    splits.iter().rev().find_map(|&at| {
        let (key, rest) = (&path[..at], &path[at + 1..]);
        match object.get(key)? {
            Value::Object(inner) => claim_at(inner, rest),
            _ => None,
        }
    })
}

/// A scalar equal to what the binding wants. A string matches a number or boolean written the
/// same way, either way round (`"12345"` and `12345`): platforms write ids as either, and so
/// do people.
fn same(found: &Value, wanted: &Value) -> bool {
    match (found, wanted) {
        (Value::String(a), Value::String(b)) => a == b,
        (Value::String(text), other) | (other, Value::String(text)) => {
            scalar_text(other).is_some_and(|t| t == *text)
        }
        (Value::Array(_) | Value::Object(_) | Value::Null, _) => false,
        _ => found == wanted,
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    fn kubernetes() -> Map<String, Value> {
        object(json!({
            "iss": "https://k8s.test", "sub": "system:serviceaccount:jobs:runner",
            "kubernetes.io": {
                "namespace": "jobs",
                "serviceaccount": { "name": "runner", "uid": "8f1c" },
                "pod": { "name": "runner-7d9", "uid": "aa01" }
            }
        }))
    }

    fn identity(claims: Value) -> WorkloadIdentity {
        WorkloadIdentity {
            issuer: "https://k8s.test".into(),
            subject: "system:serviceaccount:jobs:runner".into(),
            claims: serde_json::from_value(claims).unwrap(),
        }
    }

    #[test]
    fn a_path_finds_keys_that_hold_dots_longest_first() {
        let claims = kubernetes();
        assert_eq!(
            claim_at(&claims, "kubernetes.io.serviceaccount.uid"),
            Some(&json!("8f1c"))
        );
        assert_eq!(
            claim_at(&claims, "kubernetes.io.namespace"),
            Some(&json!("jobs"))
        );
        assert_eq!(
            claim_at(&claims, "kubernetes.io.pod.name"),
            Some(&json!("runner-7d9"))
        );
        assert_eq!(claim_at(&claims, "kubernetes.serviceaccount.uid"), None);
        assert_eq!(
            claim_at(&claims, "kubernetes.io.serviceaccount.uid.x"),
            None
        );
        // A flat key with a dot beats the nested reading of the same path.
        let both = object(json!({ "a.b": 1, "a": { "b": 2 } }));
        assert_eq!(claim_at(&both, "a.b"), Some(&json!(1)));
        let nested_only = object(json!({ "a": { "b.c": 3 } }));
        assert_eq!(claim_at(&nested_only, "a.b.c"), Some(&json!(3)));
    }

    #[test]
    fn every_named_claim_must_match_exactly() {
        let claims = kubernetes();
        assert!(matches(&identity(json!({})), &claims));
        assert!(matches(
            &identity(json!({ "kubernetes.io.serviceaccount.uid": "8f1c" })),
            &claims
        ));
        for wrong in [
            json!({ "kubernetes.io.serviceaccount.uid": "other-uid" }),
            json!({ "kubernetes.io.namespace": "JOBS" }),
            json!({ "kubernetes.io.missing": "x" }),
            json!({ "kubernetes.io.serviceaccount": "runner" }),
        ] {
            assert!(!matches(&identity(wrong.clone()), &claims), "{wrong}");
        }
        let mut other_subject = identity(json!({}));
        other_subject.subject = "system:serviceaccount:other:runner".into();
        assert!(!matches(&other_subject, &claims));
    }

    #[test]
    fn an_id_written_as_a_string_matches_a_numeric_claim() {
        let github = object(json!({ "iss": "https://k8s.test",
            "sub": "system:serviceaccount:jobs:runner", "repository_id": 4242, "fork": false }));
        assert!(matches(
            &identity(json!({ "repository_id": "4242" })),
            &github
        ));
        assert!(matches(
            &identity(json!({ "repository_id": 4242 })),
            &github
        ));
        assert!(matches(&identity(json!({ "fork": false })), &github));
        assert!(!matches(
            &identity(json!({ "repository_id": "42" })),
            &github
        ));
        assert!(!matches(&identity(json!({ "fork": "no" })), &github));
        let as_string = object(json!({ "iss": "https://k8s.test",
            "sub": "system:serviceaccount:jobs:runner", "repository_id": "4242" }));
        assert!(matches(
            &identity(json!({ "repository_id": 4242 })),
            &as_string
        ));
        assert!(!matches(
            &identity(json!({ "repository_id": 42 })),
            &as_string
        ));
    }

    #[test]
    fn a_request_names_a_trusted_issuer_and_plain_values() {
        let issuers = vec!["https://k8s.test".to_owned()];
        let request = |issuer: &str, subject: &str, claims: Value| WorkloadRequest {
            issuer: issuer.into(),
            subject: subject.into(),
            claims: serde_json::from_value(claims).unwrap(),
        };
        assert!(request("https://k8s.test", "sa", json!({"a.b": "c"}))
            .validate(&issuers)
            .is_ok());
        for (bad, what) in [
            (request("https://evil.test", "sa", json!({})), "issuer"),
            (request("https://k8s.test/", "sa", json!({})), "issuer"),
            (request("https://k8s.test", " ", json!({})), "subject"),
            (request("https://k8s.test", " sa", json!({})), "subject"),
            (
                request("https://k8s.test", "sa", json!({"a b": "c"})),
                "claims",
            ),
            (request("https://k8s.test", "a\nb", json!({})), "subject"),
            (
                request("https://k8s.test", "sa", json!({"a..b": "c"})),
                "claims",
            ),
            (
                request("https://k8s.test", "sa", json!({".a": "c"})),
                "claims",
            ),
            (
                request("https://k8s.test", "sa", json!({"a": ["c"]})),
                "claims",
            ),
            (
                request("https://k8s.test", "sa", json!({"a": null})),
                "claims",
            ),
        ] {
            let message = bad.validate(&issuers).unwrap_err().to_string();
            assert!(message.starts_with(what), "{message}");
        }
    }
}
