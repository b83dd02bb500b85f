//! The use cases of a grant, whatever calls them (the HTTP API, the admin page, the CLI's
//! operator commands, background jobs): start a consent, complete it, mint access tokens,
//! revoke, keep alive. They take plain inputs and return typed results; they know nothing
//! of HTTP.

pub mod access;
pub mod authenticator;
pub mod breaker;
pub mod cache;
pub mod callback;
pub mod caller;
pub mod changes;
pub mod consent;
pub mod flight;
pub mod issue;
pub mod keepalive;
pub mod reads;
pub mod revoke;
pub mod scope;
pub mod task_keys;

pub use access::{AccessError, RefreshSettings, Refresher};
pub use authenticator::{Authenticator, Unidentified};
pub use breaker::BreakerSettings;
pub use cache::{AccessTokenCache, Minted};
pub use callback::{
    CallbackError, Callbacks, Completed, Failure, FailureKind, GrantLimits, ProviderReply,
};
pub use caller::{Caller, DelegateClients, Manages};
pub use changes::{ChangeListener, StatusChanges};
pub use consent::{ConsentError, ConsentPolicy, Consents, StartedConsent};
pub use issue::TokenIssuer;
pub use keepalive::KeepAliveSettings;
pub use reads::{ListQuery, Page, ReadError, Reads};
pub use revoke::{ProviderRevocation, RevokeError, Revoked, Revoker};
pub use scope::{Scope, ScopeError};
pub use task_keys::{
    IssuedKey, KeyRefusal, KeyRequest, RedeemError, TaskKeyError, TaskKeys, WorkloadRefusal,
    WorkloadRequest,
};
