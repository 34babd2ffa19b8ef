//! grantfs shared vocabulary: names, modes, ids, ticket claims, API types and error codes, plus the
//! async client of the HTTP API. No FUSE, no HTTP server, no database here.

pub mod api;
pub mod client;
pub mod error;
pub mod ids;
pub mod names;
pub mod ticket;
pub mod timestamp;

pub use error::ErrorCode;
pub use ids::{GrantId, SessionId};
pub use names::{Handle, Mode, NameError, RuntimeId, TenantSlug, WorkspaceName, WorkspaceRef};
pub use timestamp::Timestamp;

/// Largest request body the API accepts.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Audience of every mount ticket.
pub const TICKET_AUDIENCE: &str = "grantfs-agent";
/// Clock skew a ticket verifier tolerates, in seconds.
pub const TICKET_LEEWAY_SECS: u64 = 30;
/// Largest accepted ticket ttl (7 days).
pub const MAX_TICKET_TTL_SECS: u64 = 604_800;
/// Largest accepted grant ttl (365 days).
pub const MAX_GRANT_TTL_SECS: u64 = 31_536_000;
