//! `/v1/tenants`: create (conflict on an existing slug), list, get, delete (tears down the tenant,
//! its grants and its sessions; the slug is free again).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use grantfs::api::{CreateTenant, List, RevokeCounts, Tenant};
use grantfs::{TenantSlug, Timestamp};

use super::{ApiError, ApiJson, ApiPath, ApiResult, AppState, Auth, field};

const MAX_EXTERNAL_ID: usize = 256;
const MAX_METADATA: usize = 16 * 1024;

pub async fn create(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<CreateTenant>,
) -> ApiResult<(StatusCode, Json<Tenant>)> {
    let slug = field("slug", &req.slug, TenantSlug::parse)?;
    if let Some(x) = &req.external_id {
        if x.len() > MAX_EXTERNAL_ID {
            return Err(ApiError::invalid(
                "external_id",
                format!("must be at most {MAX_EXTERNAL_ID} bytes"),
            ));
        }
        if x.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                "external_id",
                "must not contain control characters",
            ));
        }
    }
    let metadata = req.metadata.unwrap_or_else(|| serde_json::json!({}));
    if !metadata.is_object() {
        return Err(ApiError::invalid("metadata", "must be a JSON object"));
    }
    if metadata.to_string().len() > MAX_METADATA {
        return Err(ApiError::invalid(
            "metadata",
            format!("must be at most {MAX_METADATA} bytes serialized"),
        ));
    }
    let actor = auth.0.clone();
    let external_id = req.external_id;
    let t = st
        .store(move |s| s.create_tenant(&actor, &slug, external_id, metadata, Timestamp::now()))
        .await?;
    tracing::info!(tenant = t.slug, key = auth.0.key_id, "tenant created");
    Ok((StatusCode::CREATED, Json(t)))
}

pub async fn list(State(st): State<AppState>, auth: Auth) -> ApiResult<Json<List<Tenant>>> {
    let account = auth.account().clone();
    let items = st.store(move |s| s.list_tenants(&account)).await?;
    Ok(Json(List { items }))
}

pub async fn get(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(slug): ApiPath<String>,
) -> ApiResult<Json<Tenant>> {
    let slug = field("slug", &slug, TenantSlug::parse)?;
    let account = auth.account().clone();
    Ok(Json(
        st.store(move |s| s.get_tenant(&account, &slug)).await?,
    ))
}

pub async fn delete(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(slug): ApiPath<String>,
) -> ApiResult<Json<RevokeCounts>> {
    let slug = field("slug", &slug, TenantSlug::parse)?;
    let actor = auth.0.clone();
    let r = st
        .store(move |s| s.delete_tenant(&actor, &slug, Timestamp::now()))
        .await?;
    Ok(Json(st.push(&r)))
}
