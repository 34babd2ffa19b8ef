//! The machine error codes of the API and the HTTP status each one travels with.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Every `code` an API error body can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidRequest,
    MalformedJson,
    Unauthorized,
    Forbidden,
    TenantNotFound,
    WorkspaceNotFound,
    GrantNotFound,
    SessionNotFound,
    NotFound,
    MethodNotAllowed,
    TenantExists,
    WorkspaceExists,
    GrantModeInsufficient,
    TicketInvalid,
    TicketExpired,
    TicketAlreadyUsed,
    SessionRevoked,
    SessionExpired,
    PayloadTooLarge,
    UnsupportedMediaType,
    RateLimited,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// The HTTP status this code is answered with; the one place that decides it.
    pub fn status(self) -> u16 {
        use ErrorCode::*;
        match self {
            InvalidRequest => 422,
            MalformedJson => 400,
            Unauthorized | TicketInvalid | TicketExpired => 401,
            Forbidden | SessionRevoked | SessionExpired => 403,
            TenantNotFound | WorkspaceNotFound | GrantNotFound | SessionNotFound | NotFound => 404,
            MethodNotAllowed => 405,
            TenantExists | WorkspaceExists | GrantModeInsufficient | TicketAlreadyUsed => 409,
            PayloadTooLarge => 413,
            UnsupportedMediaType => 415,
            RateLimited => 429,
            Internal => 500,
            Unavailable => 503,
        }
    }

    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InvalidRequest => "invalid_request",
            MalformedJson => "malformed_json",
            Unauthorized => "unauthorized",
            Forbidden => "forbidden",
            TenantNotFound => "tenant_not_found",
            WorkspaceNotFound => "workspace_not_found",
            GrantNotFound => "grant_not_found",
            SessionNotFound => "session_not_found",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            TenantExists => "tenant_exists",
            WorkspaceExists => "workspace_exists",
            GrantModeInsufficient => "grant_mode_insufficient",
            TicketInvalid => "ticket_invalid",
            TicketExpired => "ticket_expired",
            TicketAlreadyUsed => "ticket_already_used",
            SessionRevoked => "session_revoked",
            SessionExpired => "session_expired",
            PayloadTooLarge => "payload_too_large",
            UnsupportedMediaType => "unsupported_media_type",
            RateLimited => "rate_limited",
            Unavailable => "unavailable",
            Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every non-2xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_names() {
        for c in [
            ErrorCode::TicketAlreadyUsed,
            ErrorCode::InvalidRequest,
            ErrorCode::Internal,
        ] {
            let j = serde_json::to_string(&c).unwrap();
            assert_eq!(j, format!("\"{}\"", c.as_str()));
        }
        assert_eq!(ErrorCode::GrantModeInsufficient.status(), 409);
        assert_eq!(ErrorCode::MalformedJson.status(), 400);
    }
}
