//! `/v1/grants`: create (runtime-scoped or tenant-wide, optional ttl), list with filters, get,
//! revoke one (idempotent), revoke by scope.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use grantfs::api::{CreateGrant, Grant, GrantFilter, List, RevokeCounts, RevokeGrants};
use grantfs::{GrantId, Mode, RuntimeId, TenantSlug, Timestamp};

use super::{
    ApiJson, ApiPath, ApiQuery, ApiResult, AppState, Auth, field, filter_name, ttl, workspace_ref,
};
use crate::store::{GrantQuery, NewGrant, RevokeScope};

pub async fn create(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<CreateGrant>,
) -> ApiResult<(StatusCode, Json<Grant>)> {
    let account = auth.account().clone();
    let actor = auth.0.clone();
    let g = NewGrant {
        workspace: workspace_ref("workspace", &req.workspace, &account)?,
        tenant: field("tenant_slug", &req.tenant_slug, TenantSlug::parse)?,
        runtime: req
            .runtime_id
            .as_deref()
            .map(|r| field("runtime_id", r, RuntimeId::parse))
            .transpose()?,
        mode: field("mode", &req.mode, Mode::parse)?,
        ttl_secs: req
            .ttl_seconds
            .map(|t| ttl("ttl_seconds", t, grantfs::MAX_GRANT_TTL_SECS))
            .transpose()?,
    };
    let grant = st
        .store(move |s| s.create_grant(&actor, &g, Timestamp::now()))
        .await?;
    tracing::info!(grant = %grant.id, tenant = grant.tenant_slug, key = auth.0.key_id, "grant created");
    Ok((StatusCode::CREATED, Json(grant)))
}

pub async fn list(
    State(st): State<AppState>,
    auth: Auth,
    ApiQuery(f): ApiQuery<GrantFilter>,
) -> ApiResult<Json<List<Grant>>> {
    let account = auth.account().clone();
    let q = GrantQuery {
        workspace: f
            .workspace
            .as_deref()
            .map(|w| workspace_ref("workspace", w, &account).map(|r| r.to_string()))
            .transpose()?,
        tenant: filter_name("tenant_slug", f.tenant_slug, TenantSlug::parse)?,
        runtime: filter_name("runtime_id", f.runtime_id, RuntimeId::parse)?,
        include_inactive: f.include_inactive.unwrap_or(false),
    };
    let items = st
        .store(move |s| s.list_grants(&account, &q, Timestamp::now()))
        .await?;
    Ok(Json(List { items }))
}

pub async fn get(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Grant>> {
    let account = auth.account().clone();
    let id = GrantId::from_string(id);
    Ok(Json(
        st.store(move |s| s.get_grant(&account, &id, Timestamp::now()))
            .await?,
    ))
}

pub async fn revoke_one(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Grant>> {
    let actor = auth.0.clone();
    let id = GrantId::from_string(id);
    let (grant, r) = st
        .store(move |s| s.revoke_grant(&actor, &id, Timestamp::now()))
        .await?;
    st.push(&r);
    Ok(Json(grant))
}

pub async fn revoke_many(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<RevokeGrants>,
) -> ApiResult<Json<RevokeCounts>> {
    let account = auth.account().clone();
    let actor = auth.0.clone();
    let scope = RevokeScope {
        tenant: field("tenant_slug", &req.tenant_slug, TenantSlug::parse)?,
        runtime: req
            .runtime_id
            .as_deref()
            .map(|r| field("runtime_id", r, RuntimeId::parse))
            .transpose()?,
        workspace: req
            .workspace
            .as_deref()
            .map(|w| workspace_ref("workspace", w, &account))
            .transpose()?,
    };
    let r = st
        .store(move |s| s.revoke_grants(&actor, &scope, Timestamp::now()))
        .await?;
    Ok(Json(st.push(&r)))
}
