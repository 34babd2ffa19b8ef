//! Request bodies and names on arbitrary input: every request type of `grantfs::api` and every
//! name parser must refuse garbage without panicking, and what they accept must be well-formed.
#![no_main]

use grantfs::api::{
    CreateGrant, CreateTenant, CreateTicket, CreateWorkspace, ExchangeRequest, GrantFilter,
    RevokeGrants, RevokedEvent, SessionFilter, SessionState,
};
use grantfs::{
    GrantId, Handle, Mode, RuntimeId, SessionId, TenantSlug, WorkspaceName, WorkspaceRef,
};
use libfuzzer_sys::fuzz_target;

fn is_safe_segment(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\0', '\\'])
}

fn names(s: &str) {
    if let Ok(h) = Handle::parse(s) {
        assert!(
            is_safe_segment(h.as_str()) && h.as_str().len() <= 63,
            "{h:?}"
        );
    }
    if let Ok(t) = TenantSlug::parse(s) {
        assert!(
            is_safe_segment(t.as_str()) && t.as_str().len() <= 63,
            "{t:?}"
        );
    }
    if let Ok(n) = WorkspaceName::parse(s) {
        assert!(
            is_safe_segment(n.as_str()) && n.as_str().len() <= 63,
            "{n:?}"
        );
    }
    if let Ok(r) = RuntimeId::parse(s) {
        assert!(
            !r.as_str().contains(['/', '\0']) && r.as_str().len() <= 128,
            "{r:?}"
        );
    }
    let default = Handle::parse("acme").ok();
    let refs = [
        WorkspaceRef::parse(s).ok(),
        WorkspaceRef::parse_with_default(s, default.as_ref()).ok(),
    ];
    for r in refs.into_iter().flatten() {
        // The storage path is joined below a data root: exactly two safe segments.
        let path = r.storage_path();
        let parts: Vec<&str> = path.split('/').collect();
        assert_eq!(parts.len(), 2, "{path:?}");
        assert!(parts.iter().all(|p| is_safe_segment(p)), "{path:?}");
        // Display round-trips.
        assert_eq!(WorkspaceRef::parse(&r.to_string()).as_ref(), Ok(&r));
    }
    if let Ok(m) = Mode::parse(s) {
        assert_eq!(m.as_str(), s);
    }
    if let Some(st) = SessionState::parse(s) {
        assert_eq!(st.as_str(), s);
    }
    if let Some(r) = grantfs::api::RevokeReason::parse(s) {
        assert_eq!(r.as_str(), s);
    }
    let _ = (GrantId::looks_valid(s), SessionId::looks_valid(s));
    let _ = grantfs::Timestamp::parse_rfc3339(s).map(|t| t.to_rfc3339());
}

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<CreateWorkspace>(data);
    let _ = serde_json::from_slice::<CreateTenant>(data);
    let _ = serde_json::from_slice::<CreateGrant>(data);
    let _ = serde_json::from_slice::<RevokeGrants>(data);
    let _ = serde_json::from_slice::<CreateTicket>(data);
    let _ = serde_json::from_slice::<ExchangeRequest>(data);
    let _ = serde_json::from_slice::<GrantFilter>(data);
    let _ = serde_json::from_slice::<SessionFilter>(data);
    let _ = serde_json::from_slice::<RevokedEvent>(data);
    // The string fields the server then validates: through the same name parsers.
    if let Ok(r) = serde_json::from_slice::<CreateGrant>(data) {
        for s in [
            Some(r.workspace),
            Some(r.tenant_slug),
            r.runtime_id,
            Some(r.mode),
        ]
        .into_iter()
        .flatten()
        {
            names(&s);
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        names(s);
        // Also each line, so one input exercises several names.
        for line in s.lines() {
            names(line);
        }
    }
});
