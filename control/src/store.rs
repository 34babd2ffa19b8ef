//! The store: every durable object of the control plane behind one trait, one transaction per
//! change, and every change's audit record in that same transaction. Handlers never see SQL; the
//! store never sees HTTP. SQLite is the embedded default.

pub mod sqlite;

use grantfs::api::{Grant, RevokeCounts, RevokeReason, Session, Tenant, Workspace};
use grantfs::{
    ErrorCode, GrantId, Handle, Mode, RuntimeId, SessionId, TenantSlug, Timestamp, WorkspaceName,
    WorkspaceRef,
};

/// Who is calling: an account, through one of its API keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub account: Handle,
    pub key_id: String,
}

/// A freshly created API key; `secret` is shown once and never stored.
#[derive(Clone)]
pub struct NewKey {
    pub key_id: String,
    pub account: Handle,
    pub secret: String,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("key_id", &self.key_id)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyInfo {
    pub key_id: String,
    pub account: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// One audit record: who did what to which objects, when, and how it ended (`ok` or an error code).
/// `actor` is an API key id, `session:<id>` for the agent-facing calls, or `local-cli`; never a secret.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: Timestamp,
    pub account: String,
    pub actor: String,
    pub action: String,
    pub tenant: Option<String>,
    pub runtime: Option<String>,
    pub workspace: Option<String>,
    pub grant_id: Option<String>,
    pub session_id: Option<String>,
    pub result: String,
    pub detail: Option<serde_json::Value>,
}

/// What a store call can fail with: an answer for the caller, or a fault of the backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{message}")]
    Refused { code: ErrorCode, message: String },
    /// A fault the operator can fix (disk full, database locked): said plainly, answered 503.
    #[error("{0}")]
    Unavailable(String),
    #[error("store: {0}")]
    Backend(String),
}

impl StoreError {
    pub fn refused(code: ErrorCode, message: impl Into<String>) -> Self {
        StoreError::Refused {
            code,
            message: message.into(),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The sessions a revocation closed, for the hub to push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub counts: RevokeCounts,
    pub sessions: Vec<SessionId>,
    pub reason: RevokeReason,
}

#[derive(Debug, Clone)]
pub struct NewGrant {
    pub workspace: WorkspaceRef,
    pub tenant: TenantSlug,
    pub runtime: Option<RuntimeId>,
    pub mode: Mode,
    pub ttl_secs: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct GrantQuery {
    pub tenant: Option<String>,
    pub runtime: Option<String>,
    pub workspace: Option<String>,
    pub include_inactive: bool,
}

#[derive(Debug, Clone, Default)]
pub struct SessionQuery {
    pub tenant: Option<String>,
    pub runtime: Option<String>,
    pub workspace: Option<String>,
    pub state: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RevokeScope {
    pub tenant: TenantSlug,
    pub runtime: Option<RuntimeId>,
    pub workspace: Option<WorkspaceRef>,
}

#[derive(Debug, Clone)]
pub struct TicketRequest {
    pub session_id: SessionId,
    pub tenant: TenantSlug,
    pub runtime: RuntimeId,
    pub workspace: WorkspaceRef,
    pub mode: Mode,
    pub ttl_secs: u64,
    /// The signing key that will sign the ticket (kept so the JWKS can keep it until it expires).
    pub kid: String,
}

/// Every durable operation of the control plane. Calls are blocking; the server runs them on the
/// blocking pool. Every `account` argument scopes the call: another account's objects are not
/// found, never forbidden.
pub trait Store: Send + Sync + 'static {
    /// Creates `handle` and its first key when the store has no account at all.
    fn bootstrap(&self, handle: &Handle, now: Timestamp) -> StoreResult<Option<NewKey>>;
    fn create_account(&self, handle: &Handle, now: Timestamp) -> StoreResult<NewKey>;
    fn create_key(&self, handle: &Handle, now: Timestamp) -> StoreResult<NewKey>;
    fn list_keys(&self, handle: &Handle) -> StoreResult<Vec<KeyInfo>>;
    fn revoke_key(&self, handle: &Handle, key_id: &str, now: Timestamp) -> StoreResult<KeyInfo>;
    /// The actor behind an API key secret, if the key exists and is not revoked.
    fn authenticate(&self, secret: &str) -> StoreResult<Option<Actor>>;

    fn create_workspace(
        &self,
        actor: &Actor,
        name: &WorkspaceName,
        now: Timestamp,
    ) -> StoreResult<Workspace>;
    fn list_workspaces(&self, account: &Handle) -> StoreResult<Vec<Workspace>>;
    fn get_workspace(&self, account: &Handle, ws: &WorkspaceRef) -> StoreResult<Workspace>;
    fn delete_workspace(
        &self,
        actor: &Actor,
        ws: &WorkspaceRef,
        now: Timestamp,
    ) -> StoreResult<Revocation>;

    fn create_tenant(
        &self,
        actor: &Actor,
        slug: &TenantSlug,
        external_id: Option<String>,
        metadata: serde_json::Value,
        now: Timestamp,
    ) -> StoreResult<Tenant>;
    fn list_tenants(&self, account: &Handle) -> StoreResult<Vec<Tenant>>;
    fn get_tenant(&self, account: &Handle, slug: &TenantSlug) -> StoreResult<Tenant>;
    fn delete_tenant(
        &self,
        actor: &Actor,
        slug: &TenantSlug,
        now: Timestamp,
    ) -> StoreResult<Revocation>;

    fn create_grant(&self, actor: &Actor, g: &NewGrant, now: Timestamp) -> StoreResult<Grant>;
    fn list_grants(
        &self,
        account: &Handle,
        q: &GrantQuery,
        now: Timestamp,
    ) -> StoreResult<Vec<Grant>>;
    fn get_grant(&self, account: &Handle, id: &GrantId, now: Timestamp) -> StoreResult<Grant>;
    /// Revokes one grant and its sessions; revoking a revoked grant changes nothing.
    fn revoke_grant(
        &self,
        actor: &Actor,
        id: &GrantId,
        now: Timestamp,
    ) -> StoreResult<(Grant, Revocation)>;
    fn revoke_grants(
        &self,
        actor: &Actor,
        scope: &RevokeScope,
        now: Timestamp,
    ) -> StoreResult<Revocation>;

    /// The one-shot path: tenant if missing, grant picked or created, one new `issued` session.
    fn issue_session(
        &self,
        actor: &Actor,
        t: &TicketRequest,
        now: Timestamp,
    ) -> StoreResult<(Session, Grant)>;
    fn list_sessions(
        &self,
        account: &Handle,
        q: &SessionQuery,
        now: Timestamp,
    ) -> StoreResult<Vec<Session>>;
    fn get_session(&self, account: &Handle, id: &SessionId, now: Timestamp)
    -> StoreResult<Session>;
    fn revoke_session(
        &self,
        actor: &Actor,
        id: &SessionId,
        now: Timestamp,
    ) -> StoreResult<(Session, Revocation)>;
    /// Turns an `issued` session `active` with the hash of its new token; exactly one caller wins.
    fn exchange(
        &self,
        id: &SessionId,
        token_hash: &[u8; 32],
        now: Timestamp,
    ) -> StoreResult<Session>;
    /// The session a session token belongs to (any state); `unauthorized` if the token is wrong.
    fn session_by_token(
        &self,
        id: &SessionId,
        token_hash: &[u8; 32],
        now: Timestamp,
    ) -> StoreResult<Session>;
    /// Ends an active session (a clean unmount).
    fn end_session(
        &self,
        id: &SessionId,
        token_hash: &[u8; 32],
        now: Timestamp,
    ) -> StoreResult<Session>;
    /// Audit records after id `since`, oldest first; one account's, or all (`None`, local CLI).
    fn list_audit(
        &self,
        account: Option<&Handle>,
        since: i64,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntry>>;
    /// The latest `expires_at` of any session whose ticket `kid` signed.
    fn kid_last_expiry(&self, kid: &str) -> StoreResult<Option<Timestamp>>;
}
