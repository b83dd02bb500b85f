//! Local "platforms" for workload identity: each has an issuer, a key pair of its own and a
//! JWKS file the broker reads (`WORKLOAD_JWKS_FILES`), and mints tokens shaped as Kubernetes
//! projected service-account tokens and GitHub Actions id tokens are.

use std::path::PathBuf;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::{now, Signer};

pub const KUBERNETES: &str = "https://kubernetes.default.svc.cluster.local";
pub const GITHUB: &str = "https://token.actions.githubusercontent.com";
/// What platform tokens must carry in `aud` for this broker (`WORKLOAD_AUDIENCE`).
pub const AUDIENCE: &str = "https://broker.test";

pub struct Platform {
    pub issuer: &'static str,
    signer: Signer,
    /// Keys published before a rotation, still in the file.
    old: Vec<Value>,
    pub jwks_file: PathBuf,
}

impl Platform {
    pub fn new(issuer: &'static str) -> Self {
        let dir = std::env::temp_dir().join(format!("tb-platform-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let platform = Self {
            issuer,
            signer: Signer::with_kid(&format!("{}-1", kid_prefix(issuer))),
            old: Vec::new(),
            jwks_file: dir.join("jwks.json"),
        };
        platform.publish();
        platform
    }

    fn publish(&self) {
        let mut keys = self.old.clone();
        keys.push(self.signer.jwk().clone());
        std::fs::write(&self.jwks_file, json!({ "keys": keys }).to_string()).unwrap();
    }

    /// A new signing key under a new `kid`, published beside the old one.
    pub fn rotate(&mut self, generation: u32) {
        self.old.push(self.signer.jwk().clone());
        self.signer = Signer::with_kid(&format!("{}-{generation}", kid_prefix(self.issuer)));
        self.publish();
    }

    /// Signs `claims` with the platform's current key.
    pub fn sign(&self, claims: &Value) -> String {
        self.signer.sign(claims, &json!({}))
    }

    /// The claims of a Kubernetes projected service-account token for the broker.
    pub fn kubernetes_claims(namespace: &str, account: &str, uid: &str) -> Value {
        json!({
            "iss": KUBERNETES,
            "sub": format!("system:serviceaccount:{namespace}:{account}"),
            "aud": [AUDIENCE],
            "iat": now(), "nbf": now(), "exp": now() + 3600,
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": { "name": account, "uid": uid },
                "pod": { "name": format!("{account}-7d9f"), "uid": Uuid::new_v4().to_string() },
            },
        })
    }

    /// The claims of a GitHub Actions id token for the broker.
    pub fn github_claims(repository: &str, repository_id: &str, git_ref: &str) -> Value {
        json!({
            "iss": GITHUB,
            "sub": format!("repo:{repository}:ref:{git_ref}"),
            "aud": AUDIENCE,
            "iat": now(), "nbf": now(), "exp": now() + 300,
            "repository": repository, "repository_id": repository_id,
            "repository_owner": repository.split('/').next().unwrap_or_default(),
            "ref": git_ref, "event_name": "push", "runner_environment": "github-hosted",
            "job_workflow_ref": format!("{repository}/.github/workflows/nightly.yml@{git_ref}"),
        })
    }
}

fn kid_prefix(issuer: &str) -> &'static str {
    if issuer == KUBERNETES {
        "k8s"
    } else {
        "gha"
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        if let Some(dir) = self.jwks_file.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Settings that trust both platforms, their keys read from their files.
pub fn trusting(kubernetes: &Platform, github: &Platform) -> Vec<(&'static str, String)> {
    vec![
        ("WORKLOAD_ISSUERS", format!("{KUBERNETES},{GITHUB}")),
        ("WORKLOAD_AUDIENCE", AUDIENCE.to_owned()),
        (
            "WORKLOAD_JWKS_FILES",
            format!(
                "{KUBERNETES}={},{GITHUB}={}",
                kubernetes.jwks_file.display(),
                github.jwks_file.display()
            ),
        ),
    ]
}
