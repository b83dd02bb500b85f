//! Every rule the server enforces on what a caller sends, written into the served OpenAPI
//! document from the same constants the validators use, so that clients generated from it and
//! fuzzers send what this broker accepts.
//!
//! Each pattern states the validator's rule exactly: no stricter (a request the document calls
//! invalid must really be refused) and no looser (one it calls valid must not be refused for
//! its form). Rules that depend on stored state (a consent's `state`, a task key, a row's
//! expiry) cannot be written down; docs/api.md lists them.

use serde_json::{json, Value};

use crate::grants::callback::MAX_STATE_LEN;
use crate::grants::consent::{MAX_REDIRECT_URI_LEN, MAX_TASK_ID_LEN};
use crate::grants::scope::{MAX_LEN as MAX_SCOPE_LEN, MAX_TOKENS as MAX_SCOPE_TOKENS};
use crate::grants::task_keys::workload::{
    MAX_CLAIMS, MAX_PATH_LEN, MAX_SUBJECT_LEN, MAX_VALUE_LEN,
};
use crate::grants::task_keys::{MAX_CIDRS, MAX_NAME_LEN, MAX_USES};
use crate::http::token_exchange::{
    ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE, JWT_TYPE, TASK_KEY_TYPE, TOKEN_EXCHANGE,
};

use super::ApiDoc;
use crate::api::paths;
use crate::http::api_document::ApiDocument;
use utoipa::OpenApi;

/// What Rust's `trim` removes (Unicode `White_Space`).
const WHITESPACE: &str =
    r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
/// What `char::is_control` refuses (Unicode `Cc`).
const CONTROL: &str = r"\x00-\x1f\x7f-\x9f";
/// RFC 6749 `scope-token`.
const SCOPE_TOKEN: &str = r"[\x21\x23-\x5b\x5d-\x7e]+";

/// What this deployment accepts beyond the code's own rules.
pub struct DeploymentRules<'a> {
    /// `ALLOWED_REDIRECT_ORIGINS`: the only origins a `redirectUri` may name.
    pub redirect_origins: &'a [url::Origin],
    /// `DELEGATE_CLIENTS`: the only service accounts a consent may name.
    pub delegates: &'a [String],
    /// `WORKLOAD_ISSUERS`: the only issuers a workload binding may name.
    pub workload_issuers: &'a [String],
}

/// The OpenAPI document as served, with every rule in it: written once at start-up.
impl ApiDocument {
    pub fn new(rules: &DeploymentRules<'_>) -> Self {
        let mut doc = Doc(serde_json::to_value(ApiDoc::openapi()).unwrap_or_default());
        let schemas = "/components/schemas";
        let task_id = printable(MAX_TASK_ID_LEN);
        doc.patch(
            &format!("{schemas}/ConsentRequest/properties/taskId"),
            &task_id,
        );
        doc.patch_parameter(paths::OFFLINE_TOKENS, "get", "taskId", &task_id);
        for schema in ["CreateTaskKey", "CreateWorkloadBinding"] {
            doc.patch(
                &format!("{schemas}/{schema}/properties/name"),
                &printable(MAX_NAME_LEN),
            );
            doc.patch(
                &format!("{schemas}/{schema}/properties/allowedCidrs"),
                &json!({
                    "maxItems": MAX_CIDRS,
                    "items": { "type": "string", "pattern": format!(
                        "^[{WHITESPACE}]*[0-9A-Fa-f:.]+(?:/[0-9]+)?[{WHITESPACE}]*$") },
                }),
            );
            doc.patch(
                &format!("{schemas}/{schema}/properties/maxUses"),
                &json!({ "minimum": 1, "maximum": MAX_USES }),
            );
        }
        for schema in [
            "AccessTokenRequest",
            "CreateTaskKey",
            "CreateWorkloadBinding",
            "ExchangeRequest",
        ] {
            doc.patch(&format!("{schemas}/{schema}/properties/scope"), &scope());
        }
        let binding = format!("{schemas}/CreateWorkloadBinding/properties");
        doc.replace(
            &format!("{binding}/issuer"),
            workload_issuers(rules.workload_issuers),
        );
        doc.patch(&format!("{binding}/subject"), &exact_text(MAX_SUBJECT_LEN));
        doc.patch(&format!("{binding}/claims"), &claims());
        let exchange = format!("{schemas}/ExchangeRequest/properties");
        doc.patch(
            &format!("{exchange}/grant_type"),
            &json!({ "enum": [TOKEN_EXCHANGE] }),
        );
        doc.patch(
            &format!("{exchange}/subject_token_type"),
            &json!({ "enum": [TASK_KEY_TYPE, JWT_TYPE, ID_TOKEN_TYPE] }),
        );
        doc.patch(
            &format!("{exchange}/requested_token_type"),
            &json!({ "enum": [ACCESS_TOKEN_TYPE, null] }),
        );
        doc.patch_parameter(
            paths::OFFLINE_CALLBACK,
            "get",
            "state",
            &json!({ "minLength": 1, "maxLength": MAX_STATE_LEN }),
        );
        let redirect = redirect_uri(rules.redirect_origins);
        for schema in ["ConsentRequest", "ReconsentRequest"] {
            doc.replace(
                &format!("{schemas}/{schema}/properties/redirectUri"),
                redirect.clone(),
            );
        }
        doc.replace(
            &format!("{schemas}/ConsentRequest/properties/delegates"),
            delegates(rules.delegates),
        );
        Self::from_json(serde_json::to_vec(&doc.0).unwrap_or_default())
    }

    #[cfg(test)]
    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes()).unwrap_or_default()
    }
}

/// The document being written; a place that is missing is logged (a renamed field), never a
/// panic.
struct Doc(Value);

impl Doc {
    fn replace(&mut self, pointer: &str, value: Value) {
        match self.0.pointer_mut(pointer) {
            Some(slot) => *slot = value,
            None => tracing::error!(pointer, "the OpenAPI document has no such place"),
        }
    }

    /// Adds `keywords` to the schema at `pointer`.
    fn patch(&mut self, pointer: &str, keywords: &Value) {
        match (self.0.pointer_mut(pointer), keywords) {
            (Some(Value::Object(schema)), Value::Object(keywords)) => {
                schema.extend(keywords.clone());
            }
            _ => tracing::error!(pointer, "the OpenAPI document has no such schema"),
        }
    }

    fn patch_parameter(&mut self, path: &str, method: &str, name: &str, keywords: &Value) {
        let pointer = format!("/paths/{}/{method}/parameters", path.replace('/', "~1"));
        let index = self
            .0
            .pointer(&pointer)
            .and_then(Value::as_array)
            .and_then(|list| list.iter().position(|p| p["name"] == name));
        match index {
            Some(i) => self.patch(&format!("{pointer}/{i}/schema"), keywords),
            None => tracing::error!(path, name, "the OpenAPI document has no such parameter"),
        }
    }
}

/// 1 to `max` characters after trimming whitespace, none of them a control character.
fn printable(max: usize) -> Value {
    let inner = max.saturating_sub(2);
    json!({ "pattern": format!(
        "^[{WHITESPACE}]*[^{CONTROL}{WHITESPACE}](?:[^{CONTROL}]{{0,{inner}}}[^{CONTROL}{WHITESPACE}])?[{WHITESPACE}]*$"
    ) })
}

/// 1 to `max` characters, none a control character, no whitespace at either end.
fn exact_text(max: usize) -> Value {
    let inner = max.saturating_sub(2);
    json!({ "pattern": format!(
        "^[^{CONTROL}{WHITESPACE}](?:[^{CONTROL}]{{0,{inner}}}[^{CONTROL}{WHITESPACE}])?$"
    ) })
}

/// A binding's claims: dotted paths of plain segments, scalar values.
fn claims() -> Value {
    let segment = format!("[^.{CONTROL}{WHITESPACE}]+");
    json!({
        "maxProperties": MAX_CLAIMS,
        "propertyNames": {
            "maxLength": MAX_PATH_LEN,
            "pattern": format!("^{segment}(?:\\.{segment})*$"),
        },
        "additionalProperties": {
            "anyOf": [
                { "type": "string", "maxLength": MAX_VALUE_LEN },
                { "type": "number" },
                { "type": "boolean" },
            ],
        },
    })
}

/// The issuers in WORKLOAD_ISSUERS; none when none is listed (bindings are off).
fn workload_issuers(issuers: &[String]) -> Value {
    let description = "A trusted platform issuer (the broker's WORKLOAD_ISSUERS), exactly as \
                       the platform's tokens write `iss`.";
    if issuers.is_empty() {
        return json!({ "type": "string", "enum": [], "description": description });
    }
    json!({ "type": "string", "enum": issuers, "description": description })
}

/// Space-separated RFC 6749 scope tokens, as many as the broker takes.
fn scope() -> Value {
    let more = MAX_SCOPE_TOKENS.saturating_sub(1);
    json!({
        "maxLength": MAX_SCOPE_LEN,
        "pattern": format!("^ *{SCOPE_TOKEN}(?: +{SCOPE_TOKEN}){{0,{more}}} *$"),
    })
}

/// Absolute http(s) URLs on an allowed origin, or nothing at all when none is allowed.
fn redirect_uri(origins: &[url::Origin]) -> Value {
    let description = format!(
        "Where to send the browser after the callback: an http(s) URL on one of the origins the \
         broker allows (ALLOWED_REDIRECT_ORIGINS), without spaces or control characters, at most \
         {MAX_REDIRECT_URI_LEN} bytes. Without any allowed origin, leave it out."
    );
    let origins: Vec<String> = origins.iter().filter_map(origin_pattern).collect();
    if origins.is_empty() {
        return json!({ "type": "null", "description": description });
    }
    json!({
        "type": ["string", "null"],
        "maxLength": MAX_REDIRECT_URI_LEN,
        "pattern": format!("^(?:{})(?:[/?#\\\\][^{CONTROL} ]*)?$", origins.join("|")),
        "description": description,
    })
}

/// An origin as URLs may write it: scheme and host in any case, the default port optional.
fn origin_pattern(origin: &url::Origin) -> Option<String> {
    let url::Origin::Tuple(scheme, host, port) = origin else {
        return None;
    };
    let default = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    // URLs may write the port with leading zeros, and the default one as nothing at all.
    let port = if *port == default {
        format!("(?::(?:0*{port})?)?")
    } else {
        format!(":0*{port}")
    };
    Some(format!(
        "{}://{}{port}",
        any_case(scheme),
        any_case(&host.to_string())
    ))
}

fn any_case(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphabetic() {
                format!("[{}{}]", c.to_ascii_lowercase(), c.to_ascii_uppercase())
            } else if c.is_ascii_alphanumeric() {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

/// Client ids listed in DELEGATE_CLIENTS; none when none is listed. Repeats fold into one.
fn delegates(delegates: &[String]) -> Value {
    let description = "Service accounts (client ids the broker lists in DELEGATE_CLIENTS) that \
                       may redeem this token for the user.";
    if delegates.is_empty() {
        return json!({
            "type": "array", "items": { "type": "string" }, "maxItems": 0,
            "description": description,
        });
    }
    json!({
        "type": "array",
        "items": { "type": "string", "enum": delegates },
        "description": description,
    })
}

#[cfg(test)]
mod tests;
