//! Every route's path, written once: the router mounts them, the OpenAPI document names them
//! (`#[utoipa::path(path = …)]`), the rate limiter recognises them and the client calls them.
//! Templates use axum's `{name}` segments; the functions fill them in for a client.

use std::fmt::Display;

pub const OFFLINE_CONSENT: &str = "/api/auth/manager/offline-consent";
pub const OFFLINE_CALLBACK: &str = "/api/auth/manager/offline-callback";
pub const ACCESS_TOKEN: &str = "/api/auth/manager/access-token";
/// RFC 8693 token exchange.
pub const TOKEN: &str = "/api/auth/manager/token";
pub const OFFLINE_TOKENS: &str = "/api/auth/manager/offline-tokens";
pub const OFFLINE_TOKEN: &str = "/api/auth/manager/offline-tokens/{id}";
pub const RECONSENT: &str = "/api/auth/manager/offline-tokens/{id}/reconsent";
pub const TASK_KEYS: &str = "/api/auth/manager/offline-tokens/{id}/task-keys";
pub const TASK_KEY: &str = "/api/auth/manager/offline-tokens/{id}/task-keys/{taskKeyId}";
pub const WORKLOADS: &str = "/api/auth/manager/offline-tokens/{id}/workloads";
pub const WORKLOAD: &str = "/api/auth/manager/offline-tokens/{id}/workloads/{bindingId}";
pub const OPENAPI: &str = "/api/openapi.json";
pub const HEALTHZ: &str = "/healthz";
pub const READYZ: &str = "/readyz";
pub const METRICS: &str = "/metrics";
pub const ADMIN: &str = "/admin";
pub const ADMIN_CALLBACK: &str = "/admin/callback";
pub const ADMIN_HISTORY: &str = "/admin/tokens/{id}/history";
pub const ADMIN_REVOKE: &str = "/admin/tokens/{id}/revoke";

/// `OFFLINE_TOKEN` for row `id`.
pub fn offline_token(id: impl Display) -> String {
    fill(OFFLINE_TOKEN, &[("id", &id)])
}

/// `RECONSENT` for row `id`.
pub fn reconsent(id: impl Display) -> String {
    fill(RECONSENT, &[("id", &id)])
}

/// `TASK_KEYS` of row `id`.
pub fn task_keys(id: impl Display) -> String {
    fill(TASK_KEYS, &[("id", &id)])
}

/// `TASK_KEY` `key` of row `id`.
pub fn task_key(id: impl Display, key: impl Display) -> String {
    fill(TASK_KEY, &[("id", &id), ("taskKeyId", &key)])
}

/// `WORKLOADS` of row `id`.
pub fn workloads(id: impl Display) -> String {
    fill(WORKLOADS, &[("id", &id)])
}

/// `WORKLOAD` `binding` of row `id`.
pub fn workload(id: impl Display, binding: impl Display) -> String {
    fill(WORKLOAD, &[("id", &id), ("bindingId", &binding)])
}

/// `ADMIN_HISTORY` of row `id`.
pub fn admin_history(id: impl Display) -> String {
    fill(ADMIN_HISTORY, &[("id", &id)])
}

/// `ADMIN_REVOKE` of row `id`.
pub fn admin_revoke(id: impl Display) -> String {
    fill(ADMIN_REVOKE, &[("id", &id)])
}

fn fill(template: &str, values: &[(&str, &dyn Display)]) -> String {
    values
        .iter()
        .fold(template.to_owned(), |path, (name, value)| {
            path.replace(&format!("{{{name}}}"), &value.to_string())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_filled_segment_by_segment() {
        assert_eq!(offline_token(7), "/api/auth/manager/offline-tokens/7");
        assert_eq!(
            reconsent("a"),
            "/api/auth/manager/offline-tokens/a/reconsent"
        );
        assert_eq!(
            task_key("a", "b"),
            "/api/auth/manager/offline-tokens/a/task-keys/b"
        );
        assert_eq!(
            task_keys("a"),
            "/api/auth/manager/offline-tokens/a/task-keys"
        );
        assert_eq!(
            workload("a", "b"),
            "/api/auth/manager/offline-tokens/a/workloads/b"
        );
    }
}
