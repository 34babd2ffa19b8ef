//! The API's one error type: a machine code and one human sentence; the status comes from the code.
//! Backend faults are logged here and answered as `internal` without their details.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use grantfs::ErrorCode;
use grantfs::error::ErrorBody;

use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// For `rate_limited`: when to try again.
    pub retry_after: Option<std::time::Duration>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 429 with a `Retry-After` header (whole seconds, at least 1).
    pub fn rate_limited(what: &str, retry_after: std::time::Duration) -> Self {
        Self {
            code: ErrorCode::RateLimited,
            message: format!(
                "too many {what}; retry in {} ms",
                retry_after.as_millis().max(1)
            ),
            retry_after: Some(retry_after),
        }
    }

    /// A field broke a rule: 422 naming the field.
    pub fn invalid(field: &str, rule: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::InvalidRequest, format!("{field}: {rule}"))
    }

    pub fn internal(context: &str, detail: impl std::fmt::Display) -> Self {
        tracing::error!(context, %detail, "internal error");
        Self::new(
            ErrorCode::Internal,
            "internal error; the server log has the details",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Refused { code, message } => Self::new(code, message),
            StoreError::Unavailable(message) => {
                tracing::warn!(%message, "store unavailable");
                Self::new(ErrorCode::Unavailable, message)
            }
            StoreError::Backend(detail) => Self::internal("store", detail),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (
            status,
            Json(ErrorBody {
                code: self.code,
                message: self.message,
            }),
        )
            .into_response();
        if let Some(d) = self.retry_after {
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs.max(1)),
            );
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
