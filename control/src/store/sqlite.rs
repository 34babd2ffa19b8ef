//! The SQLite store: one file (`control.db`) in WAL mode, embedded versioned migrations, one
//! transaction per change on a single writer connection.

use std::path::Path;
use std::sync::Mutex;

use grantfs::api::{
    Grant, GrantScope, GrantState, RevokeCounts, RevokeReason, Session, SessionState, Tenant,
    Workspace,
};
use grantfs::ids::random_base62;
use grantfs::{
    ErrorCode, GrantId, Handle, Mode, SessionId, TenantSlug, Timestamp, WorkspaceName, WorkspaceRef,
};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::*;

/// Schema migrations; entry `i` moves the database from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE accounts (
    handle      TEXT PRIMARY KEY,
    created_at  INTEGER NOT NULL
);
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    account     TEXT NOT NULL REFERENCES accounts(handle),
    lookup      TEXT NOT NULL UNIQUE,
    hash        BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE TABLE workspaces (
    id          INTEGER PRIMARY KEY,
    account     TEXT NOT NULL,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    deleted_at  INTEGER
);
CREATE UNIQUE INDEX workspaces_live ON workspaces(account, name) WHERE deleted_at IS NULL;
CREATE TABLE tenants (
    id          INTEGER PRIMARY KEY,
    account     TEXT NOT NULL,
    slug        TEXT NOT NULL,
    external_id TEXT,
    metadata    TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    deleted_at  INTEGER
);
CREATE UNIQUE INDEX tenants_live ON tenants(account, slug) WHERE deleted_at IS NULL;
CREATE TABLE grants (
    id           TEXT PRIMARY KEY,
    account      TEXT NOT NULL,
    workspace_id INTEGER NOT NULL,
    workspace    TEXT NOT NULL,
    tenant_id    INTEGER NOT NULL,
    tenant_slug  TEXT NOT NULL,
    runtime_id   TEXT,
    mode         TEXT NOT NULL,
    auto         INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    revoked_at   INTEGER
);
CREATE INDEX grants_pick ON grants(tenant_id, workspace_id, runtime_id) WHERE revoked_at IS NULL;
CREATE INDEX grants_account ON grants(account, created_at);
CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    account      TEXT NOT NULL,
    grant_id     TEXT NOT NULL,
    workspace_id INTEGER NOT NULL,
    workspace    TEXT NOT NULL,
    tenant_id    INTEGER NOT NULL,
    tenant_slug  TEXT NOT NULL,
    runtime_id   TEXT NOT NULL,
    mode         TEXT NOT NULL,
    kid          TEXT NOT NULL,
    state        TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    exchanged_at INTEGER,
    expires_at   INTEGER NOT NULL,
    ended_at     INTEGER,
    end_reason   TEXT,
    token_hash   BLOB
);
CREATE INDEX sessions_grant ON sessions(grant_id);
CREATE INDEX sessions_tenant ON sessions(tenant_id, runtime_id);
CREATE INDEX sessions_workspace ON sessions(workspace_id);
CREATE INDEX sessions_account ON sessions(account, created_at);
CREATE INDEX sessions_kid ON sessions(kid, expires_at);
"#,
    r#"
CREATE TABLE audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    account     TEXT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    tenant      TEXT,
    runtime     TEXT,
    workspace   TEXT,
    grant_id    TEXT,
    session_id  TEXT,
    result      TEXT NOT NULL,
    detail      TEXT
);
CREATE INDEX audit_account ON audit(account, id);
"#,
];

/// A live grant the one-shot path may use: id, mode, expires_at, auto.
type PickedGrant = (String, String, Option<i64>, bool);

/// How long a write waits for a lock held by another process before it is refused.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// How hard SQLite syncs each commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// WAL + synchronous=NORMAL: a commit survives a crash of the process, not of the machine.
    Process,
    /// synchronous=FULL: a commit survives power loss.
    Power,
}

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

fn backend(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode as C;
    match e.sqlite_error_code() {
        Some(C::DiskFull) => StoreError::Unavailable(
            "the control plane's state disk is full; nothing was changed (retry once space is freed)".into(),
        ),
        Some(C::DatabaseBusy | C::DatabaseLocked) => StoreError::Unavailable(
            "the database is locked by another process; nothing was changed (retry)".into(),
        ),
        Some(C::ReadOnly) => StoreError::Unavailable(
            "the database is read-only; nothing was changed".into(),
        ),
        _ => StoreError::Backend(e.to_string()),
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        backend(e)
    }
}

fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// An API key secret: `gfs_` and 40 base62 characters. The first 12 after the prefix are the
/// lookup index; the whole secret is compared by hash in constant time.
fn new_secret() -> String {
    format!("gfs_{}", random_base62(40))
}

fn key_lookup(secret: &str) -> Option<&str> {
    let body = secret.strip_prefix("gfs_")?;
    if body.len() != 40 || !body.bytes().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    Some(&body[..12])
}

const SESSION_COLS: &str = "id, grant_id, workspace, tenant_slug, runtime_id, mode, state, created_at, exchanged_at, expires_at, ended_at, end_reason";
const GRANT_COLS: &str =
    "id, workspace, tenant_slug, runtime_id, mode, created_at, expires_at, revoked_at";

fn ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp::from_millis)
}

fn mode_of(s: &str) -> Mode {
    Mode::parse(s).unwrap_or(Mode::Ro)
}

fn grant_from_row(r: &Row<'_>, now: Timestamp) -> rusqlite::Result<Grant> {
    let runtime_id: Option<String> = r.get(3)?;
    let expires_at = ts(r.get(6)?);
    let revoked_at = ts(r.get(7)?);
    let state = if revoked_at.is_some() {
        GrantState::Revoked
    } else if expires_at.is_some_and(|e| e <= now) {
        GrantState::Expired
    } else {
        GrantState::Active
    };
    Ok(Grant {
        id: GrantId::from_string(r.get(0)?),
        workspace: r.get(1)?,
        tenant_slug: r.get(2)?,
        scope: if runtime_id.is_some() {
            GrantScope::Runtime
        } else {
            GrantScope::Tenant
        },
        runtime_id,
        mode: mode_of(&r.get::<_, String>(4)?),
        created_at: Timestamp::from_millis(r.get(5)?),
        expires_at,
        revoked_at,
        state,
    })
}

fn session_from_row(r: &Row<'_>, now: Timestamp) -> rusqlite::Result<Session> {
    let stored: String = r.get(6)?;
    let expires_at = Timestamp::from_millis(r.get(9)?);
    let mut state = SessionState::parse(&stored).unwrap_or(SessionState::Revoked);
    let mut ended_at = ts(r.get(10)?);
    let mut end_reason: Option<String> = r.get(11)?;
    if state.authorizes() && expires_at <= now {
        state = SessionState::Expired;
        ended_at = Some(expires_at);
        end_reason = Some(RevokeReason::Expired.as_str().to_owned());
    }
    Ok(Session {
        id: SessionId::from_string(r.get(0)?),
        grant_id: GrantId::from_string(r.get(1)?),
        workspace: r.get(2)?,
        tenant_slug: r.get(3)?,
        runtime_id: r.get(4)?,
        mode: mode_of(&r.get::<_, String>(5)?),
        state,
        created_at: Timestamp::from_millis(r.get(7)?),
        exchanged_at: ts(r.get(8)?),
        expires_at,
        ended_at,
        end_reason,
    })
}

fn workspace_from_row(r: &Row<'_>) -> rusqlite::Result<Workspace> {
    let handle: String = r.get(0)?;
    let name: String = r.get(1)?;
    Ok(Workspace {
        reference: format!("{handle}/{name}"),
        handle,
        name,
        created_at: Timestamp::from_millis(r.get(2)?),
    })
}

fn tenant_from_row(r: &Row<'_>) -> rusqlite::Result<Tenant> {
    let metadata: String = r.get(2)?;
    Ok(Tenant {
        slug: r.get(0)?,
        external_id: r.get(1)?,
        metadata: serde_json::from_str(&metadata).unwrap_or_else(|_| serde_json::json!({})),
        created_at: Timestamp::from_millis(r.get(3)?),
    })
}

fn ws_not_found(ws: &WorkspaceRef) -> StoreError {
    StoreError::refused(
        ErrorCode::WorkspaceNotFound,
        format!("workspace {ws} not found"),
    )
}
fn tenant_not_found(slug: &str) -> StoreError {
    StoreError::refused(
        ErrorCode::TenantNotFound,
        format!("tenant {slug} not found"),
    )
}

/// The live workspace's row id; another account's workspace is not found.
fn workspace_id(tx: &Connection, account: &Handle, ws: &WorkspaceRef) -> StoreResult<i64> {
    if &ws.handle != account {
        return Err(ws_not_found(ws));
    }
    tx.prepare_cached(
        "SELECT id FROM workspaces WHERE account = ?1 AND name = ?2 AND deleted_at IS NULL",
    )?
    .query_row(params![account.as_str(), ws.name.as_str()], |r| r.get(0))
    .optional()?
    .ok_or_else(|| ws_not_found(ws))
}

fn tenant_id(tx: &Connection, account: &Handle, slug: &TenantSlug) -> StoreResult<Option<i64>> {
    Ok(tx
        .prepare_cached(
            "SELECT id FROM tenants WHERE account = ?1 AND slug = ?2 AND deleted_at IS NULL",
        )?
        .query_row(params![account.as_str(), slug.as_str()], |r| r.get(0))
        .optional()?)
}

/// Marks the live sessions matched by `cond` revoked; returns their ids.
fn revoke_sessions_where(
    tx: &Transaction<'_>,
    cond: &str,
    args: &[&dyn rusqlite::ToSql],
    reason: RevokeReason,
    now: Timestamp,
) -> StoreResult<Vec<SessionId>> {
    let sql = format!(
        "UPDATE sessions SET state = 'revoked', ended_at = ?1, end_reason = ?2 \
         WHERE state IN ('issued', 'active') AND expires_at > ?1 AND ({cond}) RETURNING id"
    );
    let now_ms = now.millis();
    let reason_s = reason.as_str();
    let mut params_v: Vec<&dyn rusqlite::ToSql> = vec![&now_ms, &reason_s];
    params_v.extend_from_slice(args);
    let mut stmt = tx.prepare_cached(&sql)?;
    let ids = stmt
        .query_map(params_v.as_slice(), |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ids.into_iter().map(SessionId::from_string).collect())
}

/// Marks the live grants matched by `cond` revoked; returns their ids.
fn revoke_grants_where(
    tx: &Transaction<'_>,
    cond: &str,
    args: &[&dyn rusqlite::ToSql],
    now: Timestamp,
) -> StoreResult<Vec<String>> {
    let sql = format!(
        "UPDATE grants SET revoked_at = ?1 \
         WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?1) AND ({cond}) RETURNING id"
    );
    let now_ms = now.millis();
    let mut params_v: Vec<&dyn rusqlite::ToSql> = vec![&now_ms];
    params_v.extend_from_slice(args);
    let mut stmt = tx.prepare_cached(&sql)?;
    let ids = stmt
        .query_map(params_v.as_slice(), |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ids)
}

/// The audit record a change writes in its own transaction (or, when refused, in a transaction
/// of its own right after).
#[derive(Debug, Default)]
pub(crate) struct AuditRow {
    account: String,
    actor: String,
    action: &'static str,
    tenant: Option<String>,
    runtime: Option<String>,
    workspace: Option<String>,
    grant: Option<String>,
    session: Option<String>,
    detail: Option<serde_json::Value>,
}

impl AuditRow {
    fn new(actor: &Actor, action: &'static str) -> Self {
        Self {
            account: actor.account.to_string(),
            actor: actor.key_id.clone(),
            action,
            ..Self::default()
        }
    }
    /// A call made with a session's own credential (ticket or session token).
    fn agent(action: &'static str, session: &SessionId) -> Self {
        Self {
            actor: format!("session:{session}"),
            action,
            session: Some(session.to_string()),
            ..Self::default()
        }
    }
    /// A command run on the control plane's own host (`grantfs-control key ...`).
    fn local(handle: &Handle, action: &'static str) -> Self {
        Self {
            account: handle.to_string(),
            actor: "local-cli".into(),
            action,
            ..Self::default()
        }
    }
    fn counts(&mut self, grants: usize, sessions: usize) {
        self.detail =
            Some(serde_json::json!({"revoked_grants": grants, "revoked_sessions": sessions}));
    }
    fn fill_session(&mut self, s: &Session) {
        if self.account.is_empty() {
            self.account = s.workspace.split('/').next().unwrap_or_default().to_owned();
        }
        self.tenant = Some(s.tenant_slug.clone());
        self.runtime = Some(s.runtime_id.clone());
        self.workspace = Some(s.workspace.clone());
        self.grant = Some(s.grant_id.to_string());
        self.session = Some(s.id.to_string());
    }
    fn insert(&self, c: &Connection, now: Timestamp, result: &str) -> rusqlite::Result<()> {
        c.prepare_cached(
            "INSERT INTO audit (at, account, actor, action, tenant, runtime, workspace, grant_id, session_id, result, detail) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            now.millis(),
            self.account,
            self.actor,
            self.action,
            self.tenant,
            self.runtime,
            self.workspace,
            self.grant,
            self.session,
            result,
            self.detail.as_ref().map(|d| d.to_string()),
        ])?;
        Ok(())
    }
}

fn audit_from_row(r: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    let detail: Option<String> = r.get(11)?;
    Ok(AuditEntry {
        id: r.get(0)?,
        at: Timestamp::from_millis(r.get(1)?),
        account: r.get(2)?,
        actor: r.get(3)?,
        action: r.get(4)?,
        tenant: r.get(5)?,
        runtime: r.get(6)?,
        workspace: r.get(7)?,
        grant_id: r.get(8)?,
        session_id: r.get(9)?,
        result: r.get(10)?,
        detail: detail.and_then(|d| serde_json::from_str(&d).ok()),
    })
}

impl SqliteStore {
    /// Runs a change and its audit record in one immediate transaction. A refused change is
    /// rolled back and its refusal recorded on its own.
    fn audited<T>(
        &self,
        now: Timestamp,
        mut row: AuditRow,
        f: impl FnOnce(&Transaction<'_>, &mut AuditRow) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| StoreError::Backend("store lock poisoned".into()))?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        match f(&tx, &mut row) {
            Ok(v) => {
                row.insert(&tx, now, "ok")?;
                tx.commit()?;
                Ok(v)
            }
            Err(e) => {
                drop(tx);
                let result = match &e {
                    StoreError::Refused { code, .. } => code.as_str(),
                    StoreError::Unavailable(_) => "unavailable",
                    StoreError::Backend(_) => "internal",
                };
                if let Err(ae) = row.insert(&conn, now, result) {
                    tracing::warn!(error = %ae, action = row.action, "could not record a refused change in the audit trail");
                }
                Err(e)
            }
        }
    }

    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path, durability: Durability) -> StoreResult<Self> {
        let conn = Connection::open(path)?;
        Self::setup(conn, durability)
    }

    /// A private in-memory database, for tests.
    pub fn in_memory() -> StoreResult<Self> {
        Self::setup(Connection::open_in_memory()?, Durability::Process)
    }

    fn setup(conn: Connection, durability: Durability) -> StoreResult<Self> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(
            None,
            "synchronous",
            match durability {
                Durability::Process => "NORMAL",
                Durability::Power => "FULL",
            },
        )?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut conn = conn;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version as usize > MIGRATIONS.len() {
            return Err(StoreError::Backend(format!(
                "database schema version {version} is newer than this binary knows ({}); refusing to run",
                MIGRATIONS.len()
            )));
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(m)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        conn.set_prepared_statement_cache_capacity(64);
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    /// Runs `f` in one immediate (write-locked) transaction, committing on `Ok`.
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> StoreResult<T>) -> StoreResult<T> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| StoreError::Backend("store lock poisoned".into()))?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| StoreError::Backend("store lock poisoned".into()))?;
        f(&conn)
    }

    fn insert_key(tx: &Connection, handle: &Handle, now: Timestamp) -> StoreResult<NewKey> {
        let secret = new_secret();
        let key_id = format!("key_{}", random_base62(16));
        let lookup = key_lookup(&secret).unwrap_or_default().to_owned();
        tx.prepare_cached(
            "INSERT INTO api_keys (id, account, lookup, hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![key_id, handle.as_str(), lookup, &hash_secret(&secret)[..], now.millis()])?;
        Ok(NewKey {
            key_id,
            account: handle.clone(),
            secret,
        })
    }

    fn grant_by_id(
        tx: &Connection,
        account: &Handle,
        id: &str,
        now: Timestamp,
    ) -> StoreResult<Grant> {
        tx.prepare_cached(&format!(
            "SELECT {GRANT_COLS} FROM grants WHERE account = ?1 AND id = ?2"
        ))?
        .query_row(params![account.as_str(), id], |r| grant_from_row(r, now))
        .optional()?
        .ok_or_else(|| {
            StoreError::refused(ErrorCode::GrantNotFound, format!("grant {id} not found"))
        })
    }

    fn session_by_id(
        tx: &Connection,
        account: Option<&Handle>,
        id: &str,
        now: Timestamp,
    ) -> StoreResult<Session> {
        let found = match account {
            Some(a) => tx
                .prepare_cached(&format!(
                    "SELECT {SESSION_COLS} FROM sessions WHERE account = ?1 AND id = ?2"
                ))?
                .query_row(params![a.as_str(), id], |r| session_from_row(r, now))
                .optional()?,
            None => tx
                .prepare_cached(&format!(
                    "SELECT {SESSION_COLS} FROM sessions WHERE id = ?1"
                ))?
                .query_row(params![id], |r| session_from_row(r, now))
                .optional()?,
        };
        found.ok_or_else(|| {
            StoreError::refused(
                ErrorCode::SessionNotFound,
                format!("session {id} not found"),
            )
        })
    }

    fn check_token(tx: &Connection, id: &SessionId, token_hash: &[u8; 32]) -> StoreResult<()> {
        let stored: Option<Option<Vec<u8>>> = tx
            .prepare_cached("SELECT token_hash FROM sessions WHERE id = ?1")?
            .query_row(params![id.as_str()], |r| r.get(0))
            .optional()?;
        let ok = match stored.flatten() {
            Some(h) => h.len() == 32 && bool::from(h.ct_eq(&token_hash[..])),
            None => false,
        };
        if ok {
            Ok(())
        } else {
            Err(StoreError::refused(
                ErrorCode::Unauthorized,
                "session token is not valid for this session",
            ))
        }
    }
}

fn counts(grants: usize, sessions: &[SessionId]) -> RevokeCounts {
    RevokeCounts {
        revoked_grants: grants as u64,
        revoked_sessions: sessions.len() as u64,
    }
}

impl Store for SqliteStore {
    fn bootstrap(&self, handle: &Handle, now: Timestamp) -> StoreResult<Option<NewKey>> {
        self.write(|tx| {
            let n: i64 = tx.query_row("SELECT COUNT(*) FROM accounts", [], |r| r.get(0))?;
            if n > 0 {
                return Ok(None);
            }
            tx.execute(
                "INSERT INTO accounts (handle, created_at) VALUES (?1, ?2)",
                params![handle.as_str(), now.millis()],
            )?;
            Ok(Some(Self::insert_key(tx, handle, now)?))
        })
    }

    fn create_account(&self, handle: &Handle, now: Timestamp) -> StoreResult<NewKey> {
        self.audited(
            now,
            AuditRow::local(handle, "account.create"),
            |tx, _row| {
                let n = tx.execute(
                "INSERT INTO accounts (handle, created_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![handle.as_str(), now.millis()],
            )?;
                if n == 0 {
                    return Err(StoreError::refused(
                        ErrorCode::InvalidRequest,
                        format!("account {handle} already exists"),
                    ));
                }
                Self::insert_key(tx, handle, now)
            },
        )
    }

    fn create_key(&self, handle: &Handle, now: Timestamp) -> StoreResult<NewKey> {
        self.audited(now, AuditRow::local(handle, "key.create"), |tx, _row| {
            let exists: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM accounts WHERE handle = ?1",
                    params![handle.as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            if exists.is_none() {
                return Err(StoreError::refused(
                    ErrorCode::NotFound,
                    format!("account {handle} not found"),
                ));
            }
            Self::insert_key(tx, handle, now)
        })
    }

    fn list_keys(&self, handle: &Handle) -> StoreResult<Vec<KeyInfo>> {
        self.read(|c| {
            let mut st = c.prepare("SELECT id, account, created_at, revoked_at FROM api_keys WHERE account = ?1 ORDER BY created_at, rowid")?;
            let rows = st.query_map(params![handle.as_str()], |r| {
                Ok(KeyInfo {
                    key_id: r.get(0)?,
                    account: r.get(1)?,
                    created_at: Timestamp::from_millis(r.get(2)?),
                    revoked_at: ts(r.get(3)?),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn revoke_key(&self, handle: &Handle, key_id: &str, now: Timestamp) -> StoreResult<KeyInfo> {
        self.audited(now, AuditRow::local(handle, "key.revoke"), |tx, _row| {
            tx.execute(
                "UPDATE api_keys SET revoked_at = ?1 WHERE account = ?2 AND id = ?3 AND revoked_at IS NULL",
                params![now.millis(), handle.as_str(), key_id],
            )?;
            tx.query_row(
                "SELECT id, account, created_at, revoked_at FROM api_keys WHERE account = ?1 AND id = ?2",
                params![handle.as_str(), key_id],
                |r| {
                    Ok(KeyInfo {
                        key_id: r.get(0)?,
                        account: r.get(1)?,
                        created_at: Timestamp::from_millis(r.get(2)?),
                        revoked_at: ts(r.get(3)?),
                    })
                },
            )
            .optional()?
            .ok_or_else(|| StoreError::refused(ErrorCode::NotFound, format!("key {key_id} not found in account {handle}")))
        })
    }

    fn authenticate(&self, secret: &str) -> StoreResult<Option<Actor>> {
        let Some(lookup) = key_lookup(secret) else {
            return Ok(None);
        };
        let want = hash_secret(secret);
        self.read(|c| {
            let row: Option<(String, String, Vec<u8>, Option<i64>)> = c
                .prepare_cached(
                    "SELECT id, account, hash, revoked_at FROM api_keys WHERE lookup = ?1",
                )?
                .query_row(params![lookup], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()?;
            let Some((id, account, hash, revoked)) = row else {
                return Ok(None);
            };
            let same: bool = hash.ct_eq(&want[..]).into();
            if !same || revoked.is_some() {
                return Ok(None);
            }
            Ok(Handle::parse(&account).ok().map(|account| Actor {
                account,
                key_id: id,
            }))
        })
    }

    fn create_workspace(
        &self,
        actor: &Actor,
        name: &WorkspaceName,
        now: Timestamp,
    ) -> StoreResult<Workspace> {
        let account = &actor.account;
        self.audited(now, AuditRow::new(actor, "workspace.create"), |tx, row| {
            row.workspace = Some(format!("{account}/{name}"));
            let n = tx
                .prepare_cached("INSERT INTO workspaces (account, name, created_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING")?
                .execute(params![account.as_str(), name.as_str(), now.millis()])?;
            if n == 0 {
                return Err(StoreError::refused(
                    ErrorCode::WorkspaceExists,
                    format!("workspace {account}/{name} already exists"),
                ));
            }
            Ok(Workspace {
                handle: account.to_string(),
                name: name.to_string(),
                reference: format!("{account}/{name}"),
                created_at: now,
            })
        })
    }

    fn list_workspaces(&self, account: &Handle) -> StoreResult<Vec<Workspace>> {
        self.read(|c| {
            let mut st = c.prepare_cached("SELECT account, name, created_at FROM workspaces WHERE account = ?1 AND deleted_at IS NULL ORDER BY name")?;
            let rows = st.query_map(params![account.as_str()], workspace_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn get_workspace(&self, account: &Handle, ws: &WorkspaceRef) -> StoreResult<Workspace> {
        self.read(|c| {
            let id = workspace_id(c, account, ws)?;
            Ok(c.query_row(
                "SELECT account, name, created_at FROM workspaces WHERE id = ?1",
                params![id],
                workspace_from_row,
            )?)
        })
    }

    fn delete_workspace(
        &self,
        actor: &Actor,
        ws: &WorkspaceRef,
        now: Timestamp,
    ) -> StoreResult<Revocation> {
        let account = &actor.account;
        self.audited(now, AuditRow::new(actor, "workspace.delete"), |tx, row| {
            row.workspace = Some(ws.to_string());
            let id = workspace_id(tx, account, ws)?;
            let reason = RevokeReason::WorkspaceDeleted;
            let grants = revoke_grants_where(tx, "workspace_id = ?2", &[&id], now)?;
            let sessions = revoke_sessions_where(tx, "workspace_id = ?3", &[&id], reason, now)?;
            tx.execute(
                "UPDATE workspaces SET deleted_at = ?1 WHERE id = ?2",
                params![now.millis(), id],
            )?;
            Ok(Revocation {
                counts: counts(grants.len(), &sessions),
                sessions,
                reason,
            })
        })
    }

    fn create_tenant(
        &self,
        actor: &Actor,
        slug: &TenantSlug,
        external_id: Option<String>,
        metadata: serde_json::Value,
        now: Timestamp,
    ) -> StoreResult<Tenant> {
        let account = &actor.account;
        self.audited(now, AuditRow::new(actor, "tenant.create"), |tx, row| {
            row.tenant = Some(slug.to_string());
            let n = tx
                .prepare_cached(
                    "INSERT INTO tenants (account, slug, external_id, metadata, created_at) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                )?
                .execute(params![account.as_str(), slug.as_str(), external_id, metadata.to_string(), now.millis()])?;
            if n == 0 {
                return Err(StoreError::refused(ErrorCode::TenantExists, format!("tenant {slug} already exists")));
            }
            Ok(Tenant {
                slug: slug.to_string(),
                external_id,
                metadata,
                created_at: now,
            })
        })
    }

    fn list_tenants(&self, account: &Handle) -> StoreResult<Vec<Tenant>> {
        self.read(|c| {
            let mut st = c.prepare_cached("SELECT slug, external_id, metadata, created_at FROM tenants WHERE account = ?1 AND deleted_at IS NULL ORDER BY slug")?;
            let rows = st.query_map(params![account.as_str()], tenant_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn get_tenant(&self, account: &Handle, slug: &TenantSlug) -> StoreResult<Tenant> {
        self.read(|c| {
            c.prepare_cached("SELECT slug, external_id, metadata, created_at FROM tenants WHERE account = ?1 AND slug = ?2 AND deleted_at IS NULL")?
                .query_row(params![account.as_str(), slug.as_str()], tenant_from_row)
                .optional()?
                .ok_or_else(|| tenant_not_found(slug.as_str()))
        })
    }

    fn delete_tenant(
        &self,
        actor: &Actor,
        slug: &TenantSlug,
        now: Timestamp,
    ) -> StoreResult<Revocation> {
        let account = &actor.account;
        self.audited(now, AuditRow::new(actor, "tenant.delete"), |tx, row| {
            row.tenant = Some(slug.to_string());
            let id =
                tenant_id(tx, account, slug)?.ok_or_else(|| tenant_not_found(slug.as_str()))?;
            let reason = RevokeReason::TenantDeleted;
            let grants = revoke_grants_where(tx, "tenant_id = ?2", &[&id], now)?;
            let sessions = revoke_sessions_where(tx, "tenant_id = ?3", &[&id], reason, now)?;
            tx.execute(
                "UPDATE tenants SET deleted_at = ?1 WHERE id = ?2",
                params![now.millis(), id],
            )?;
            Ok(Revocation {
                counts: counts(grants.len(), &sessions),
                sessions,
                reason,
            })
        })
    }

    fn create_grant(&self, actor: &Actor, g: &NewGrant, now: Timestamp) -> StoreResult<Grant> {
        let account = &actor.account;
        self.audited(now, AuditRow::new(actor, "grant.create"), |tx, row| {
            row.tenant = Some(g.tenant.to_string());
            row.runtime = g.runtime.as_ref().map(|r| r.to_string());
            row.workspace = Some(g.workspace.to_string());
            let ws_id = workspace_id(tx, account, &g.workspace)?;
            let t_id = tenant_id(tx, account, &g.tenant)?.ok_or_else(|| tenant_not_found(g.tenant.as_str()))?;
            let id = GrantId::generate();
            let expires_at = g.ttl_secs.map(|t| now.plus_secs(t));
            tx.prepare_cached(
                "INSERT INTO grants (id, account, workspace_id, workspace, tenant_id, tenant_slug, runtime_id, mode, auto, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9, ?10)",
            )?
            .execute(params![
                id.as_str(),
                account.as_str(),
                ws_id,
                g.workspace.to_string(),
                t_id,
                g.tenant.as_str(),
                g.runtime.as_ref().map(|r| r.as_str()),
                g.mode.as_str(),
                now.millis(),
                expires_at.map(|e| e.millis()),
            ])?;
            row.grant = Some(id.to_string());
            Self::grant_by_id(tx, account, id.as_str(), now)
        })
    }

    fn list_grants(
        &self,
        account: &Handle,
        q: &GrantQuery,
        now: Timestamp,
    ) -> StoreResult<Vec<Grant>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {GRANT_COLS} FROM grants WHERE account = ?1 \
                 AND (?2 IS NULL OR tenant_slug = ?2) AND (?3 IS NULL OR runtime_id = ?3) AND (?4 IS NULL OR workspace = ?4) \
                 AND (?5 OR (revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?6))) \
                 ORDER BY created_at, rowid"
            ))?;
            let rows = st.query_map(
                params![account.as_str(), q.tenant, q.runtime, q.workspace, q.include_inactive, now.millis()],
                |r| grant_from_row(r, now),
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn get_grant(&self, account: &Handle, id: &GrantId, now: Timestamp) -> StoreResult<Grant> {
        self.read(|c| Self::grant_by_id(c, account, id.as_str(), now))
    }

    fn revoke_grant(
        &self,
        actor: &Actor,
        id: &GrantId,
        now: Timestamp,
    ) -> StoreResult<(Grant, Revocation)> {
        let account = &actor.account;
        self.audited(now, AuditRow::new(actor, "grant.revoke"), |tx, row| {
            row.grant = Some(id.to_string());
            Self::grant_by_id(tx, account, id.as_str(), now)?;
            let reason = RevokeReason::GrantRevoked;
            let grants = revoke_grants_where(tx, "id = ?2", &[&id.as_str()], now)?;
            // Revoking an already expired grant still records the revocation (it stays history).
            tx.prepare_cached(
                "UPDATE grants SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
            )?
            .execute(params![now.millis(), id.as_str()])?;
            let sessions =
                revoke_sessions_where(tx, "grant_id = ?3", &[&id.as_str()], reason, now)?;
            let g = Self::grant_by_id(tx, account, id.as_str(), now)?;
            row.tenant = Some(g.tenant_slug.clone());
            row.runtime = g.runtime_id.clone();
            row.workspace = Some(g.workspace.clone());
            row.counts(grants.len(), sessions.len());
            Ok((
                g,
                Revocation {
                    counts: counts(grants.len(), &sessions),
                    sessions,
                    reason,
                },
            ))
        })
    }

    fn revoke_grants(
        &self,
        actor: &Actor,
        scope: &RevokeScope,
        now: Timestamp,
    ) -> StoreResult<Revocation> {
        let account = &actor.account;
        self.audited(now, AuditRow::new(actor, "grants.revoke"), |tx, row| {
            row.tenant = Some(scope.tenant.to_string());
            row.runtime = scope.runtime.as_ref().map(|r| r.to_string());
            row.workspace = scope.workspace.as_ref().map(|w| w.to_string());
            let reason = RevokeReason::GrantRevoked;
            let Some(t_id) = tenant_id(tx, account, &scope.tenant)? else {
                return Err(tenant_not_found(scope.tenant.as_str()));
            };
            let ws_id = match &scope.workspace {
                Some(ws) => Some(workspace_id(tx, account, ws)?),
                None => None,
            };
            let runtime = scope.runtime.as_ref().map(|r| r.as_str());
            let (grants, sessions) = match runtime {
                Some(rt) => {
                    let g = revoke_grants_where(
                        tx,
                        "tenant_id = ?2 AND runtime_id = ?3 AND (?4 IS NULL OR workspace_id = ?4)",
                        &[&t_id, &rt, &ws_id],
                        now,
                    )?;
                    let s = revoke_sessions_where(
                        tx,
                        "tenant_id = ?3 AND runtime_id = ?4 AND (?5 IS NULL OR workspace_id = ?5)",
                        &[&t_id, &rt, &ws_id],
                        reason,
                        now,
                    )?;
                    (g, s)
                }
                None => {
                    let g = revoke_grants_where(
                        tx,
                        "tenant_id = ?2 AND (?3 IS NULL OR workspace_id = ?3)",
                        &[&t_id, &ws_id],
                        now,
                    )?;
                    let s = revoke_sessions_where(
                        tx,
                        "tenant_id = ?3 AND (?4 IS NULL OR workspace_id = ?4)",
                        &[&t_id, &ws_id],
                        reason,
                        now,
                    )?;
                    (g, s)
                }
            };
            row.counts(grants.len(), sessions.len());
            Ok(Revocation {
                counts: counts(grants.len(), &sessions),
                sessions,
                reason,
            })
        })
    }

    fn issue_session(
        &self,
        actor: &Actor,
        t: &TicketRequest,
        now: Timestamp,
    ) -> StoreResult<(Session, Grant)> {
        let account = &actor.account;
        self.audited(now, AuditRow::new(actor, "ticket.issue"), |tx, row| {
            row.tenant = Some(t.tenant.to_string());
            row.runtime = Some(t.runtime.to_string());
            row.workspace = Some(t.workspace.to_string());
            row.session = Some(t.session_id.to_string());
            let ws_id = workspace_id(tx, account, &t.workspace)?;
            let t_id = match tenant_id(tx, account, &t.tenant)? {
                Some(id) => id,
                None => {
                    tx.prepare_cached("INSERT INTO tenants (account, slug, metadata, created_at) VALUES (?1, ?2, '{}', ?3)")?
                        .execute(params![account.as_str(), t.tenant.as_str(), now.millis()])?;
                    tx.last_insert_rowid()
                }
            };
            let pick = |runtime: Option<&str>| -> StoreResult<Option<PickedGrant>> {
                Ok(tx
                    .prepare_cached(
                        "SELECT id, mode, expires_at, auto FROM grants \
                         WHERE tenant_id = ?1 AND workspace_id = ?2 AND runtime_id IS ?3 \
                         AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?4) \
                         ORDER BY created_at DESC, rowid DESC LIMIT 1",
                    )?
                    .query_row(params![t_id, ws_id, runtime, now.millis()], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                    .optional()?)
            };
            let wanted_until = now.plus_secs(t.ttl_secs);
            let found = match pick(Some(t.runtime.as_str()))? {
                Some(g) => Some(g),
                None => pick(None)?,
            };
            let grant_id = match found {
                Some((id, mode, expires_at, auto)) => {
                    if !mode_of(&mode).allows(t.mode) {
                        return Err(StoreError::refused(
                            ErrorCode::GrantModeInsufficient,
                            format!("grant {id} is ro; a grant is never widened to rw (revoke it and grant rw)"),
                        ));
                    }
                    // The one-shot path's own grants cover what each of its tickets asks for.
                    if auto && expires_at.is_some_and(|e| e < wanted_until.millis()) {
                        tx.prepare_cached("UPDATE grants SET expires_at = ?1 WHERE id = ?2")?
                            .execute(params![wanted_until.millis(), id])?;
                    }
                    id
                }
                None => {
                    let id = GrantId::generate();
                    tx.prepare_cached(
                        "INSERT INTO grants (id, account, workspace_id, workspace, tenant_id, tenant_slug, runtime_id, mode, auto, created_at, expires_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, ?9, ?10)",
                    )?
                    .execute(params![
                        id.as_str(),
                        account.as_str(),
                        ws_id,
                        t.workspace.to_string(),
                        t_id,
                        t.tenant.as_str(),
                        t.runtime.as_str(),
                        t.mode.as_str(),
                        now.millis(),
                        wanted_until.millis(),
                    ])?;
                    id.to_string()
                }
            };
            let grant = Self::grant_by_id(tx, account, &grant_id, now)?;
            let expires_at = match grant.expires_at {
                Some(g) if g < wanted_until => g,
                _ => wanted_until,
            };
            tx.prepare_cached(
                "INSERT INTO sessions (id, account, grant_id, workspace_id, workspace, tenant_id, tenant_slug, runtime_id, mode, kid, state, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'issued', ?11, ?12)",
            )?
            .execute(params![
                t.session_id.as_str(),
                account.as_str(),
                grant_id,
                ws_id,
                t.workspace.to_string(),
                t_id,
                t.tenant.as_str(),
                t.runtime.as_str(),
                t.mode.as_str(),
                t.kid,
                now.millis(),
                expires_at.millis(),
            ])?;
            let session = Self::session_by_id(tx, None, t.session_id.as_str(), now)?;
            row.grant = Some(grant.id.to_string());
            Ok((session, grant))
        })
    }

    fn list_sessions(
        &self,
        account: &Handle,
        q: &SessionQuery,
        now: Timestamp,
    ) -> StoreResult<Vec<Session>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {SESSION_COLS} FROM sessions WHERE account = ?1 \
                 AND (?2 IS NULL OR tenant_slug = ?2) AND (?3 IS NULL OR runtime_id = ?3) AND (?4 IS NULL OR workspace = ?4) \
                 AND (?5 IS NULL OR ?5 = CASE WHEN state IN ('issued', 'active') AND expires_at <= ?6 THEN 'expired' ELSE state END) \
                 ORDER BY created_at, rowid"
            ))?;
            let rows = st.query_map(
                params![account.as_str(), q.tenant, q.runtime, q.workspace, q.state, now.millis()],
                |r| session_from_row(r, now),
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn get_session(
        &self,
        account: &Handle,
        id: &SessionId,
        now: Timestamp,
    ) -> StoreResult<Session> {
        self.read(|c| Self::session_by_id(c, Some(account), id.as_str(), now))
    }

    fn revoke_session(
        &self,
        actor: &Actor,
        id: &SessionId,
        now: Timestamp,
    ) -> StoreResult<(Session, Revocation)> {
        let account = &actor.account;
        self.audited(now, AuditRow::new(actor, "session.revoke"), |tx, row| {
            row.session = Some(id.to_string());
            Self::session_by_id(tx, Some(account), id.as_str(), now)?;
            let reason = RevokeReason::SessionRevoked;
            let sessions = revoke_sessions_where(tx, "id = ?3", &[&id.as_str()], reason, now)?;
            let s = Self::session_by_id(tx, Some(account), id.as_str(), now)?;
            row.fill_session(&s);
            row.counts(0, sessions.len());
            Ok((
                s,
                Revocation {
                    counts: counts(0, &sessions),
                    sessions,
                    reason,
                },
            ))
        })
    }

    fn exchange(
        &self,
        id: &SessionId,
        token_hash: &[u8; 32],
        now: Timestamp,
    ) -> StoreResult<Session> {
        self.audited(now, AuditRow::agent("session.exchange", id), |tx, row| {
            let s = Self::session_by_id(tx, None, id.as_str(), now)
                .map_err(|_| StoreError::refused(ErrorCode::TicketInvalid, "ticket names an unknown session"))?;
            row.fill_session(&s);
            match s.state {
                SessionState::Issued => {}
                SessionState::Active | SessionState::Ended => {
                    return Err(StoreError::refused(
                        ErrorCode::TicketAlreadyUsed,
                        format!("ticket for session {id} was already exchanged"),
                    ));
                }
                SessionState::Revoked => {
                    return Err(StoreError::refused(ErrorCode::SessionRevoked, format!("session {id} was revoked")));
                }
                SessionState::Expired => {
                    return Err(StoreError::refused(ErrorCode::SessionExpired, format!("session {id} has expired")));
                }
            }
            let n = tx
                .prepare_cached(
                    "UPDATE sessions SET state = 'active', exchanged_at = ?1, token_hash = ?2 WHERE id = ?3 AND state = 'issued'",
                )?
                .execute(params![now.millis(), &token_hash[..], id.as_str()])?;
            if n != 1 {
                return Err(StoreError::refused(
                    ErrorCode::TicketAlreadyUsed,
                    format!("ticket for session {id} was already exchanged"),
                ));
            }
            Self::session_by_id(tx, None, id.as_str(), now)
        })
    }

    fn session_by_token(
        &self,
        id: &SessionId,
        token_hash: &[u8; 32],
        now: Timestamp,
    ) -> StoreResult<Session> {
        self.read(|c| {
            Self::check_token(c, id, token_hash)?;
            Self::session_by_id(c, None, id.as_str(), now)
        })
    }

    fn end_session(
        &self,
        id: &SessionId,
        token_hash: &[u8; 32],
        now: Timestamp,
    ) -> StoreResult<Session> {
        self.audited(now, AuditRow::agent("session.end", id), |tx, row| {
            Self::check_token(tx, id, token_hash)?;
            tx.prepare_cached(
                "UPDATE sessions SET state = 'ended', ended_at = ?1, end_reason = 'unmounted' \
                 WHERE id = ?2 AND state = 'active' AND expires_at > ?1",
            )?
            .execute(params![now.millis(), id.as_str()])?;
            let s = Self::session_by_id(tx, None, id.as_str(), now)?;
            row.fill_session(&s);
            Ok(s)
        })
    }

    fn list_audit(
        &self,
        account: Option<&Handle>,
        since: i64,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntry>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, at, account, actor, action, tenant, runtime, workspace, grant_id, session_id, result, detail \
                 FROM audit WHERE (?1 IS NULL OR account = ?1) AND id > ?2 ORDER BY id LIMIT ?3",
            )?;
            let rows = st.query_map(params![account.map(|a| a.as_str()), since, limit], audit_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn kid_last_expiry(&self, kid: &str) -> StoreResult<Option<Timestamp>> {
        self.read(|c| {
            let v: Option<i64> = c
                .prepare_cached("SELECT MAX(expires_at) FROM sessions WHERE kid = ?1")?
                .query_row(params![kid], |r| r.get(0))?;
            Ok(ts(v))
        })
    }
}
