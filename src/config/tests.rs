//! The configuration as a bad environment meets it: every error names its variable.

use super::*;
use secrecy::ExposeSecret;
use std::collections::HashMap;

fn base() -> HashMap<&'static str, String> {
    HashMap::from([
        ("DATABASE_URL", "postgres://u:pw@localhost/db".to_string()),
        ("OIDC_ISSUER", "http://idp.test/realms/x/".to_string()),
        ("OIDC_CLIENT_ID", "broker".to_string()),
        ("OIDC_CLIENT_SECRET", "very-secret".to_string()),
        ("PUBLIC_BASE_URL", "https://broker.test/".to_string()),
        ("OIDC_AUTHORIZED_PARTIES", "frontend".to_string()),
        (
            "TOKEN_ENCRYPTION_KEYS",
            "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=".to_string(),
        ),
    ])
}

fn load(vars: &HashMap<&'static str, String>) -> Result<Config, ConfigError> {
    Config::from_lookup(|k| vars.get(k).cloned(), false)
}

#[test]
fn a_complete_environment_loads_with_defaults() {
    let config = load(&base()).unwrap();
    assert_eq!(config.oidc.issuer.as_str(), "http://idp.test/realms/x");
    assert_eq!(
        config.callback_url().as_str(),
        "https://broker.test/api/auth/manager/offline-callback"
    );
    assert_eq!(config.consent_ttl, Duration::from_secs(600));
    assert_eq!(config.bind_addr.to_string(), "127.0.0.1:8080");
}

#[test]
fn without_database_url_the_embedded_sqlite_file_is_used() {
    let mut vars = base();
    vars.remove("DATABASE_URL");
    vars.insert("TOKEN_BROKER_DATA_DIR", "/var/lib/tb".into());
    let config = load(&vars).unwrap();
    assert!(matches!(config.storage, Storage::EmbeddedDefault));
    assert_eq!(
        config.database_url.expose_secret(),
        "sqlite:///var/lib/tb/token-broker.db"
    );
}

#[test]
fn a_missing_key_is_an_error_outside_dev_mode_and_generated_in_it() {
    let mut vars = base();
    vars.remove("TOKEN_ENCRYPTION_KEYS");
    let err = load(&vars).unwrap_err();
    assert_eq!(err.var, "TOKEN_ENCRYPTION_KEYS");
    assert!(err.to_string().contains("--dev"));

    let dir = std::env::temp_dir().join(format!("tb-config-{}", uuid::Uuid::new_v4()));
    vars.insert("TOKEN_BROKER_DATA_DIR", dir.display().to_string());
    vars.insert("TOKEN_BROKER_DEV", "1".into());
    let config = load(&vars).unwrap();
    let (path, created) = config.dev_key.clone().unwrap();
    assert!(created && path.starts_with(&dir));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn callers_must_be_narrowed_to_an_audience_or_clients_outside_dev_mode() {
    let mut vars = base();
    vars.remove("OIDC_AUTHORIZED_PARTIES");
    let err = load(&vars).unwrap_err();
    assert_eq!(err.var, "OIDC_AUTHORIZED_PARTIES");
    assert!(
        err.to_string().contains("OIDC_AUDIENCE"),
        "one line naming both"
    );
    vars.insert("OIDC_AUDIENCE", "broker-api".into());
    assert!(load(&vars).is_ok());
    vars.remove("OIDC_AUDIENCE");
    vars.insert("TOKEN_BROKER_DEV", "1".into());
    let dir = std::env::temp_dir().join(format!("tb-config-{}", uuid::Uuid::new_v4()));
    vars.insert("TOKEN_BROKER_DATA_DIR", dir.display().to_string());
    assert!(load(&vars).unwrap().dev, "dev mode may run open");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn delegate_clients_may_pin_a_subject_but_never_name_the_brokers_own_client() {
    let mut vars = base();
    vars.insert("DELEGATE_CLIENTS", "runner=8f2c-sa, batch".into());
    let config = load(&vars).unwrap();
    assert_eq!(config.delegate_clients, ["runner", "batch"]);
    assert_eq!(
        config.delegate_subjects,
        [("runner".to_owned(), "8f2c-sa".to_owned())]
    );
    for bad in ["broker", "runner,broker", "broker=sa", "runner=", "=sa"] {
        vars.insert("DELEGATE_CLIENTS", bad.into());
        let error = load(&vars).unwrap_err();
        assert_eq!(error.var, "DELEGATE_CLIENTS", "{bad}");
    }
}

#[test]
fn keycloak_revocation_never_revokes_a_replaced_grant() {
    let mut vars = base();
    let cases = [
        (None, (true, true)),
        (Some("token"), (true, true)),
        (Some("keycloak"), (true, false)),
        (Some("none"), (false, false)),
    ];
    for (value, expected) in cases {
        match value {
            Some(v) => vars.insert("PROVIDER_REVOCATION", v.into()),
            None => vars.remove("PROVIDER_REVOCATION"),
        };
        let config = load(&vars).unwrap();
        assert_eq!(
            (config.provider_revocation, config.revoke_replaced_grant),
            expected,
            "{value:?}"
        );
    }
    vars.insert("PROVIDER_REVOCATION", "sometimes".into());
    assert_eq!(load(&vars).unwrap_err().var, "PROVIDER_REVOCATION");
}

#[test]
fn keycloak_issuer_is_an_alias() {
    let mut vars = base();
    let issuer = vars.remove("OIDC_ISSUER").unwrap();
    vars.insert("KEYCLOAK_ISSUER", issuer);
    assert_eq!(
        load(&vars).unwrap().oidc.issuer.as_str(),
        "http://idp.test/realms/x"
    );
}

#[test]
fn each_missing_variable_is_named() {
    for var in [
        "OIDC_ISSUER",
        "OIDC_CLIENT_ID",
        "OIDC_CLIENT_SECRET",
        "PUBLIC_BASE_URL",
        "TOKEN_ENCRYPTION_KEYS",
    ] {
        let mut vars = base();
        vars.remove(var);
        let err = load(&vars).unwrap_err();
        assert_eq!(err.var, var);
        assert!(err.to_string().starts_with(var));
    }
}

#[test]
fn bad_values_are_named() {
    let cases = [
        ("OIDC_ISSUER", "not a url"),
        ("PUBLIC_BASE_URL", "ftp://x"),
        ("TOKEN_ENCRYPTION_KEYS", "k1:short"),
        ("ALLOWED_REDIRECT_ORIGINS", "https://app.test/with/path"),
        ("BIND_ADDR", "everywhere"),
        ("CONSENT_TTL_SECS", "0"),
        ("PROVIDER_REVOCATION", "sometimes"),
        ("RETENTION_SECS", "-1"),
        ("CORS_ALLOWED_ORIGINS", "https://app.test/path"),
        ("RATE_LIMIT_PER_SECOND", "fast"),
        ("METRICS_ADDR", "everywhere"),
        ("ACCESS_TOKEN_CACHE_MARGIN_SECS", "-5"),
        ("PROVIDER_RETRY_ATTEMPTS", "11"),
        ("PROVIDER_TIMEOUT_SECS", "0"),
        ("REFRESH_LEASE_SECS", "12"),
        ("PROVIDER_MAX_CONCURRENCY", "0"),
        ("PROVIDER_BREAKER_THRESHOLD", "many"),
        ("OFFLINE_IDLE_SECS", "-1"),
        ("OFFLINE_SESSION_MAX_SECS", "0"),
        ("KEEPALIVE_INTERVAL_SECS", "soon"),
        ("KEEPALIVE_CONCURRENCY", "0"),
        ("EXPIRING_NOTICE_SECS", "0"),
        ("DATABASE_POOL_SIZE", "0"),
    ];
    for (var, value) in cases {
        let mut vars = base();
        vars.insert(var, value.to_string());
        assert_eq!(load(&vars).unwrap_err().var, var, "{var}={value}");
    }
}

#[test]
fn a_webhook_needs_url_and_a_long_enough_secret() {
    let mut vars = base();
    vars.insert("WEBHOOK_SECRET", "a-secret-without-a-url".into());
    assert_eq!(load(&vars).unwrap_err().var, "WEBHOOK_URL");
    vars.insert("WEBHOOK_URL", "http://hooks.test/x".into());
    vars.insert("WEBHOOK_SECRET", "short".into());
    assert_eq!(load(&vars).unwrap_err().var, "WEBHOOK_SECRET");
    vars.insert("WEBHOOK_SECRET", "a-long-enough-shared-secret".into());
    let config = load(&vars).unwrap();
    let printed = format!("{config:?}");
    assert!(config.webhook.is_some());
    assert!(!printed.contains("a-long-enough-shared-secret"));
}

#[test]
fn redirect_origins_are_parsed() {
    let mut vars = base();
    vars.insert(
        "ALLOWED_REDIRECT_ORIGINS",
        "https://app.test, http://localhost:3000".into(),
    );
    let config = load(&vars).unwrap();
    assert_eq!(config.allowed_redirect_origins.len(), 2);
    assert_eq!(
        config.allowed_redirect_origins[1].ascii_serialization(),
        "http://localhost:3000"
    );
}

#[test]
fn consent_prompt_defaults_to_consent_and_refuses_other_values() {
    use crate::oidc::ConsentPrompt;
    let mut vars = base();
    assert_eq!(
        load(&vars).unwrap().oidc.consent_prompt,
        ConsentPrompt::Consent
    );
    vars.insert("OIDC_CONSENT_PROMPT", "none".into());
    assert_eq!(
        load(&vars).unwrap().oidc.consent_prompt,
        ConsentPrompt::Omit
    );
    vars.insert("OIDC_CONSENT_PROMPT", "login".into());
    let err = load(&vars).unwrap_err();
    assert!(err.to_string().contains("OIDC_CONSENT_PROMPT"), "{err}");
}

#[test]
fn debug_redacts_secrets() {
    let printed = format!("{:?}", load(&base()).unwrap());
    assert!(!printed.contains("very-secret"));
    assert!(!printed.contains("pw@"));
    assert!(!printed.contains("AQEBAQEB"));
    assert!(printed.contains("broker"));
}

const VARIABLES: [&str; 47] = [
    "ACCESS_TOKEN_CACHE_MARGIN_SECS",
    "ACCESS_TOKEN_CACHE_MAX_ROWS",
    "ADMIN_ROLE",
    "ALLOWED_REDIRECT_ORIGINS",
    "AUDIT_RETENTION_SECS",
    "BEARER_CACHE_MAX_ENTRIES",
    "BIND_ADDR",
    "CLEANUP_INTERVAL_SECS",
    "CONSENT_TTL_SECS",
    "CORS_ALLOWED_ORIGINS",
    "DATABASE_POOL_SIZE",
    "DATABASE_URL",
    "DELEGATE_CLIENTS",
    "EXPIRING_NOTICE_SECS",
    "KEEPALIVE_CONCURRENCY",
    "KEEPALIVE_INTERVAL_SECS",
    "KEEPALIVE_LEAD_SECS",
    "KEYCLOAK_ISSUER",
    "MAX_PENDING_CONSENTS",
    "METRICS_ADDR",
    "OFFLINE_IDLE_SECS",
    "OFFLINE_SESSION_MAX_SECS",
    "OFFLINE_TOKEN_MAX_AGE_SECS",
    "OIDC_AUDIENCE",
    "OIDC_AUTHORIZED_PARTIES",
    "OIDC_CLIENT_ID",
    "OIDC_CLIENT_SECRET",
    "OIDC_CONSENT_PROMPT",
    "OIDC_ISSUER",
    "PROVIDER_BREAKER_COOLDOWN_SECS",
    "PROVIDER_BREAKER_THRESHOLD",
    "PROVIDER_MAX_CONCURRENCY",
    "PROVIDER_RETRY_ATTEMPTS",
    "PROVIDER_REVOCATION",
    "PROVIDER_TIMEOUT_SECS",
    "PUBLIC_BASE_URL",
    "RATE_LIMIT_BURST",
    "RATE_LIMIT_PER_SECOND",
    "REFRESH_LEASE_SECS",
    "RETENTION_SECS",
    "TOKEN_BROKER_DATA_DIR",
    "TOKEN_ENCRYPTION_KEYS",
    "TRUSTED_PROXIES",
    "TRUST_FORWARDED_FOR",
    "WEBHOOK_RETRY_BASE_MS",
    "WEBHOOK_SECRET",
    "WEBHOOK_URL",
];

/// Values a careless or hostile environment may hold: numbers of every size and sign,
/// URLs, lists, control characters, arbitrary text.
fn value() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        "-?[0-9]{0,25}(\\.[0-9]{0,3})?",
        "(https?|ftp|sqlite|postgres)://[a-z0-9.:@/%\\[\\]-]{0,40}",
        "([a-z0-9./:-]{0,20}, ?){0,4}",
        "[0-9a-f:./]{0,30}",
        ".{0,60}",
    ]
}

proptest::proptest! {
    /// Whatever one variable holds, loading answers (a config or an error naming it), never a
    /// panic.
    #[test]
    fn no_value_of_any_variable_makes_loading_panic(
        which in 0..VARIABLES.len(),
        raw in value(),
    ) {
        let mut vars = base();
        vars.insert(VARIABLES[which], raw);
        if let Err(e) = load(&vars) {
            proptest::prop_assert!(!e.to_string().is_empty());
        }
    }

    /// The same with several variables changed at once.
    #[test]
    fn no_mix_of_values_makes_loading_panic(
        changes in proptest::collection::vec((0..VARIABLES.len(), value()), 1..8),
    ) {
        let mut vars = base();
        for (which, raw) in changes {
            vars.insert(VARIABLES[which], raw);
        }
        let _ = load(&vars);
    }
}

#[test]
fn workload_issuers_need_an_audience_and_files_name_listed_issuers() {
    let mut vars = base();
    assert!(load(&vars).unwrap().workload.is_none(), "off by default");
    vars.insert("WORKLOAD_AUDIENCE", "https://broker.test".into());
    assert_eq!(
        load(&vars).unwrap_err().var,
        "WORKLOAD_AUDIENCE",
        "no issuers"
    );
    vars.remove("WORKLOAD_AUDIENCE");
    vars.insert(
        "WORKLOAD_ISSUERS",
        "https://token.actions.githubusercontent.com, https://k8s.test".into(),
    );
    assert_eq!(load(&vars).unwrap_err().var, "WORKLOAD_AUDIENCE");
    vars.insert("WORKLOAD_AUDIENCE", "https://k8s.test".into());
    assert_eq!(
        load(&vars).unwrap_err().var,
        "WORKLOAD_AUDIENCE",
        "the API server's own audience"
    );
    vars.insert("WORKLOAD_AUDIENCE", "https://broker.test".into());
    let settings = load(&vars).unwrap().workload.unwrap();
    assert_eq!(
        settings.issuers,
        [
            "https://token.actions.githubusercontent.com",
            "https://k8s.test"
        ]
    );
    assert_eq!(settings.max_token_lifetime, Duration::from_secs(24 * 3600));

    vars.insert(
        "WORKLOAD_JWKS_FILES",
        "https://k8s.test=/etc/k8s/jwks.json".into(),
    );
    let settings = load(&vars).unwrap().workload.unwrap();
    assert_eq!(
        settings.jwks_file("https://k8s.test").unwrap(),
        &std::path::PathBuf::from("/etc/k8s/jwks.json")
    );
    for bad in ["https://other.test=/x", "no-equals-sign"] {
        vars.insert("WORKLOAD_JWKS_FILES", bad.into());
        assert_eq!(load(&vars).unwrap_err().var, "WORKLOAD_JWKS_FILES", "{bad}");
    }
    vars.remove("WORKLOAD_JWKS_FILES");
    for bad in ["http://k8s.test", "not a url"] {
        vars.insert("WORKLOAD_ISSUERS", bad.into());
        assert_eq!(load(&vars).unwrap_err().var, "WORKLOAD_ISSUERS", "{bad}");
    }
    vars.insert("WORKLOAD_ISSUERS", "http://127.0.0.1:9999".into());
    assert!(
        load(&vars).is_ok(),
        "http on loopback, for local platforms and tests"
    );
}
