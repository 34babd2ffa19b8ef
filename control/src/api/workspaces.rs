//! `/v1/workspaces`: create, list, get, delete (which revokes the workspace's grants and sessions).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use grantfs::api::{CreateWorkspace, List, RevokeCounts, Workspace};
use grantfs::{Handle, Timestamp, WorkspaceName, WorkspaceRef};

use super::{ApiError, ApiJson, ApiPath, ApiResult, AppState, Auth, field};

/// A workspace named in a path; a malformed name is 422, another account's is 404.
fn path_ref(handle: &str, name: &str) -> ApiResult<WorkspaceRef> {
    let handle = Handle::parse(handle).map_err(|e| ApiError::invalid("handle", e))?;
    let name = WorkspaceName::parse(name).map_err(|e| ApiError::invalid("name", e))?;
    Ok(WorkspaceRef { handle, name })
}

pub async fn create(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<CreateWorkspace>,
) -> ApiResult<(StatusCode, Json<Workspace>)> {
    let name = field("name", &req.name, WorkspaceName::parse)?;
    let actor = auth.0.clone();
    let ws = st
        .store(move |s| s.create_workspace(&actor, &name, Timestamp::now()))
        .await?;
    tracing::info!(
        workspace = ws.reference,
        key = auth.0.key_id,
        "workspace created"
    );
    Ok((StatusCode::CREATED, Json(ws)))
}

pub async fn list(State(st): State<AppState>, auth: Auth) -> ApiResult<Json<List<Workspace>>> {
    let account = auth.account().clone();
    let items = st.store(move |s| s.list_workspaces(&account)).await?;
    Ok(Json(List { items }))
}

pub async fn get(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath((handle, name)): ApiPath<(String, String)>,
) -> ApiResult<Json<Workspace>> {
    let ws = path_ref(&handle, &name)?;
    let account = auth.account().clone();
    Ok(Json(
        st.store(move |s| s.get_workspace(&account, &ws)).await?,
    ))
}

pub async fn delete(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath((handle, name)): ApiPath<(String, String)>,
) -> ApiResult<Json<RevokeCounts>> {
    let ws = path_ref(&handle, &name)?;
    let actor = auth.0.clone();
    let r = st
        .store(move |s| s.delete_workspace(&actor, &ws, Timestamp::now()))
        .await?;
    Ok(Json(st.push(&r)))
}
