//! Request and response bodies of the HTTP API, exactly as they travel (snake_case JSON).
//! Requests reject unknown fields and carry names as plain strings: the server validates them so
//! that a rule violation is a 422 naming the field, not a parse error.

use serde::{Deserialize, Serialize};

use crate::{GrantId, Mode, SessionId, Timestamp};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workspace {
    pub handle: String,
    pub name: String,
    #[serde(rename = "ref")]
    pub reference: String,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    pub slug: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    pub slug: String,
    pub external_id: Option<String>,
    pub metadata: serde_json::Value,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGrant {
    pub workspace: String,
    pub tenant_slug: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GrantScope {
    Runtime,
    Tenant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GrantState {
    Active,
    Expired,
    Revoked,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    pub id: GrantId,
    pub workspace: String,
    pub tenant_slug: String,
    pub runtime_id: Option<String>,
    pub scope: GrantScope,
    pub mode: Mode,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub state: GrantState,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeGrants {
    pub tenant_slug: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
}

/// What a bulk revocation or a teardown changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeCounts {
    pub revoked_grants: u64,
    pub revoked_sessions: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTicket {
    pub tenant_slug: String,
    pub runtime_id: String,
    pub workspace: String,
    pub mode: String,
    pub ttl_seconds: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketIssued {
    pub mount_ticket: String,
    pub session_id: SessionId,
    pub grant_id: GrantId,
    pub mode: Mode,
    pub expires_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    Issued,
    Active,
    Ended,
    Revoked,
    Expired,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Issued => "issued",
            SessionState::Active => "active",
            SessionState::Ended => "ended",
            SessionState::Revoked => "revoked",
            SessionState::Expired => "expired",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "issued" => SessionState::Issued,
            "active" => SessionState::Active,
            "ended" => SessionState::Ended,
            "revoked" => SessionState::Revoked,
            "expired" => SessionState::Expired,
            _ => return None,
        })
    }
    /// Whether a session in this state still authorizes a mount.
    pub fn authorizes(self) -> bool {
        matches!(self, SessionState::Issued | SessionState::Active)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: SessionId,
    pub grant_id: GrantId,
    pub workspace: String,
    pub tenant_slug: String,
    pub runtime_id: String,
    pub mode: Mode,
    pub state: SessionState,
    pub created_at: Timestamp,
    pub exchanged_at: Option<Timestamp>,
    pub expires_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub end_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeRequest {
    pub ticket: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Storage {
    pub kind: String,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    pub session_id: SessionId,
    pub session_token: String,
    pub workspace: String,
    pub mode: Mode,
    pub expires_at: Timestamp,
    pub storage: Storage,
    pub events_url: String,
    pub keepalive_seconds: u64,
}

/// Why a session stopped authorizing, as the `revoked` event and `end_reason` say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeReason {
    GrantRevoked,
    TenantDeleted,
    WorkspaceDeleted,
    SessionRevoked,
    Expired,
}

impl RevokeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeReason::GrantRevoked => "grant_revoked",
            RevokeReason::TenantDeleted => "tenant_deleted",
            RevokeReason::WorkspaceDeleted => "workspace_deleted",
            RevokeReason::SessionRevoked => "session_revoked",
            RevokeReason::Expired => "expired",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "grant_revoked" => RevokeReason::GrantRevoked,
            "tenant_deleted" => RevokeReason::TenantDeleted,
            "workspace_deleted" => RevokeReason::WorkspaceDeleted,
            "session_revoked" => RevokeReason::SessionRevoked,
            "expired" => RevokeReason::Expired,
            _ => return None,
        })
    }
}

/// The data of a `revoked` server-sent event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedEvent {
    pub reason: RevokeReason,
    pub at: Timestamp,
}

/// A list answer: `{"items": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct List<T> {
    pub items: Vec<T>,
}

/// `GET /v1/grants` filters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GrantFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_slug: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_inactive: Option<bool>,
}

/// `GET /v1/sessions` filters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SessionFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_slug: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_reject_unknown_fields() {
        let e = serde_json::from_str::<CreateTenant>(r#"{"slug":"a","externalId":"x"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("externalId"), "{e}");
    }

    #[test]
    fn workspace_serializes_ref() {
        let w = Workspace {
            handle: "a".into(),
            name: "b".into(),
            reference: "a/b".into(),
            created_at: Timestamp::from_millis(0),
        };
        let v = serde_json::to_value(&w).unwrap();
        assert_eq!(v["ref"], "a/b");
    }
}
