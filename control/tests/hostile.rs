//! Hostile input at the router: every string field of every JSON body and every path and query
//! parameter of the API gets NUL, control characters, traversal, slashes, Unicode look-alikes, SQL
//! metacharacters, 1 MB values, deep nesting, wrong JSON types and empty strings. Each answer must
//! be a 4xx with the `{code, message}` body (never a 5xx, never a hang), and a refused call must
//! change nothing that the list endpoints show.
// clippy's allow-unwrap-in-tests covers #[test] fns only, not this test crate's helpers.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use grantfs::{Handle, Mode, RuntimeId, TenantSlug, Timestamp, WorkspaceName};
use grantfs_control::api::{AppState, Metrics, router};
use grantfs_control::hub::Hub;
use grantfs_control::signing::KeyRing;
use grantfs_control::store::Store;
use grantfs_control::store::sqlite::SqliteStore;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Longest any one call may take, body included.
const PATIENCE: Duration = Duration::from_secs(30);

/// Strings that no name, id or reference of the contract accepts.
fn hostile_strings() -> Vec<(&'static str, String)> {
    vec![
        ("nul", "\0".to_owned()),
        ("embedded nul", "acme\0x".to_owned()),
        ("control chars", "a\u{1}b\u{7f}\r\n\t\u{1b}[31m".to_owned()),
        ("newline suffix", "acme\n".to_owned()),
        ("traversal", "../..".to_owned()),
        ("dot-dot", "..".to_owned()),
        ("slash", "/".to_owned()),
        ("a/b/c", "a/b/c".to_owned()),
        ("absolute path", "/etc/passwd".to_owned()),
        ("backslash", "..\\..\\x".to_owned()),
        ("cyrillic a", "\u{430}cme".to_owned()),
        ("fullwidth", "\u{ff41}\u{ff43}\u{ff4d}\u{ff45}".to_owned()),
        ("fullwidth solidus", "admin\u{ff0f}ws".to_owned()),
        ("zero-width joiner", "ac\u{200d}me".to_owned()),
        ("rtl override", "\u{202e}emca".to_owned()),
        ("sql or", "' OR 1=1 --".to_owned()),
        ("sql drop", "\"; DROP TABLE grants;--".to_owned()),
        ("sql comment", "acme'/*".to_owned()),
        ("percent", "%00%2e%2e%2f".to_owned()),
        ("empty", String::new()),
        ("space", " ".to_owned()),
        ("too long", "a".repeat(300)),
        ("invalid utf-16 escape target", "\u{fffd}".to_owned()),
    ]
}

/// Whether the contract accepts `v` for a name field (then it is not hostile to that field: a
/// runtime id may be `..`, it is opaque and never becomes a path).
fn valid_for(field: &str, v: &str) -> bool {
    match field {
        "runtime_id" => RuntimeId::parse(v).is_ok(),
        "tenant_slug" | "slug" => TenantSlug::parse(v).is_ok(),
        "name" => WorkspaceName::parse(v).is_ok(),
        "mode" => Mode::parse(v).is_ok(),
        _ => false,
    }
}

/// The longest URI the `http` crate builds is just under 64 KiB; a real server refuses longer
/// request lines before the router. Path and query values get this instead of 1 MB.
const LONG_URI_VALUE: usize = 60_000;

/// `a/b` is a well-formed workspace reference: for the `workspace` fields it must be refused as
/// not found (404), for every other name as invalid (422).
const A_SLASH_B: &str = "a/b";

/// Values of the wrong JSON type for a string field.
fn wrong_types() -> Vec<Value> {
    vec![
        json!(1),
        json!(-1.5),
        json!(true),
        json!([]),
        json!(["acme"]),
        json!({}),
        json!({"$ne": ""}),
        json!(u64::MAX),
    ]
}

struct App {
    state: AppState,
    key: String,
    _dir: tempfile::TempDir,
}

/// What a refused call must not change: everything the admin account can list.
#[derive(Debug, PartialEq)]
struct Snapshot(Vec<Value>);

impl App {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let key = store
            .bootstrap(&Handle::parse("admin").unwrap(), Timestamp::now())
            .unwrap()
            .expect("first bootstrap creates the account")
            .secret;
        let state = AppState {
            store,
            keys: Arc::new(KeyRing::open(dir.path()).unwrap()),
            hub: Arc::new(Hub::default()),
            metrics: Arc::new(Metrics::default()),
            public_url: "http://test.local".to_owned(),
            keepalive: Duration::from_secs(5),
            limits: Arc::new(grantfs_control::ratelimit::RateLimits::default()),
        };
        Self {
            state,
            key,
            _dir: dir,
        }
    }

    fn account(&self, handle: &str) -> String {
        self.state
            .store
            .create_account(&Handle::parse(handle).unwrap(), Timestamp::now())
            .unwrap()
            .secret
    }

    /// Sends a request with a deadline; returns the status and the raw body.
    async fn send(&self, req: Request<Body>) -> (StatusCode, Vec<u8>) {
        let what = format!("{} {}", req.method(), short(&req.uri().to_string()));
        let call = async {
            let resp = router(self.state.clone()).oneshot(req).await.unwrap();
            let status = resp.status();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (status, bytes.to_vec())
        };
        tokio::time::timeout(PATIENCE, call)
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer within {PATIENCE:?}"))
    }

    /// A JSON call with `key` (if any) and a raw body (if any).
    async fn raw(
        &self,
        method: &str,
        uri: &str,
        key: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (StatusCode, Vec<u8>) {
        let mut b = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(uri);
        if let Some(k) = key {
            b = b.header(header::AUTHORIZATION, format!("Bearer {k}"));
        }
        let req = match body {
            Some(bytes) => b
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(bytes)),
            None => b.body(Body::empty()),
        }
        .unwrap();
        self.send(req).await
    }

    async fn admin(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let key = self.key.clone();
        let (s, b) = self
            .raw(
                method,
                uri,
                Some(&key),
                body.map(|v| serde_json::to_vec(&v).unwrap()),
            )
            .await;
        let v = if b.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&b).unwrap_or(Value::Null)
        };
        (s, v)
    }

    async fn snapshot(&self) -> Snapshot {
        let mut out = Vec::new();
        for uri in [
            "/v1/workspaces",
            "/v1/tenants",
            "/v1/grants?include_inactive=true",
            "/v1/sessions",
        ] {
            let (s, v) = self.admin("GET", uri, None).await;
            assert_eq!(s, StatusCode::OK, "{uri}: {v}");
            out.push(v);
        }
        Snapshot(out)
    }

    /// Sends a call that must be refused: a 4xx with the error body, and nothing changed.
    /// Returns the status and the error code.
    async fn refused(
        &self,
        what: &str,
        method: &str,
        uri: &str,
        key: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (u16, String) {
        let before = self.snapshot().await;
        let (status, bytes) = self.raw(method, uri, key, body).await;
        let code = error_code(what, status, &bytes);
        let after = self.snapshot().await;
        assert_eq!(
            before, after,
            "{what}: a refused call ({status}) changed state"
        );
        (status.as_u16(), code)
    }
}

/// Asserts a 4xx whose body is exactly `{"code", "message"}`; returns the code.
fn error_code(what: &str, status: StatusCode, bytes: &[u8]) -> String {
    assert!(
        status.is_client_error(),
        "{what}: answered {status}: {}",
        short(&String::from_utf8_lossy(bytes))
    );
    let v: Value = serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "{what}: {status} body is not JSON ({e}): {}",
            short(&String::from_utf8_lossy(bytes))
        )
    });
    let o = v
        .as_object()
        .unwrap_or_else(|| panic!("{what}: {status} body is not an object: {v}"));
    assert_eq!(o.len(), 2, "{what}: {status} body has other fields: {v}");
    assert!(
        o["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {v}"
    );
    o["code"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no code: {v}"))
        .to_owned()
}

fn short(s: &str) -> String {
    if s.len() <= 200 {
        return s.to_owned();
    }
    let mut end = 200;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

/// Percent-encodes everything but the unreserved characters, for a path segment or a query value.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A fixture with one of everything, so a wrongful change or revocation shows in the snapshot:
/// workspace `admin/ws`, tenant `acme`, a tenant-wide grant, and a ticket (issued session) for
/// runtime `r1`. Returns (grant id, session id).
async fn fixture(app: &App) -> (String, String) {
    let ok = |r: (StatusCode, Value), want: u16| {
        assert_eq!(r.0.as_u16(), want, "{}", r.1);
        r.1
    };
    ok(
        app.admin("POST", "/v1/workspaces", Some(json!({"name": "ws"})))
            .await,
        201,
    );
    ok(
        app.admin("POST", "/v1/tenants", Some(json!({"slug": "acme"})))
            .await,
        201,
    );
    let g = ok(
        app.admin(
            "POST",
            "/v1/grants",
            Some(json!({"workspace": "ws", "tenant_slug": "acme", "mode": "rw"})),
        )
        .await,
        201,
    );
    let t = ok(
        app.admin(
            "POST",
            "/v1/tickets",
            Some(json!({"tenant_slug": "acme", "runtime_id": "r1", "workspace": "admin/ws", "mode": "ro", "ttl_seconds": 600})),
        )
        .await,
        201,
    );
    (
        g["id"].as_str().unwrap().to_owned(),
        t["session_id"].as_str().unwrap().to_owned(),
    )
}

/// A POST endpoint and a valid body for it; each string field is replaced in turn.
struct BodyCase {
    uri: &'static str,
    valid: Value,
    /// The fields that are names, ids or references: every hostile string is refused.
    names: &'static [&'static str],
    /// Fields that must be a number.
    numbers: &'static [&'static str],
    /// Fields that may be absent (so `null` is a valid value, not a wrong type).
    optional: &'static [&'static str],
    /// Needs no API key (the exchange).
    anonymous: bool,
}

fn body_cases() -> Vec<BodyCase> {
    vec![
        BodyCase {
            uri: "/v1/workspaces",
            valid: json!({"name": "ws2"}),
            names: &["name"],
            numbers: &[],
            optional: &[],
            anonymous: false,
        },
        BodyCase {
            uri: "/v1/tenants",
            valid: json!({"slug": "beta", "external_id": "x-1", "metadata": {"a": 1}}),
            names: &["slug"],
            numbers: &[],
            optional: &["external_id", "metadata"],
            anonymous: false,
        },
        BodyCase {
            uri: "/v1/grants",
            valid: json!({"workspace": "admin/ws", "tenant_slug": "acme", "runtime_id": "r2", "mode": "ro", "ttl_seconds": 60}),
            names: &["workspace", "tenant_slug", "runtime_id", "mode"],
            numbers: &["ttl_seconds"],
            optional: &["runtime_id", "ttl_seconds"],
            anonymous: false,
        },
        BodyCase {
            uri: "/v1/grants/revoke",
            valid: json!({"tenant_slug": "acme", "runtime_id": "r1", "workspace": "admin/ws"}),
            names: &["tenant_slug", "runtime_id", "workspace"],
            numbers: &[],
            optional: &["runtime_id", "workspace"],
            anonymous: false,
        },
        BodyCase {
            uri: "/v1/tickets",
            valid: json!({"tenant_slug": "acme", "runtime_id": "r3", "workspace": "admin/ws", "mode": "ro", "ttl_seconds": 60}),
            names: &["tenant_slug", "runtime_id", "workspace", "mode"],
            numbers: &["ttl_seconds"],
            optional: &[],
            anonymous: false,
        },
        BodyCase {
            uri: "/v1/sessions/exchange",
            valid: json!({"ticket": "x.y.z"}),
            names: &["ticket"],
            numbers: &[],
            optional: &[],
            anonymous: true,
        },
    ]
}

impl BodyCase {
    fn with(&self, field: &str, v: Value) -> Vec<u8> {
        let mut b = self.valid.clone();
        b[field] = v;
        serde_json::to_vec(&b).unwrap()
    }

    fn key<'a>(&self, app: &'a App) -> Option<&'a str> {
        (!self.anonymous).then_some(app.key.as_str())
    }
}

#[tokio::test]
async fn hostile_strings_in_every_body_field_are_refused() {
    let app = App::new();
    fixture(&app).await;
    let mut calls = 0;
    for case in body_cases() {
        for field in case.names {
            let mut values = hostile_strings();
            values.push(("a/b", A_SLASH_B.to_owned()));
            for (label, v) in values {
                if valid_for(field, &v) {
                    continue;
                }
                let what = format!("POST {} {field}={label}", case.uri);
                let (status, code) = app
                    .refused(
                        &what,
                        "POST",
                        case.uri,
                        case.key(&app),
                        Some(case.with(field, json!(v))),
                    )
                    .await;
                calls += 1;
                // A name that breaks its rule is a 422 naming the field; a well-formed
                // reference to nothing is a 404; a bad ticket is a 401.
                let want: &[(u16, &str)] = match (*field, v.as_str()) {
                    ("ticket", _) => &[(401, "ticket_invalid")],
                    ("workspace", A_SLASH_B) => &[(404, "workspace_not_found")],
                    _ => &[(422, "invalid_request")],
                };
                assert!(
                    want.contains(&(status, code.as_str())),
                    "{what}: {status} {code}, want one of {want:?}"
                );
            }
        }
    }
    assert!(calls > 100, "only {calls} calls");
}

#[tokio::test]
async fn wrong_json_types_in_every_body_field_are_400() {
    let app = App::new();
    fixture(&app).await;
    for case in body_cases() {
        let fields: Vec<&str> = case
            .valid
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        for field in fields {
            let mut values = wrong_types();
            if !case.optional.contains(&field) {
                values.push(Value::Null);
            }
            if case.numbers.contains(&field) {
                values.retain(|v| !v.is_i64() && !v.is_u64());
                values.extend([json!("60"), json!(1.5), json!(1e300)]);
            }
            if field == "metadata" {
                // An object is the right type; any other is a 422 naming the field.
                values.retain(|v| !v.is_object());
            }
            for v in values {
                let what = format!("POST {} {field}={v}", case.uri);
                let (status, code) = app
                    .refused(
                        &what,
                        "POST",
                        case.uri,
                        case.key(&app),
                        Some(case.with(field, v.clone())),
                    )
                    .await;
                let ok = (status == 400 && code == "malformed_json")
                    || (field == "metadata" && status == 422 && code == "invalid_request");
                assert!(ok, "{what}: {status} {code}");
            }
        }
        // Not an object at all, and an object missing each required field.
        for body in [json!([]), json!("x"), json!(null), json!(1), json!({})] {
            let what = format!("POST {} body {body}", case.uri);
            let (status, code) = app
                .refused(
                    &what,
                    "POST",
                    case.uri,
                    case.key(&app),
                    Some(serde_json::to_vec(&body).unwrap()),
                )
                .await;
            assert_eq!((status, code.as_str()), (400, "malformed_json"), "{what}");
        }
    }
}

#[tokio::test]
async fn megabyte_values_are_413_and_deep_nesting_is_400() {
    let app = App::new();
    fixture(&app).await;
    let mega = "a".repeat(1 << 20);
    for case in body_cases() {
        for field in case.valid.as_object().unwrap().keys() {
            let what = format!("POST {} {field}=<1 MB>", case.uri);
            let (status, code) = app
                .refused(
                    &what,
                    "POST",
                    case.uri,
                    case.key(&app),
                    Some(case.with(field, json!(mega))),
                )
                .await;
            assert_eq!(
                (status, code.as_str()),
                (413, "payload_too_large"),
                "{what}"
            );
        }
        // 100k '[' is over the body limit; 32k (64,000 bytes with the closing ones, under it)
        // must be parsed without a stack overflow and refused as malformed; so must deep
        // objects and deep field values.
        let deep_arrays = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes();
        let deep_field = {
            let inner = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
            assert!(inner.len() < grantfs::MAX_BODY_BYTES - 1000);
            let mut s = serde_json::to_string(&case.valid).unwrap();
            s.pop();
            format!("{s},\"deep\":{inner}}}").into_bytes()
        };
        let deep_objects = format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
        for (label, body, want) in [
            ("100k [", deep_arrays(100_000), (413, "payload_too_large")),
            ("32k [", deep_arrays(32_000), (400, "malformed_json")),
            ("30k [ in a field", deep_field, (400, "malformed_json")),
            (
                "10k nested objects",
                deep_objects.into_bytes(),
                (400, "malformed_json"),
            ),
            ("unclosed", b"{\"a\":".to_vec(), (400, "malformed_json")),
            (
                "not utf-8",
                b"{\"name\":\"\xff\xfe\"}".to_vec(),
                (400, "malformed_json"),
            ),
            (
                "trailing garbage",
                [serde_json::to_vec(&case.valid).unwrap(), b"x".to_vec()].concat(),
                (400, "malformed_json"),
            ),
        ] {
            let what = format!("POST {} {label}", case.uri);
            let (status, code) = app
                .refused(&what, "POST", case.uri, case.key(&app), Some(body))
                .await;
            assert_eq!((status, code.as_str()), want, "{what}");
        }
    }
}

#[tokio::test]
async fn wrong_content_types_are_400() {
    let app = App::new();
    fixture(&app).await;
    for case in body_cases() {
        for ct in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
        ] {
            let mut b = Request::builder().method("POST").uri(case.uri);
            if let Some(k) = case.key(&app) {
                b = b.header(header::AUTHORIZATION, format!("Bearer {k}"));
            }
            if let Some(ct) = ct {
                b = b.header(header::CONTENT_TYPE, ct);
            }
            let before = app.snapshot().await;
            let req = b
                .body(Body::from(serde_json::to_vec(&case.valid).unwrap()))
                .unwrap();
            let (status, bytes) = app.send(req).await;
            let what = format!("POST {} content-type {ct:?}", case.uri);
            let code = error_code(&what, status, &bytes);
            assert_eq!(
                (status.as_u16(), code.as_str()),
                (400, "malformed_json"),
                "{what}"
            );
            assert_eq!(before, app.snapshot().await, "{what}");
        }
    }
}

#[tokio::test]
async fn hostile_path_parameters_are_refused() {
    let app = App::new();
    let (gid, sid) = fixture(&app).await;
    let mut values = hostile_strings();
    values.push(("a/b", A_SLASH_B.to_owned()));
    values.push(("60 KB", "a".repeat(LONG_URI_VALUE)));
    values.push(("other prefix", format!("ses_{}", &gid[3..])));
    values.push(("id with suffix", format!("{gid}' OR '1'='1")));
    values.push(("id uppercased", gid.to_uppercase()));
    values.push(("sql like", "gr_%".to_owned()));
    let key = app.key.clone();
    for (label, v) in values {
        let e = enc(&v);
        // (method, uri, the statuses a refusal may have)
        let calls: Vec<(&str, String, &[u16])> = vec![
            // An empty segment matches no route: 404 `not_found`.
            ("GET", format!("/v1/workspaces/{e}/ws"), &[404, 422]),
            ("DELETE", format!("/v1/workspaces/{e}/ws"), &[404, 422]),
            ("GET", format!("/v1/workspaces/admin/{e}"), &[404, 422]),
            ("DELETE", format!("/v1/workspaces/admin/{e}"), &[404, 422]),
            ("GET", format!("/v1/tenants/{e}"), &[404, 422]),
            ("DELETE", format!("/v1/tenants/{e}"), &[404, 422]),
            ("GET", format!("/v1/grants/{e}"), &[404]),
            ("DELETE", format!("/v1/grants/{e}"), &[404]),
            ("GET", format!("/v1/sessions/{e}"), &[404]),
            ("DELETE", format!("/v1/sessions/{e}"), &[404]),
        ];
        for (method, uri, want) in calls {
            let what = format!("{method} {} ({label})", short(&uri));
            let (status, code) = app.refused(&what, method, &uri, Some(&key), None).await;
            assert!(want.contains(&status), "{what}: {status} {code}");
            if status == 404 {
                assert!(code.ends_with("not_found"), "{what}: {code}");
                // Only an empty segment falls through to the router's fallback.
                assert!(code != "not_found" || v.is_empty(), "{what}: {code}");
            }
        }
        // Agent-facing calls: the session token is the credential, so a hostile id with a
        // hostile token is refused before anything is looked up or opened.
        for (method, uri) in [
            ("GET", format!("/v1/sessions/{e}/events")),
            ("POST", format!("/v1/sessions/{e}/end")),
            ("GET", format!("/v1/sessions/{sid}/events")),
            ("POST", format!("/v1/sessions/{sid}/end")),
        ] {
            let what = format!("{method} {} ({label})", short(&uri));
            let token = if v.len() < 1000 && !v.contains(|c: char| c.is_control()) {
                v.clone()
            } else {
                "gst_x".to_owned()
            };
            let (status, code) = app.refused(&what, method, &uri, Some(&token), None).await;
            assert!([401, 404].contains(&status), "{what}: {status} {code}");
        }
    }
    assert_eq!(
        app.state.hub.open_streams(),
        0,
        "a refused stream stayed open"
    );
}

#[tokio::test]
async fn unencoded_traversal_and_invalid_utf8_in_paths_are_refused() {
    let app = App::new();
    fixture(&app).await;
    let key = app.key.clone();
    for uri in [
        "/v1/tenants/../..",
        "/v1/tenants/..",
        "/v1/tenants/acme/../../workspaces",
        "/v1/workspaces/admin/ws/..",
        "/v1/workspaces/admin/../admin/ws",
        "/v1/grants/a/b",
        "/v1/sessions/a/b/c",
        "/v1//tenants",
        "/v1/tenants/%FF%FE",
        "/v1/workspaces/%C0%AF/ws",
        "/v1/grants/%ED%A0%80",
        "/v1/sessions/%FF",
        "/v1/tenants/acme%00",
    ] {
        for method in ["GET", "DELETE"] {
            let what = format!("{method} {uri}");
            let (status, code) = app.refused(&what, method, uri, Some(&key), None).await;
            assert!([404, 405, 422].contains(&status), "{what}: {status} {code}");
        }
    }
}

#[tokio::test]
async fn hostile_query_parameters_are_refused() {
    let app = App::new();
    fixture(&app).await;
    let key = app.key.clone();
    let mut values = hostile_strings();
    values.push(("60 KB", "a".repeat(LONG_URI_VALUE)));
    let mut calls = 0;
    for (label, v) in &values {
        let e = enc(v);
        for (path, param) in [
            ("/v1/grants", "tenant_slug"),
            ("/v1/grants", "runtime_id"),
            ("/v1/grants", "workspace"),
            ("/v1/grants", "include_inactive"),
            ("/v1/sessions", "tenant_slug"),
            ("/v1/sessions", "runtime_id"),
            ("/v1/sessions", "workspace"),
            ("/v1/sessions", "state"),
            ("/v1/audit", "since"),
            ("/v1/audit", "limit"),
        ] {
            let uri = format!("{path}?{param}={e}");
            let what = format!("GET {path}?{param}={label}");
            if valid_for(param, v) {
                // A well-formed filter that matches nothing.
                let (status, got) = app.admin("GET", &uri, None).await;
                assert_eq!(status, StatusCode::OK, "{what}: {got}");
                assert_eq!(got["items"], json!([]), "{what}");
                continue;
            }
            let (status, code) = app.refused(&what, "GET", &uri, Some(&key), None).await;
            assert_eq!((status, code.as_str()), (422, "invalid_request"), "{what}");
            calls += 1;
        }
    }
    // Undecodable and unknown parameters.
    for uri in [
        "/v1/grants?tenant_slug=%FF",
        "/v1/sessions?state=%C0%80",
        "/v1/grants?include_inactive=1",
        "/v1/audit?limit=-1",
        "/v1/audit?since=99999999999999999999999",
        "/v1/audit?bogus=1",
    ] {
        let (status, code) = app.refused(uri, "GET", uri, Some(&key), None).await;
        assert_eq!((status, code.as_str()), (422, "invalid_request"), "{uri}");
    }
    assert!(calls > 200);
}

#[tokio::test]
async fn hostile_api_keys_are_401() {
    let app = App::new();
    fixture(&app).await;
    let mega = "a".repeat(1 << 20);
    let mut keys: Vec<String> = hostile_strings()
        .into_iter()
        .map(|(_, v)| v)
        // A header value cannot carry control characters; those never reach the server.
        .filter(|v| !v.contains(|c: char| c.is_control()))
        .collect();
    keys.push(format!("{}x", app.key));
    keys.push(app.key[..app.key.len() - 1].to_owned());
    keys.push(app.key.to_uppercase());
    keys.push(mega);
    for k in keys {
        for (method, uri) in [("GET", "/v1/tenants"), ("DELETE", "/v1/tenants/acme")] {
            let what = format!("{method} {uri} key={}", short(&k));
            let (status, code) = app.refused(&what, method, uri, Some(&k), None).await;
            assert_eq!((status, code.as_str()), (401, "unauthorized"), "{what}");
        }
    }
    // Bytes that are legal in a header but not UTF-8, and other schemes.
    for value in [
        &b"Bearer \xff\xfe"[..],
        b"Basic YWRtaW46YWRtaW4=",
        b"Bearer",
        b"bearer  ",
    ] {
        let req = Request::builder()
            .method("GET")
            .uri("/v1/tenants")
            .header(
                header::AUTHORIZATION,
                header::HeaderValue::from_bytes(value).unwrap(),
            )
            .body(Body::empty())
            .unwrap();
        let (status, bytes) = app.send(req).await;
        let code = error_code("hostile authorization", status, &bytes);
        assert_eq!((status.as_u16(), code.as_str()), (401, "unauthorized"));
    }
}

#[tokio::test]
async fn opaque_fields_store_hostile_text_verbatim() {
    // external_id and metadata are the caller's own text: they may hold quotes, slashes and
    // Unicode, which must come back byte for byte (no injection, no normalization); control
    // characters in external_id are refused.
    let app = App::new();
    for (i, (label, v)) in hostile_strings().into_iter().enumerate() {
        let slug = format!("t{i}");
        let body = json!({"slug": slug, "external_id": v, "metadata": {"note": v, v.clone(): [v]}});
        let before = app.snapshot().await;
        let (status, got) = app.admin("POST", "/v1/tenants", Some(body)).await;
        let refusable = v.chars().any(char::is_control) || v.len() > 256;
        if refusable {
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{label}: {got}");
            assert_eq!(got["code"], "invalid_request", "{label}");
            assert_eq!(before, app.snapshot().await, "{label}");
            continue;
        }
        assert_eq!(status, StatusCode::CREATED, "{label}: {got}");
        let (status, t) = app.admin("GET", &format!("/v1/tenants/{slug}"), None).await;
        assert_eq!(status, StatusCode::OK, "{label}");
        assert_eq!(t["external_id"], json!(v), "{label}");
        assert_eq!(t["metadata"]["note"], json!(v), "{label}");
        assert_eq!(t["metadata"][&v], json!([v]), "{label}");
    }
    // The stored hostile text did not disturb the table: every tenant is listed once.
    let (_, list) = app.admin("GET", "/v1/tenants", None).await;
    let n = list["items"].as_array().unwrap().len();
    let created = hostile_strings()
        .iter()
        .filter(|(_, v)| !v.chars().any(char::is_control) && v.len() <= 256)
        .count();
    assert_eq!(n, created);
}

#[tokio::test]
async fn another_accounts_ids_and_guessed_ids_are_404_never_403() {
    let app = App::new();
    let (gid, sid) = fixture(&app).await;
    let bee = app.account("bee");
    let before = app.snapshot().await;
    let guesses = [
        gid.clone(),
        sid.clone(),
        format!("{gid} "),
        format!("{gid}%00"),
        format!("{gid}' --"),
        "gr_' OR '1'='1".to_owned(),
        "ses_\"; DELETE FROM sessions;--".to_owned(),
        "gr_%".to_owned(),
        "ses_*".to_owned(),
    ];
    for g in &guesses {
        let e = enc(g);
        for (method, uri, code) in [
            ("GET", format!("/v1/grants/{e}"), "grant_not_found"),
            ("DELETE", format!("/v1/grants/{e}"), "grant_not_found"),
            ("GET", format!("/v1/sessions/{e}"), "session_not_found"),
            ("DELETE", format!("/v1/sessions/{e}"), "session_not_found"),
        ] {
            let what = format!("bee {method} {uri}");
            let (status, c) = app.refused(&what, method, &uri, Some(&bee), None).await;
            assert_eq!((status, c.as_str()), (404, code), "{what}");
        }
    }
    // Names of another account, in paths and bodies.
    for (method, uri, body, code) in [
        (
            "GET",
            "/v1/workspaces/admin/ws",
            None,
            "workspace_not_found",
        ),
        (
            "DELETE",
            "/v1/workspaces/admin/ws",
            None,
            "workspace_not_found",
        ),
        ("GET", "/v1/tenants/acme", None, "tenant_not_found"),
        ("DELETE", "/v1/tenants/acme", None, "tenant_not_found"),
        (
            "POST",
            "/v1/grants/revoke",
            Some(json!({"tenant_slug": "acme", "workspace": "admin/ws"})),
            "tenant_not_found",
        ),
        (
            "POST",
            "/v1/tickets",
            Some(
                json!({"tenant_slug": "acme", "runtime_id": "r1", "workspace": "grantfs://admin/ws", "mode": "rw", "ttl_seconds": 60}),
            ),
            "workspace_not_found",
        ),
    ] {
        let what = format!("bee {method} {uri}");
        let body = body.map(|b| serde_json::to_vec(&b).unwrap());
        let (status, c) = app.refused(&what, method, uri, Some(&bee), body).await;
        assert_eq!((status, c.as_str()), (404, code), "{what}");
    }
    // bee's lists never show admin's objects, even filtered by admin's names.
    for uri in [
        "/v1/grants?include_inactive=true&tenant_slug=acme",
        "/v1/grants?workspace=admin/ws",
        "/v1/sessions?runtime_id=r1",
        "/v1/sessions?workspace=admin/ws",
    ] {
        let (s, b) = app.raw("GET", uri, Some(&bee), None).await;
        assert_eq!(s, StatusCode::OK, "{uri}");
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["items"], json!([]), "bee {uri}");
    }
    assert_eq!(before, app.snapshot().await, "bee changed admin's objects");
}
