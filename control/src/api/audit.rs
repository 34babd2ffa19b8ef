//! `GET /v1/audit?since=&limit=`: the caller's account's audit trail, oldest first after a cursor.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiQuery, ApiResult, AppState, Auth};
use crate::store::AuditEntry;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Records after this id (the `next_since` of a previous page); default 0 = from the start.
    since: Option<i64>,
    /// 1 to 1000; default 100.
    limit: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct AuditPage {
    items: Vec<AuditEntry>,
    /// Pass as `since` for the next page.
    next_since: i64,
}

pub async fn list(
    State(st): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    let since = q.since.unwrap_or(0);
    if since < 0 {
        return Err(ApiError::invalid(
            "since",
            "must be an audit record id (0 or more)",
        ));
    }
    let account = auth.account().clone();
    let items = st
        .store(move |s| s.list_audit(Some(&account), since, limit))
        .await?;
    let next_since = items.last().map_or(since, |e| e.id);
    Ok(Json(AuditPage { items, next_since }))
}
