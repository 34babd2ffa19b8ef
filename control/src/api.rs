//! The HTTP API: the router (built by a function, so tests call it without a socket), shared state,
//! the extractors (API key, JSON body, query) and the small endpoints. Each resource's handlers
//! live in their own module; they validate, make one store call, push to the hub, answer.

mod audit;
pub mod error;
mod grants;
mod sessions;
mod tenants;
mod tickets;
mod workspaces;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use grantfs::api::{RevokeCounts, RevokedEvent};
use grantfs::{ErrorCode, Handle, Timestamp, WorkspaceRef};
use serde::de::DeserializeOwned;

pub use error::{ApiError, ApiResult};

use crate::hub::Hub;
use crate::ratelimit::RateLimits;
use crate::signing::KeyRing;
use crate::store::{Actor, Revocation, Store, StoreResult};

/// Slots for high-volume store calls (see [`AppState::store_bulk`]).
static BULK_LANE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// Counters behind `/metrics`.
#[derive(Default)]
pub struct Metrics {
    pub tickets_issued: AtomicU64,
    pub exchanges: AtomicU64,
    pub exchange_refusals: AtomicU64,
    pub sessions_revoked: AtomicU64,
    pub grants_revoked: AtomicU64,
    pub auth_failures: AtomicU64,
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub keys: Arc<KeyRing>,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    /// The control plane's public base URL: tickets' `iss`, and where agents exchange.
    pub public_url: String,
    pub keepalive: Duration,
    pub limits: Arc<RateLimits>,
}

impl AppState {
    /// Runs a store call on the blocking pool.
    pub async fn store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> StoreResult<T> + Send + 'static,
    ) -> ApiResult<T> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || f(store.as_ref())).await {
            Ok(r) => r.map_err(ApiError::from),
            Err(e) => Err(ApiError::internal("store task", e)),
        }
    }

    /// A store call of the high-volume kind (ticket issuance, exchange): it first waits for one
    /// of a few slots, so a burst of them never queues ahead of a revocation on the store's
    /// single writer. Revocations and management calls use [`AppState::store`] directly.
    pub async fn store_bulk<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> StoreResult<T> + Send + 'static,
    ) -> ApiResult<T> {
        let _slot = BULK_LANE
            .acquire()
            .await
            .map_err(|e| ApiError::internal("bulk lane", e))?;
        self.store(f).await
    }

    /// Hands a durable revocation to every open event stream it concerns.
    pub fn push(&self, r: &Revocation) -> RevokeCounts {
        let ev = RevokedEvent {
            reason: r.reason,
            at: Timestamp::now(),
        };
        let delivered = self.hub.publish(&r.sessions, ev);
        self.metrics
            .sessions_revoked
            .fetch_add(r.counts.revoked_sessions, Ordering::Relaxed);
        self.metrics
            .grants_revoked
            .fetch_add(r.counts.revoked_grants, Ordering::Relaxed);
        tracing::info!(
            reason = r.reason.as_str(),
            grants = r.counts.revoked_grants,
            sessions = r.counts.revoked_sessions,
            delivered,
            "revoked"
        );
        r.counts
    }
}

/// The caller, authenticated by `Authorization: Bearer <api key>`.
pub struct Auth(pub Actor);

impl Auth {
    pub fn account(&self) -> &Handle {
        &self.0.account
    }
}

/// The bearer credential of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let Some(secret) = bearer(&parts.headers).map(str::to_owned) else {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "missing API key: send Authorization: Bearer <api key>",
            ));
        };
        match state.store(move |s| s.authenticate(&secret)).await? {
            Some(actor) => Ok(Auth(actor)),
            None => {
                state.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
                Err(ApiError::new(
                    ErrorCode::Unauthorized,
                    "API key is unknown or revoked",
                ))
            }
        }
    }
}

/// A JSON body whose rejections are API errors (`malformed_json`, `payload_too_large`).
/// Every request body is a JSON object: serde would also build a struct from an array.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> ApiResult<Self> {
        match Json::<serde_json::Value>::from_request(req, state).await {
            Ok(Json(v)) if v.is_object() => serde_json::from_value(v)
                .map(ApiJson)
                .map_err(|e| ApiError::new(ErrorCode::MalformedJson, format!("request body: {e}"))),
            Ok(Json(_)) => Err(ApiError::new(
                ErrorCode::MalformedJson,
                "request body must be a JSON object",
            )),
            Err(rej) => Err(json_rejection(rej)),
        }
    }
}

fn json_rejection(rej: JsonRejection) -> ApiError {
    if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body is over {} bytes", grantfs::MAX_BODY_BYTES),
        );
    }
    let detail = match &rej {
        JsonRejection::MissingJsonContentType(_) => {
            "expected Content-Type: application/json".to_owned()
        }
        other => other.body_text(),
    };
    ApiError::new(ErrorCode::MalformedJson, detail)
}

/// Query parameters whose rejections are `invalid_request`.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(rej) => Err(query_rejection(rej)),
        }
    }
}

fn query_rejection(rej: QueryRejection) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, rej.body_text())
}

/// Path parameters whose rejections are `invalid_request` (axum's own answer is plain text).
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(ApiPath(v)),
            Err(rej) => Err(ApiError::new(ErrorCode::InvalidRequest, rej.body_text())),
        }
    }
}

/// Parses a workspace reference in a body or query: `handle/name`, `grantfs://handle/name`, or a
/// bare name in the caller's account.
pub fn workspace_ref(field: &str, s: &str, account: &Handle) -> ApiResult<WorkspaceRef> {
    WorkspaceRef::parse_with_default(s, Some(account)).map_err(|e| ApiError::invalid(field, e))
}

/// Parses a validated name type, or answers 422 naming the field.
pub fn field<T>(
    name: &str,
    value: &str,
    parse: fn(&str) -> Result<T, grantfs::NameError>,
) -> ApiResult<T> {
    parse(value).map_err(|e| ApiError::invalid(name, e))
}

/// Checks an optional name filter of a list query: a value that breaks the name's rule is a 422
/// naming the parameter, like a body field (it could never match anything).
pub fn filter_name<T>(
    name: &str,
    value: Option<String>,
    parse: fn(&str) -> Result<T, grantfs::NameError>,
) -> ApiResult<Option<String>> {
    match value {
        Some(v) => field(name, &v, parse).map(|_| Some(v)),
        None => Ok(None),
    }
}

/// Checks a ttl field's range.
pub fn ttl(name: &str, v: i64, max: u64) -> ApiResult<u64> {
    if v < 1 || v as u64 > max {
        return Err(ApiError::invalid(
            name,
            format!("must be between 1 and {max} seconds"),
        ));
    }
    Ok(v as u64)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn jwks(State(st): State<AppState>) -> ApiResult<impl IntoResponse> {
    let set = sessions::published_keys(&st).await?;
    Ok(([(header::CACHE_CONTROL, "no-cache")], Json(set)))
}

async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    let m = &st.metrics;
    let rows: [(&str, &str, &str, u64); 8] = [
        (
            "grantfs_tickets_issued_total",
            "counter",
            "mount tickets issued",
            m.tickets_issued.load(Ordering::Relaxed),
        ),
        (
            "grantfs_exchanges_total",
            "counter",
            "tickets exchanged for sessions",
            m.exchanges.load(Ordering::Relaxed),
        ),
        (
            "grantfs_exchange_refusals_total",
            "counter",
            "ticket exchanges refused",
            m.exchange_refusals.load(Ordering::Relaxed),
        ),
        (
            "grantfs_sessions_revoked_total",
            "counter",
            "sessions revoked",
            m.sessions_revoked.load(Ordering::Relaxed),
        ),
        (
            "grantfs_grants_revoked_total",
            "counter",
            "grants revoked",
            m.grants_revoked.load(Ordering::Relaxed),
        ),
        (
            "grantfs_auth_failures_total",
            "counter",
            "requests with an unknown or revoked API key",
            m.auth_failures.load(Ordering::Relaxed),
        ),
        (
            "grantfs_event_streams_open",
            "gauge",
            "session event streams open",
            st.hub.open_streams(),
        ),
        (
            "grantfs_revocation_events_delivered_total",
            "counter",
            "revoked events handed to streams",
            st.hub.delivered(),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, v) in rows {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
        ));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this endpoint",
    )
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/metrics", get(metrics))
        .route(
            "/v1/workspaces",
            post(workspaces::create).get(workspaces::list),
        )
        .route(
            "/v1/workspaces/{handle}/{name}",
            get(workspaces::get).delete(workspaces::delete),
        )
        .route("/v1/tenants", post(tenants::create).get(tenants::list))
        .route(
            "/v1/tenants/{slug}",
            get(tenants::get).delete(tenants::delete),
        )
        .route("/v1/grants", post(grants::create).get(grants::list))
        .route("/v1/grants/revoke", post(grants::revoke_many))
        .route(
            "/v1/grants/{id}",
            get(grants::get).delete(grants::revoke_one),
        )
        .route("/v1/tickets", post(tickets::create))
        .route("/v1/audit", get(audit::list))
        .route("/v1/sessions", get(sessions::list))
        .route("/v1/sessions/exchange", post(sessions::exchange))
        .route(
            "/v1/sessions/{id}",
            get(sessions::get).delete(sessions::revoke),
        )
        .route("/v1/sessions/{id}/events", get(sessions::events))
        .route("/v1/sessions/{id}/end", post(sessions::end))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(grantfs::MAX_BODY_BYTES))
        .with_state(state)
}
