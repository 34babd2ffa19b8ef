//! `POST /v1/tickets`: the one-shot path. The store picks or creates the grant and records an
//! `issued` session; this handler signs the ticket for it.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use grantfs::api::{CreateTicket, TicketIssued};
use grantfs::ticket::{self, TicketClaims};
use grantfs::{Mode, RuntimeId, SessionId, TenantSlug, Timestamp};

use super::{ApiError, ApiJson, ApiResult, AppState, Auth, field, ttl, workspace_ref};
use crate::store::TicketRequest;

pub async fn create(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<CreateTicket>,
) -> ApiResult<(StatusCode, Json<TicketIssued>)> {
    let account = auth.account().clone();
    let actor = auth.0.clone();
    if let Err(retry) = st.limits.tickets.check(&auth.0.key_id) {
        return Err(ApiError::rate_limited(
            "ticket requests for this API key",
            retry,
        ));
    }
    let key = st.keys.current();
    let t = TicketRequest {
        session_id: SessionId::generate(),
        tenant: field("tenant_slug", &req.tenant_slug, TenantSlug::parse)?,
        runtime: field("runtime_id", &req.runtime_id, RuntimeId::parse)?,
        workspace: workspace_ref("workspace", &req.workspace, &account)?,
        mode: field("mode", &req.mode, Mode::parse)?,
        ttl_secs: ttl("ttl_seconds", req.ttl_seconds, grantfs::MAX_TICKET_TTL_SECS)?,
        kid: key.kid.clone(),
    };
    let now = Timestamp::now();
    let (session, grant) = st
        .store_bulk(move |s| s.issue_session(&actor, &t, now))
        .await?;
    let claims = TicketClaims {
        iss: st.public_url.clone(),
        aud: grantfs::TICKET_AUDIENCE.to_owned(),
        sub: session.runtime_id.clone(),
        jti: session.id.to_string(),
        iat: now.unix_secs(),
        // JWT times are whole seconds; round up so the ticket never dies before its session.
        exp: (session.expires_at.millis() + 999).div_euclid(1000),
        nbf: None,
        ws: session.workspace.clone(),
        tenant: session.tenant_slug.clone(),
        grant: grant.id.to_string(),
        mode: session.mode,
    };
    let mount_ticket =
        ticket::sign(&claims, &key.kid, &key.key).map_err(|e| ApiError::internal("signing", e))?;
    st.metrics.tickets_issued.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(session = %session.id, grant = %grant.id, kid = key.kid, key = auth.0.key_id, "ticket issued");
    Ok((
        StatusCode::CREATED,
        Json(TicketIssued {
            mount_ticket,
            session_id: session.id,
            grant_id: grant.id,
            mode: session.mode,
            expires_at: session.expires_at,
        }),
    ))
}
