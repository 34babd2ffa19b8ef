//! Writes the seed corpora under fuzz/corpus/: real tickets signed with the fixed fuzz key, the
//! request bodies of the API, and event-stream text. Run from the repository root:
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds` (stable, no fuzzing flags).

use std::fs;
use std::path::Path;

use grantfs::Mode;
use grantfs::ticket::TicketClaims;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    if let Err(e) = fs::create_dir_all(&dir).and_then(|()| fs::write(dir.join(name), bytes)) {
        panic!("writing {}/{name}: {e}", dir.display());
    }
}

fn claims(mode: Mode, exp: i64) -> TicketClaims {
    TicketClaims {
        iss: grantfs_fuzz::ISSUER.into(),
        aud: grantfs::TICKET_AUDIENCE.into(),
        sub: "task-123".into(),
        jti: "ses_0123456789ABCDEFabcdef".into(),
        iat: 1_764_000_000,
        exp,
        nbf: None,
        ws: "acme-platform/my-workspace".into(),
        tenant: "acme".into(),
        grant: "gr_0123456789ABCDEFabcdef".into(),
        mode,
    }
}

fn main() {
    // exp in 2100: the seed stays valid, so the fuzzer starts from the accepting path.
    let far = 4_102_444_800;
    let valid = grantfs_fuzz::sign(&claims(Mode::Rw, far), grantfs_fuzz::KID);
    write("ticket", "valid-rw", valid.as_bytes());
    let ro = grantfs_fuzz::sign(&claims(Mode::Ro, far), grantfs_fuzz::KID);
    write("ticket", "valid-ro", ro.as_bytes());
    let expired = grantfs_fuzz::sign(&claims(Mode::Rw, 1_764_000_060), grantfs_fuzz::KID);
    write("ticket", "expired", expired.as_bytes());
    let other_kid = grantfs_fuzz::sign(&claims(Mode::Rw, far), "k-unknown");
    write("ticket", "unknown-kid", other_kid.as_bytes());
    let mut nbf = claims(Mode::Ro, far);
    nbf.nbf = Some(far - 10);
    write(
        "ticket",
        "nbf-future",
        grantfs_fuzz::sign(&nbf, grantfs_fuzz::KID).as_bytes(),
    );
    let payload = valid.split('.').nth(1).unwrap_or_default();
    // {"alg":"none","typ":"JWT"} over the valid payload, no signature.
    let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    write("ticket", "alg-none", none.as_bytes());
    write("ticket", "garbage", b"a.b.c");
    // Bare claims: the target also grafts its input as the payload of a signed ticket.
    let json = |c: &TicketClaims| serde_json::to_vec(c).unwrap_or_default();
    write("ticket", "claims-rw", &json(&claims(Mode::Rw, far)));
    let mut odd = claims(Mode::Ro, i64::MAX - 1);
    odd.nbf = Some(i64::MIN + 1);
    write("ticket", "claims-extreme-times", &json(&odd));

    for (name, body) in [
        ("workspace", r#"{"name":"my-workspace"}"#),
        (
            "tenant",
            r#"{"slug":"acme","external_id":"cust-42","metadata":{"plan":"pro","n":[1,2.5,null,true]}}"#,
        ),
        (
            "grant",
            r#"{"workspace":"acme-platform/my-workspace","tenant_slug":"acme","runtime_id":"task-123","mode":"rw","ttl_seconds":3600}"#,
        ),
        (
            "grant-tenant-wide",
            r#"{"workspace":"grantfs://admin/ws","tenant_slug":"acme","mode":"ro"}"#,
        ),
        (
            "revoke",
            r#"{"tenant_slug":"acme","runtime_id":"task-123","workspace":"my-workspace"}"#,
        ),
        (
            "ticket",
            r#"{"tenant_slug":"acme","runtime_id":"task-123","workspace":"admin/ws","mode":"ro","ttl_seconds":600}"#,
        ),
        ("exchange", r#"{"ticket":"eyJhbGciOiJFZERTQSJ9.e30.sig"}"#),
        (
            "revoked-event",
            r#"{"reason":"grant_revoked","at":"2026-05-20T10:00:00.123Z"}"#,
        ),
        (
            "names",
            "acme-platform/my-workspace\ngrantfs://acme/ws_1\nmy-ws\ntask-1:a@b.c\n../..\nro\nactive\n",
        ),
    ] {
        write("api_json", name, body.as_bytes());
    }

    for (name, text) in [
        (
            "state-then-revoked",
            "\x10event: state\ndata: {\"id\":\"ses_x\",\"state\":\"active\"}\n\n: keepalive\n\nevent: revoked\ndata: {\"reason\":\"grant_revoked\",\"at\":\"2026-05-20T10:00:00Z\"}\n\n",
        ),
        ("crlf", "\x03event: revoked\r\ndata: x\r\ndata: y\r\n\r\n"),
        ("comments-only", "\x00: keepalive\n: keepalive\n\n"),
        (
            "field-without-colon",
            "\x07data\nevent\n\nretry: 10\nid: 1\n\n",
        ),
    ] {
        write("sse", name, text.as_bytes());
    }
}
