//! `/v1/sessions`: list, get, revoke; and the agent-facing calls, which take no API key: ticket
//! exchange, the event stream (server-sent events) and a clean end, with the session token.

use std::convert::Infallible;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use grantfs::api::{
    Exchange, ExchangeRequest, List, RevokeReason, RevokedEvent, Session, SessionFilter,
    SessionState, Storage,
};
use grantfs::ids::random_base62;
use grantfs::ticket::JwkSet;
use grantfs::{ErrorCode, RuntimeId, SessionId, TenantSlug, Timestamp, WorkspaceRef};
use sha2::{Digest, Sha256};

use super::{
    ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, AppState, Auth, filter_name, workspace_ref,
};
use crate::hub::Subscription;
use crate::store::SessionQuery;

fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn session_token(headers: &HeaderMap) -> ApiResult<String> {
    super::bearer(headers).map(str::to_owned).ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unauthorized,
            "missing session token: send Authorization: Bearer <session token>",
        )
    })
}

/// The keys a ticket may be signed with right now: exactly the published JWKS.
pub async fn published_keys(st: &AppState) -> ApiResult<JwkSet> {
    let keys = st.keys.clone();
    st.store(move |s| {
        let now = Timestamp::now().millis();
        let leeway = grantfs::TICKET_LEEWAY_SECS as i64 * 1000;
        let mut fault = None;
        let set = crate::signing::jwks(&keys, |kid| match s.kid_last_expiry(kid) {
            Ok(e) => e.is_some_and(|e| e.millis() + leeway > now),
            Err(e) => {
                fault = Some(e);
                false
            }
        });
        match fault {
            Some(e) => Err(e),
            None => Ok(set),
        }
    })
    .await
}

pub async fn list(
    State(st): State<AppState>,
    auth: Auth,
    ApiQuery(f): ApiQuery<SessionFilter>,
) -> ApiResult<Json<List<Session>>> {
    let account = auth.account().clone();
    if let Some(s) = &f.state
        && SessionState::parse(s).is_none()
    {
        return Err(ApiError::invalid(
            "state",
            "must be one of issued, active, ended, revoked, expired",
        ));
    }
    let q = SessionQuery {
        workspace: f
            .workspace
            .as_deref()
            .map(|w| workspace_ref("workspace", w, &account).map(|r| r.to_string()))
            .transpose()?,
        tenant: filter_name("tenant_slug", f.tenant_slug, TenantSlug::parse)?,
        runtime: filter_name("runtime_id", f.runtime_id, RuntimeId::parse)?,
        state: f.state,
    };
    let items = st
        .store(move |s| s.list_sessions(&account, &q, Timestamp::now()))
        .await?;
    Ok(Json(List { items }))
}

pub async fn get(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Session>> {
    let account = auth.account().clone();
    let id = SessionId::from_string(id);
    Ok(Json(
        st.store(move |s| s.get_session(&account, &id, Timestamp::now()))
            .await?,
    ))
}

pub async fn revoke(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Session>> {
    let actor = auth.0.clone();
    let id = SessionId::from_string(id);
    let (session, r) = st
        .store(move |s| s.revoke_session(&actor, &id, Timestamp::now()))
        .await?;
    st.push(&r);
    Ok(Json(session))
}

pub async fn exchange(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<ExchangeRequest>,
) -> ApiResult<Json<Exchange>> {
    let out = do_exchange(&st, req).await;
    let counter = if out.is_ok() {
        &st.metrics.exchanges
    } else {
        &st.metrics.exchange_refusals
    };
    counter.fetch_add(1, Ordering::Relaxed);
    out.map(Json)
}

async fn do_exchange(st: &AppState, req: ExchangeRequest) -> ApiResult<Exchange> {
    let keys = published_keys(st).await?;
    let verifier = crate::signing::verifier(&keys, &st.public_url)
        .map_err(|e| ApiError::internal("jwks", e))?;
    let claims = verifier
        .verify(&req.ticket)
        .map_err(|e| ApiError::new(e.code(), e.to_string()))?;
    let ws = WorkspaceRef::parse(&claims.ws)
        .map_err(|e| ApiError::new(ErrorCode::TicketInvalid, format!("ticket workspace: {e}")))?;
    if let Err(retry) = st.limits.exchanges.check(ws.handle.as_str()) {
        return Err(ApiError::rate_limited(
            "ticket exchanges for this account",
            retry,
        ));
    }
    let token = format!("gst_{}", random_base62(43));
    let hash = token_hash(&token);
    let id = SessionId::from_string(claims.jti.clone());
    let session = st
        .store_bulk(move |s| s.exchange(&id, &hash, Timestamp::now()))
        .await?;
    if session.workspace != claims.ws
        || session.grant_id.as_str() != claims.grant
        || session.runtime_id != claims.sub
    {
        // Only a signing-key compromise gets here.
        return Err(ApiError::new(
            ErrorCode::TicketInvalid,
            "ticket claims do not match its session",
        ));
    }
    tracing::info!(session = %session.id, jti = claims.jti, "ticket exchanged");
    Ok(Exchange {
        events_url: format!("{}/v1/sessions/{}/events", st.public_url, session.id),
        session_id: session.id,
        session_token: token,
        storage: Storage {
            kind: "local".into(),
            path: ws.storage_path(),
        },
        workspace: session.workspace,
        mode: session.mode,
        expires_at: session.expires_at,
        keepalive_seconds: st.keepalive.as_secs().max(1),
    })
}

fn refuse_closed(s: &Session) -> ApiResult<()> {
    match s.state {
        SessionState::Issued | SessionState::Active => Ok(()),
        SessionState::Expired => Err(ApiError::new(
            ErrorCode::SessionExpired,
            format!("session {} has expired", s.id),
        )),
        SessionState::Revoked => Err(ApiError::new(
            ErrorCode::SessionRevoked,
            format!(
                "session {} was revoked ({})",
                s.id,
                s.end_reason.as_deref().unwrap_or("revoked")
            ),
        )),
        SessionState::Ended => Err(ApiError::new(
            ErrorCode::SessionRevoked,
            format!("session {} has ended", s.id),
        )),
    }
}

struct StreamState {
    first: Option<String>,
    sub: Subscription,
    expires_at: Timestamp,
}

pub async fn events(
    State(st): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let token = session_token(&headers)?;
    let id = SessionId::from_string(id);
    // Subscribe before reading the state, so a revocation committed in between is not missed.
    let sub = st.hub.subscribe(&id);
    let hash = token_hash(&token);
    let sid = id.clone();
    let session = st
        .store(move |s| s.session_by_token(&sid, &hash, Timestamp::now()))
        .await?;
    refuse_closed(&session)?;
    let first = serde_json::to_string(&session).map_err(|e| ApiError::internal("encode", e))?;
    let state = StreamState {
        first: Some(first),
        sub,
        expires_at: session.expires_at,
    };
    let stream = futures_util::stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        if let Some(first) = state.first.take() {
            return Some((Ok(Event::default().event("state").data(first)), Some(state)));
        }
        let deadline = tokio::time::Instant::now() + state.expires_at.until();
        let ev = tokio::select! {
            r = state.sub.recv() => r?,
            _ = tokio::time::sleep_until(deadline) => RevokedEvent { reason: RevokeReason::Expired, at: state.expires_at },
        };
        let data = serde_json::to_string(&ev).unwrap_or_default();
        Some((Ok(Event::default().event("revoked").data(data)), None))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(st.keepalive).text("keepalive")))
}

pub async fn end(
    State(st): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Session>> {
    let token = session_token(&headers)?;
    let id = SessionId::from_string(id);
    let hash = token_hash(&token);
    let session = st
        .store(move |s| s.end_session(&id, &hash, Timestamp::now()))
        .await?;
    tracing::info!(session = %session.id, state = session.state.as_str(), "session end");
    Ok(Json(session))
}
