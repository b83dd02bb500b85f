//! The document's patterns must say exactly what the validators do: checked on generated
//! strings (proptest) drawn from the characters where the rules differ.

use proptest::prelude::*;
use regex::Regex;

use super::*;
use crate::grants::consent::{validate_redirect_uri, validate_task_id};
use crate::grants::task_keys::rules::validate_name;
use crate::grants::task_keys::workload::{claim_path, exact_text as exact_subject};
use crate::grants::Scope;

fn pattern_of(schema: &Value) -> Regex {
    let pattern = schema["pattern"].as_str().unwrap_or_default();
    Regex::new(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"))
}

fn origin(url: &str) -> url::Origin {
    url::Url::parse(url).unwrap().origin()
}

/// Text with the characters the rules care about: whitespace of several kinds, controls,
/// ordinary and non-ASCII letters.
fn text(max: usize) -> impl Strategy<Value = String> {
    let chars = prop_oneof![
        Just(' '),
        Just('\t'),
        Just('\n'),
        Just('\u{3000}'),
        Just('\u{85}'),
        Just('\u{1c}'),
        Just('\u{7f}'),
        Just('\u{0}'),
        Just('é'),
        Just('"'),
        Just('\\'),
        prop::char::range('a', 'z'),
    ];
    prop::collection::vec(chars, 0..max).prop_map(|v| v.into_iter().collect())
}

fn scope_text() -> impl Strategy<Value = String> {
    let chars = prop_oneof![
        4 => Just(' '),
        1 => Just('"'),
        1 => Just('\\'),
        1 => Just('\t'),
        1 => Just('é'),
        10 => prop::char::range('a', 'e'),
    ];
    prop::collection::vec(chars, 0..140).prop_map(|v| v.into_iter().collect())
}

proptest! {
    #[test]
    fn the_task_id_pattern_is_the_validator(raw in text(210)) {
        let documented = pattern_of(&printable(MAX_TASK_ID_LEN)).is_match(&raw);
        prop_assert_eq!(documented, validate_task_id(&raw).is_ok(), "{:?}", raw);
    }

    #[test]
    fn long_task_ids_are_judged_alike(pad in 195usize..205, lead in 0usize..3) {
        let raw = format!("{}{}", " ".repeat(lead), "x".repeat(pad));
        let documented = pattern_of(&printable(MAX_TASK_ID_LEN)).is_match(&raw);
        prop_assert_eq!(documented, validate_task_id(&raw).is_ok(), "{}", raw.len());
    }

    #[test]
    fn the_key_name_pattern_is_the_validator(raw in text(110)) {
        let documented = pattern_of(&printable(MAX_NAME_LEN)).is_match(&raw);
        prop_assert_eq!(documented, validate_name(&raw).is_ok(), "{:?}", raw);
    }

    #[test]
    fn the_workload_subject_pattern_is_the_validator(raw in text(40)) {
        let documented = pattern_of(&exact_text(30)).is_match(&raw);
        prop_assert_eq!(documented, exact_subject(&raw, 30), "{:?}", raw);
    }

    #[test]
    fn the_claim_path_pattern_is_the_validator(
        raw in prop::collection::vec(
            prop_oneof![4 => prop::char::range('a', 'c'), 2 => Just('.'), 1 => Just(' '),
                        1 => Just('\u{0}'), 1 => Just('é'), 1 => Just('\u{3000}')],
            0..12,
        ).prop_map(|v| v.into_iter().collect::<String>())
    ) {
        let schema = claims();
        let names = &schema["propertyNames"];
        let documented = pattern_of(names).is_match(&raw)
            && raw.chars().count() <= MAX_PATH_LEN;
        prop_assert_eq!(documented, claim_path(&raw), "{:?}", raw);
    }

    #[test]
    fn the_scope_pattern_is_the_parser(raw in scope_text()) {
        let schema = scope();
        let documented = pattern_of(&schema).is_match(&raw) && raw.chars().count() <= MAX_SCOPE_LEN;
        prop_assert_eq!(documented, Scope::parse(&raw).is_ok(), "{:?}", raw);
    }

    #[test]
    fn the_redirect_pattern_is_the_validator(
        base in prop_oneof![
            Just("https://app.example.org"), Just("HTTPS://App.Example.org:443"),
            Just("http://localhost:3000"), Just("http://localhost:3001"),
            Just("https://app.example.org.evil.test"), Just("https://app.example.org@evil.test"),
            Just("https://evil.test"), Just("ftp://app.example.org"),
            Just("https:app.example.org"), Just("https:/app.example.org"),
            Just("https:\\\\app.example.org"), Just("https:///app.example.org"),
            Just("https://app.example.org."), Just("https://user:pw@app.example.org"),
        ],
        sep in prop_oneof![
            Just(""), Just("/"), Just("?"), Just("#"), Just("\\"), Just(":"), Just(":443/"),
            Just(":0443"), Just(":0"), Just(":3000"), Just(":03000"), Just(":80"), Just(":/"),
        ],
        tail in text(12),
    ) {
        let origins = [origin("https://app.example.org"), origin("http://localhost:3000")];
        let raw = format!("{base}{sep}{tail}");
        let documented = pattern_of(&redirect_uri(&origins)).is_match(&raw);
        prop_assert_eq!(documented, validate_redirect_uri(&raw, &origins).is_ok(), "{:?}", raw);
    }
}

#[test]
fn the_deployments_rules_land_in_the_document() {
    let origins = [origin("https://app.example.org")];
    let delegates = ["job-runner".to_owned()];
    let document = ApiDocument::new(&DeploymentRules {
        redirect_origins: &origins,
        delegates: &delegates,
        workload_issuers: &[],
    });
    let document = document.json();
    let schemas = &document["components"]["schemas"];
    for schema in ["ConsentRequest", "ReconsentRequest"] {
        let redirect = &schemas[schema]["properties"]["redirectUri"];
        assert!(redirect["pattern"].as_str().unwrap().contains("[eE][xX]"));
    }
    assert_eq!(
        schemas["ConsentRequest"]["properties"]["delegates"]["items"]["enum"],
        json!(["job-runner"])
    );
}

#[test]
fn without_origins_or_delegates_neither_may_be_sent() {
    let document = ApiDocument::new(&DeploymentRules {
        redirect_origins: &[],
        delegates: &[],
        workload_issuers: &[],
    });
    let document = document.json();
    let consent = &document["components"]["schemas"]["ConsentRequest"]["properties"];
    assert_eq!(consent["redirectUri"]["type"], "null");
    assert_eq!(consent["delegates"]["maxItems"], 0);
}

#[test]
fn every_rule_finds_its_place_in_the_document() {
    let document = ApiDocument::new(&DeploymentRules {
        redirect_origins: &[],
        delegates: &[],
        workload_issuers: &[],
    });
    let doc = &document.json();
    let schemas = &doc["components"]["schemas"];
    assert!(schemas["ConsentRequest"]["properties"]["taskId"]["pattern"].is_string());
    assert!(schemas["CreateTaskKey"]["properties"]["name"]["pattern"].is_string());
    assert_eq!(
        schemas["CreateTaskKey"]["properties"]["allowedCidrs"]["maxItems"],
        20
    );
    assert_eq!(
        schemas["CreateTaskKey"]["properties"]["maxUses"]["minimum"],
        1
    );
    for schema in ["AccessTokenRequest", "CreateTaskKey", "ExchangeRequest"] {
        assert!(
            schemas[schema]["properties"]["scope"]["pattern"].is_string(),
            "{schema}"
        );
    }
    assert_eq!(
        schemas["ExchangeRequest"]["properties"]["grant_type"]["enum"],
        json!([TOKEN_EXCHANGE])
    );
    assert_eq!(
        schemas["AccessTokenRequest"]["required"],
        json!(["persistentTokenId"])
    );
    let list = &doc["paths"]["/api/auth/manager/offline-tokens"]["get"]["parameters"];
    let param = |name: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()
            .clone()
    };
    assert!(param("taskId")["schema"]["pattern"].is_string());
    assert_eq!(param("limit")["schema"]["maximum"], 200);
    let callback = &doc["paths"]["/api/auth/manager/offline-callback"]["get"]["parameters"];
    let state = callback
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "state")
        .unwrap();
    assert_eq!(state["required"], true);
    assert_eq!(state["schema"]["maxLength"], 512);
}
