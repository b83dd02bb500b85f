//! Who asks for a row's access token, and whether they may.

use uuid::Uuid;

use crate::oidc::CallerClaims;
use crate::vault::TaskKey;

/// Everyone who calls the broker. The access path serves all but the operator, who signs in to
/// the admin page and manages anyone's rows but redeems none.
#[derive(Clone, Debug)]
pub enum Caller {
    /// A signed-in user (bearer `sub`): their own rows only.
    User(String),
    /// A delegated client's service account (its client id, and the token's `sub`): rows
    /// whose consent named the client.
    Delegate { client: String, subject: String },
    /// A task holding a key: the key's row only.
    Task(TaskKey),
    /// A workload whose platform token matched a binding: the binding's row only.
    Workload(TaskKey),
    /// An operator signed in to the admin page with the admin role (their `sub`).
    Operator(String),
}

/// Which rows a caller may manage (revoke, re-consent, give keys to), as the vault filters them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manages<'a> {
    /// The rows of this owner.
    Own(&'a str),
    /// Every row (an operator).
    Any,
    /// None (task keys and delegates only redeem).
    Nothing,
}

impl Caller {
    /// The actor written into the audit trail.
    pub fn actor(&self) -> String {
        match self {
            Caller::User(sub) => sub.clone(),
            Caller::Delegate { client, .. } => format!("client:{client}"),
            Caller::Task(key) => format!("task-key:{}", key.id),
            Caller::Workload(binding) => format!("workload:{}", binding.id),
            Caller::Operator(sub) => sub.clone(),
        }
    }

    /// Which rows this caller may manage. The one rule; the vault applies it in the statement
    /// that changes the row.
    pub fn manages(&self) -> Manages<'_> {
        match self {
            Caller::User(sub) => Manages::Own(sub),
            Caller::Operator(_) => Manages::Any,
            Caller::Delegate { .. } | Caller::Task(_) | Caller::Workload(_) => Manages::Nothing,
        }
    }

    /// Whether this caller may manage a row owned by `owner`.
    pub fn may_manage(&self, owner: &str) -> bool {
        match self.manages() {
            Manages::Own(sub) => sub == owner,
            Manages::Any => true,
            Manages::Nothing => false,
        }
    }

    /// Whether this caller may have row `id`, owned by `owner` and delegated to `delegates`.
    /// Checked on every path a token can leave by: the cache, a token stored in the row, a
    /// fresh refresh.
    pub fn may_use(&self, id: Uuid, owner: &str, delegates: &[String]) -> bool {
        match self {
            Caller::User(sub) => sub == owner,
            Caller::Delegate { client, .. } => delegates.iter().any(|d| d == client),
            Caller::Task(key) | Caller::Workload(key) => key.token_id == id && key.user_id == owner,
            // Operators manage rows on the admin page; they never hold a user's token.
            Caller::Operator(_) => false,
        }
    }
}

/// Client ids whose service accounts may act for users on rows delegated to them
/// (`DELEGATE_CLIENTS`), with the service account's `sub` where the operator pinned it.
#[derive(Clone, Debug, Default)]
pub struct DelegateClients {
    pub clients: Vec<String>,
    pub pinned: Vec<(String, String)>,
}

impl DelegateClients {
    /// The delegate client whose *service account* presented `claims`. A user's token issued
    /// to a delegate client is not its service account: it is a user like any other.
    pub fn delegate(&self, claims: &CallerClaims) -> Option<String> {
        let client = claims.client()?;
        if !self.clients.iter().any(|d| d == client) {
            return None;
        }
        let pinned = self
            .pinned
            .iter()
            .find(|(c, _)| c == client)
            .map(|(_, sub)| sub.as_str());
        claims
            .is_service_account_of(client, pinned)
            .then(|| client.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn key(token_id: Uuid, user: &str) -> TaskKey {
        TaskKey {
            id: Uuid::new_v4(),
            token_id,
            user_id: user.into(),
            name: None,
            scope: None,
            expires_at: Utc::now(),
            max_uses: None,
            uses: 0,
            allowed_cidrs: vec![],
            created_at: Utc::now(),
            last_used_at: None,
            revoked_at: None,
            workload: None,
        }
    }

    #[test]
    fn each_caller_reaches_only_its_rows() {
        let (row, other) = (Uuid::new_v4(), Uuid::new_v4());
        let delegates = vec!["job-runner".to_owned()];
        assert!(Caller::User("alice".into()).may_use(row, "alice", &[]));
        assert!(!Caller::User("bob".into()).may_use(row, "alice", &delegates));
        let delegate = |client: &str| Caller::Delegate {
            client: client.into(),
            subject: format!("service-account-{client}"),
        };
        assert!(delegate("job-runner").may_use(row, "alice", &delegates));
        assert!(!delegate("job-runner").may_use(row, "alice", &[]));
        assert!(!delegate("alice").may_use(row, "alice", &delegates));
        assert!(Caller::Task(key(row, "alice")).may_use(row, "alice", &[]));
        assert!(!Caller::Task(key(other, "alice")).may_use(row, "alice", &[]));
        assert!(!Caller::Task(key(row, "bob")).may_use(row, "alice", &[]));
        assert!(Caller::Workload(key(row, "alice")).may_use(row, "alice", &[]));
        assert!(!Caller::Workload(key(other, "alice")).may_use(row, "alice", &[]));
        assert!(!Caller::Operator("olga".into()).may_use(row, "alice", &delegates));
    }

    #[test]
    fn only_owners_and_operators_manage_rows() {
        let row = Uuid::new_v4();
        assert!(Caller::User("alice".into()).may_manage("alice"));
        assert!(!Caller::User("bob".into()).may_manage("alice"));
        assert!(Caller::Operator("olga".into()).may_manage("alice"));
        let delegate = Caller::Delegate {
            client: "job-runner".into(),
            subject: "service-account-job-runner".into(),
        };
        assert!(!delegate.may_manage("alice"));
        assert!(!Caller::Task(key(row, "alice")).may_manage("alice"));
        assert!(!Caller::Workload(key(row, "alice")).may_manage("alice"));
    }
}
