//! Router-level tests of the HTTP API: every endpoint and every error code the control plane can
//! produce, called through `api::router(..).oneshot(..)` without a socket.
// clippy's allow-unwrap-in-tests covers #[test] fns only, not this test crate's helpers.
#![allow(clippy::unwrap_used)]

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use base64::Engine;
use grantfs::client::{SseEvent, SseParser};
use grantfs::ticket::{self, JwkSet, TicketClaims, TicketVerifier};
use grantfs::{Handle, Mode, Timestamp};
use grantfs_control::api::{AppState, Metrics, router};
use grantfs_control::hub::Hub;
use grantfs_control::signing::KeyRing;
use grantfs_control::store::Store;
use grantfs_control::store::sqlite::SqliteStore;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const URL: &str = "http://test.local";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

struct App {
    state: AppState,
    /// The `admin` account's API key.
    key: String,
    _dir: tempfile::TempDir,
}

type Resp = (StatusCode, Value);

/// Every non-2xx body must be exactly `{"code": "...", "message": "..."}`.
fn check_error_shape(status: StatusCode, bytes: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "{status}: error body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(bytes)
        )
    });
    let o = v
        .as_object()
        .unwrap_or_else(|| panic!("{status}: error body is not an object: {v}"));
    assert_eq!(o.len(), 2, "{status}: error body has other fields: {v}");
    assert!(o["code"].is_string(), "{status}: {v}");
    assert!(
        o["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{status}: {v}"
    );
    v
}

fn decode(status: StatusCode, bytes: &[u8]) -> Value {
    if !status.is_success() {
        return check_error_shape(status, bytes);
    }
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "{status}: body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(bytes)
        )
    })
}

/// Asserts an API error answer; returns its message.
#[track_caller]
fn err(r: &Resp, status: u16, code: &str) -> String {
    assert_eq!(
        (r.0.as_u16(), r.1["code"].as_str()),
        (status, Some(code)),
        "{}",
        r.1
    );
    r.1["message"].as_str().unwrap().to_owned()
}

/// Asserts a `422 invalid_request` whose message names `field`.
#[track_caller]
fn invalid(r: &Resp, field: &str) {
    let m = err(r, 422, "invalid_request");
    assert!(m.contains(field), "message {m:?} does not name {field}");
}

#[track_caller]
fn ok(r: &Resp, status: u16) -> Value {
    assert_eq!(r.0.as_u16(), status, "{}", r.1);
    r.1.clone()
}

fn ts(v: &Value) -> Timestamp {
    Timestamp::parse_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap_or_else(|| panic!("not RFC 3339: {v}"))
}

impl App {
    fn new() -> Self {
        Self::with_keepalive(Duration::from_secs(5))
    }

    fn with_keepalive(keepalive: Duration) -> Self {
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
            public_url: URL.to_owned(),
            keepalive,
            limits: Arc::new(grantfs_control::ratelimit::RateLimits::default()),
        };
        Self {
            state,
            key,
            _dir: dir,
        }
    }

    fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Creates another account; returns its API key.
    fn account(&self, handle: &str) -> String {
        self.state
            .store
            .create_account(&Handle::parse(handle).unwrap(), Timestamp::now())
            .unwrap()
            .secret
    }

    async fn raw(&self, req: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
        let resp = self.router().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, bytes)
    }

    async fn call(&self, method: &str, uri: &str, key: Option<&str>, body: Option<Value>) -> Resp {
        send(self.router(), method, uri, key, body).await
    }

    /// A call with the admin key.
    async fn admin(&self, method: &str, uri: &str, body: Option<Value>) -> Resp {
        self.call(method, uri, Some(&self.key.clone()), body).await
    }

    async fn workspace(&self, name: &str) -> Value {
        ok(
            &self
                .admin("POST", "/v1/workspaces", Some(json!({ "name": name })))
                .await,
            201,
        )
    }

    async fn tenant(&self, slug: &str) -> Value {
        ok(
            &self
                .admin("POST", "/v1/tenants", Some(json!({ "slug": slug })))
                .await,
            201,
        )
    }

    async fn grant(&self, body: Value) -> Value {
        ok(&self.admin("POST", "/v1/grants", Some(body)).await, 201)
    }

    async fn try_ticket(
        &self,
        tenant: &str,
        runtime: &str,
        ws: &str,
        mode: &str,
        ttl: i64,
    ) -> Resp {
        self.admin(
            "POST",
            "/v1/tickets",
            Some(json!({"tenant_slug": tenant, "runtime_id": runtime, "workspace": ws, "mode": mode, "ttl_seconds": ttl})),
        )
        .await
    }

    async fn ticket(&self, tenant: &str, runtime: &str, ws: &str, mode: &str, ttl: i64) -> Value {
        ok(&self.try_ticket(tenant, runtime, ws, mode, ttl).await, 201)
    }

    async fn exchange(&self, ticket: &str) -> Resp {
        self.call(
            "POST",
            "/v1/sessions/exchange",
            None,
            Some(json!({ "ticket": ticket })),
        )
        .await
    }

    /// A GET with the admin key that must answer 200.
    async fn get(&self, uri: &str) -> Value {
        ok(&self.admin("GET", uri, None).await, 200)
    }

    async fn session(&self, id: &str) -> Value {
        ok(
            &self.admin("GET", &format!("/v1/sessions/{id}"), None).await,
            200,
        )
    }

    async fn get_grant(&self, id: &str) -> Value {
        ok(
            &self.admin("GET", &format!("/v1/grants/{id}"), None).await,
            200,
        )
    }

    /// Ticket + exchange; returns (ticket answer, exchange answer).
    async fn live_session(
        &self,
        tenant: &str,
        runtime: &str,
        ws: &str,
        mode: &str,
    ) -> (Value, Value) {
        let t = self.ticket(tenant, runtime, ws, mode, 600).await;
        let x = ok(
            &self.exchange(t["mount_ticket"].as_str().unwrap()).await,
            200,
        );
        (t, x)
    }

    async fn open_events(&self, session_id: &str, token: &str) -> Result<Events, Resp> {
        let req = Request::get(format!("/v1/sessions/{session_id}/events"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let resp = self.router().oneshot(req).await.unwrap();
        let status = resp.status();
        if status != StatusCode::OK {
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            return Err((status, decode(status, &bytes)));
        }
        let ct = resp.headers()[header::CONTENT_TYPE].to_str().unwrap();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        Ok(Events {
            body: resp.into_body(),
            parser: SseParser::default(),
            queue: VecDeque::new(),
        })
    }

    /// A live session with its event stream open and its first `state` event read.
    async fn watched(&self, tenant: &str, runtime: &str, ws: &str) -> (Value, Value, Events) {
        let (t, x) = self.live_session(tenant, runtime, ws, "rw").await;
        let sid = x["session_id"].as_str().unwrap();
        let mut ev = self
            .open_events(sid, x["session_token"].as_str().unwrap())
            .await
            .unwrap();
        let first = ev.next_event(Duration::from_secs(3)).await.unwrap();
        assert_eq!(first.event, "state", "{first:?}");
        let s: Value = serde_json::from_str(&first.data).unwrap();
        assert_eq!(s["id"], sid);
        assert_eq!(s["state"], "active");
        (t, x, ev)
    }

    async fn metric(&self, name: &str) -> u64 {
        let (status, _, body) = self
            .raw(Request::get("/metrics").body(Body::empty()).unwrap())
            .await;
        assert_eq!(status, StatusCode::OK);
        let text = String::from_utf8(body.to_vec()).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
            .parse()
            .unwrap()
    }
}

async fn send(
    router: Router,
    method: &str,
    uri: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> Resp {
    let mut b = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(uri);
    if let Some(k) = key {
        b = b.header(header::AUTHORIZATION, format!("Bearer {k}"));
    }
    let req = match body {
        Some(v) => b
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(&v).unwrap())),
        None => b.body(Body::empty()),
    }
    .unwrap();
    let resp = router.oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, decode(status, &bytes))
}

/// An event stream read through the router, frame by frame.
struct Events {
    body: Body,
    parser: SseParser,
    queue: VecDeque<SseEvent>,
}

impl Events {
    /// The next event (keepalives included); `None` when the stream ended. Panics on timeout.
    async fn next_raw(&mut self, within: Duration) -> Option<SseEvent> {
        let fut = async {
            loop {
                if let Some(e) = self.queue.pop_front() {
                    return Some(e);
                }
                match self.body.frame().await {
                    None => return None,
                    Some(Ok(f)) => {
                        if let Some(d) = f.data_ref() {
                            self.queue.extend(self.parser.push(d));
                        }
                    }
                    Some(Err(e)) => panic!("event stream broke: {e}"),
                }
            }
        };
        tokio::time::timeout(within, fut)
            .await
            .unwrap_or_else(|_| panic!("no event within {within:?}"))
    }

    /// The next event that is not a keepalive.
    async fn next_event(&mut self, within: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_raw(left).await {
                Some(e) if e.event == "keepalive" => continue,
                other => return other,
            }
        }
    }

    /// Asserts that a `revoked` event with `reason` arrives, then that the stream ends.
    async fn expect_revoked(&mut self, reason: &str, within: Duration) -> Value {
        let e = self
            .next_event(within)
            .await
            .expect("stream ended without a revoked event");
        assert_eq!(e.event, "revoked", "{e:?}");
        let data: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(data["reason"], reason, "{data}");
        ts(&data["at"]);
        assert!(
            self.next_event(Duration::from_secs(2)).await.is_none(),
            "stream goes on after revoked"
        );
        data
    }
}

fn ticket_parts(t: &str) -> (Value, Value) {
    let p: Vec<&str> = t.split('.').collect();
    assert_eq!(p.len(), 3, "{t}");
    (
        serde_json::from_slice(&B64.decode(p[0]).unwrap()).unwrap(),
        serde_json::from_slice(&B64.decode(p[1]).unwrap()).unwrap(),
    )
}

fn claims(jti: &str, exp: i64) -> TicketClaims {
    let now = Timestamp::now().unix_secs();
    TicketClaims {
        iss: URL.into(),
        aud: grantfs::TICKET_AUDIENCE.into(),
        sub: "r1".into(),
        jti: jti.into(),
        iat: now,
        exp,
        nbf: None,
        ws: "admin/ws".into(),
        tenant: "acme".into(),
        grant: "gr_x".into(),
        mode: Mode::Rw,
    }
}

/// Waits until the wall clock is early in a second, so that a 1 s ticket (whose expiry is kept
/// on a whole second) lives at least ~700 ms.
async fn early_in_second() {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while Timestamp::now().millis() % 1000 > 300 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Small endpoints
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn healthz_answers_ok() {
    let app = App::new();
    let r = app.call("GET", "/healthz", None, None).await;
    assert_eq!(ok(&r, 200), json!({"status": "ok"}));
}

#[tokio::test]
async fn jwks_publishes_the_current_ed25519_key() {
    let app = App::new();
    let r = app.call("GET", "/.well-known/jwks.json", None, None).await;
    let set = ok(&r, 200);
    let keys = set["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{set}");
    let k = &keys[0];
    assert_eq!(k["kty"], "OKP");
    assert_eq!(k["crv"], "Ed25519");
    assert_eq!(k["kid"], app.state.keys.current().kid.as_str());
    assert_eq!(B64.decode(k["x"].as_str().unwrap()).unwrap().len(), 32);
    // What the agent does with it: verify a real ticket.
    app.workspace("ws").await;
    let t = app.ticket("acme", "r1", "ws", "rw", 60).await;
    let set: JwkSet = serde_json::from_value(set).unwrap();
    let v = TicketVerifier::from_jwks(&set, Some(URL.into())).unwrap();
    v.verify(t["mount_ticket"].as_str().unwrap()).unwrap();
}

#[tokio::test]
async fn metrics_are_prometheus_text_and_count() {
    let app = App::new();
    let (status, headers, body) = app
        .raw(Request::get("/metrics").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        text.contains("# TYPE grantfs_tickets_issued_total counter"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE grantfs_event_streams_open gauge"),
        "{text}"
    );
    assert_eq!(app.metric("grantfs_tickets_issued_total").await, 0);
    app.workspace("ws").await;
    let t = app.ticket("acme", "r1", "ws", "rw", 60).await;
    ok(
        &app.exchange(t["mount_ticket"].as_str().unwrap()).await,
        200,
    );
    err(&app.exchange("garbage").await, 401, "ticket_invalid");
    app.call("GET", "/v1/tenants", Some("gfs_nope"), None).await;
    assert_eq!(app.metric("grantfs_tickets_issued_total").await, 1);
    assert_eq!(app.metric("grantfs_exchanges_total").await, 1);
    assert_eq!(app.metric("grantfs_exchange_refusals_total").await, 1);
    assert_eq!(app.metric("grantfs_auth_failures_total").await, 1);
}

#[tokio::test]
async fn unknown_route_and_wrong_method_answer_json_errors() {
    let app = App::new();
    for uri in ["/nope", "/v1/nope", "/v1/grants/a/b/c"] {
        err(&app.admin("GET", uri, None).await, 404, "not_found");
    }
    err(
        &app.admin("PUT", "/v1/tenants", None).await,
        405,
        "method_not_allowed",
    );
}

// ---------------------------------------------------------------------------------------------
// Workspaces and tenants
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn workspace_create_list_get_delete() {
    let app = App::new();
    let w = app.workspace("my-ws").await;
    assert_eq!(w["handle"], "admin");
    assert_eq!(w["name"], "my-ws");
    assert_eq!(w["ref"], "admin/my-ws");
    ts(&w["created_at"]);
    let r = app
        .admin("POST", "/v1/workspaces", Some(json!({"name": "my-ws"})))
        .await;
    err(&r, 409, "workspace_exists");
    app.workspace("b_2").await;
    let list = ok(&app.admin("GET", "/v1/workspaces", None).await, 200);
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b_2", "my-ws"]);
    let got = ok(
        &app.admin("GET", "/v1/workspaces/admin/my-ws", None).await,
        200,
    );
    assert_eq!(got, w);
    err(
        &app.admin("GET", "/v1/workspaces/admin/other", None).await,
        404,
        "workspace_not_found",
    );
    invalid(
        &app.admin("GET", "/v1/workspaces/Admin/my-ws", None).await,
        "handle",
    );
    let r = app
        .admin("DELETE", "/v1/workspaces/admin/my-ws", None)
        .await;
    assert_eq!(
        ok(&r, 200),
        json!({"revoked_grants": 0, "revoked_sessions": 0})
    );
    err(
        &app.admin("GET", "/v1/workspaces/admin/my-ws", None).await,
        404,
        "workspace_not_found",
    );
    err(
        &app.admin("DELETE", "/v1/workspaces/admin/my-ws", None)
            .await,
        404,
        "workspace_not_found",
    );
    // The name is free again.
    app.workspace("my-ws").await;
}

#[tokio::test]
async fn tenant_create_list_get_delete() {
    let app = App::new();
    let r = app
        .admin(
            "POST",
            "/v1/tenants",
            Some(json!({"slug": "acme", "external_id": "cus_42", "metadata": {"plan": "pro"}})),
        )
        .await;
    let t = ok(&r, 201);
    assert_eq!(t["slug"], "acme");
    assert_eq!(t["external_id"], "cus_42");
    assert_eq!(t["metadata"], json!({"plan": "pro"}));
    ts(&t["created_at"]);
    let plain = app.tenant("beta").await;
    assert_eq!(plain["external_id"], Value::Null);
    assert_eq!(plain["metadata"], json!({}));
    err(
        &app.admin("POST", "/v1/tenants", Some(json!({"slug": "acme"})))
            .await,
        409,
        "tenant_exists",
    );
    let list = ok(&app.admin("GET", "/v1/tenants", None).await, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        ok(&app.admin("GET", "/v1/tenants/acme", None).await, 200),
        t
    );
    err(
        &app.admin("GET", "/v1/tenants/nope", None).await,
        404,
        "tenant_not_found",
    );
    let r = app.admin("DELETE", "/v1/tenants/acme", None).await;
    assert_eq!(
        ok(&r, 200),
        json!({"revoked_grants": 0, "revoked_sessions": 0})
    );
    err(
        &app.admin("GET", "/v1/tenants/acme", None).await,
        404,
        "tenant_not_found",
    );
    err(
        &app.admin("DELETE", "/v1/tenants/acme", None).await,
        404,
        "tenant_not_found",
    );
    app.tenant("acme").await;
}

// ---------------------------------------------------------------------------------------------
// invalid_request: every field rule
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn workspace_name_rules() {
    let app = App::new();
    for bad in ["", "-ws", "_ws", "a b", "a/b", "é", &"a".repeat(64)] {
        let r = app
            .admin("POST", "/v1/workspaces", Some(json!({ "name": bad })))
            .await;
        invalid(&r, "name");
    }
    app.workspace(&"A".repeat(63)).await;
    app.workspace("0_a-Z").await;
}

#[tokio::test]
async fn tenant_field_rules() {
    let app = App::new();
    for bad in ["", "Acme", "-acme", "a_b", "a.b", &"a".repeat(64)] {
        let r = app
            .admin("POST", "/v1/tenants", Some(json!({ "slug": bad })))
            .await;
        invalid(&r, "slug");
    }
    app.tenant(&"a".repeat(63)).await;
    let r = app
        .admin(
            "POST",
            "/v1/tenants",
            Some(json!({"slug": "x1", "external_id": "e".repeat(257)})),
        )
        .await;
    invalid(&r, "external_id");
    let r = app
        .admin(
            "POST",
            "/v1/tenants",
            Some(json!({"slug": "x1", "external_id": "e".repeat(256)})),
        )
        .await;
    ok(&r, 201);
    for bad in [json!([1, 2]), json!("s"), json!(3), json!(null)] {
        let r = app
            .admin(
                "POST",
                "/v1/tenants",
                Some(json!({"slug": "x2", "metadata": bad})),
            )
            .await;
        // `null` is the same as absent: an empty object.
        if bad.is_null() {
            assert_eq!(ok(&r, 201)["metadata"], json!({}));
            continue;
        }
        invalid(&r, "metadata");
    }
    let big = json!({"s": "m".repeat(16 * 1024)});
    let r = app
        .admin(
            "POST",
            "/v1/tenants",
            Some(json!({"slug": "x3", "metadata": big})),
        )
        .await;
    invalid(&r, "metadata");
    let fits = json!({"s": "m".repeat(16 * 1024 - 100)});
    let r = app
        .admin(
            "POST",
            "/v1/tenants",
            Some(json!({"slug": "x3", "metadata": fits})),
        )
        .await;
    ok(&r, 201);
    let got = ok(&app.admin("GET", "/v1/tenants/x3", None).await, 200);
    assert_eq!(got["metadata"], fits);
}

#[tokio::test]
async fn grant_field_rules() {
    let app = App::new();
    app.workspace("ws").await;
    app.tenant("acme").await;
    let base = json!({"workspace": "ws", "tenant_slug": "acme", "mode": "rw"});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let cases = [
        ("mode", json!("rx")),
        ("mode", json!("RW")),
        ("mode", json!("")),
        ("ttl_seconds", json!(0)),
        ("ttl_seconds", json!(-1)),
        ("ttl_seconds", json!(31_536_001)),
        ("runtime_id", json!("")),
        ("runtime_id", json!("a b")),
        ("runtime_id", json!("a/b")),
        ("runtime_id", json!("r".repeat(129))),
        ("tenant_slug", json!("Acme")),
        ("workspace", json!("a/b/c")),
        ("workspace", json!("-ws")),
        ("workspace", json!("grantfs://ws")),
    ];
    for (field, v) in cases {
        let r = app
            .admin("POST", "/v1/grants", Some(with(field, v.clone())))
            .await;
        assert_eq!(r.0, 422, "{field}={v}: {}", r.1);
        invalid(&r, field);
    }
    for (field, v) in [
        ("ttl_seconds", json!(1)),
        ("ttl_seconds", json!(31_536_000)),
        ("runtime_id", json!("r".repeat(128))),
        ("runtime_id", json!("task-1.a_b:c@d")),
        ("workspace", json!("admin/ws")),
        ("workspace", json!("grantfs://admin/ws")),
        ("mode", json!("ro")),
    ] {
        let r = app
            .admin("POST", "/v1/grants", Some(with(field, v.clone())))
            .await;
        assert_eq!(r.0, 201, "{field}={v}: {}", r.1);
    }
}

#[tokio::test]
async fn ticket_field_rules() {
    let app = App::new();
    app.workspace("ws").await;
    let base = json!({"workspace": "ws", "tenant_slug": "acme", "runtime_id": "r1", "mode": "rw", "ttl_seconds": 60});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    for (field, v) in [
        ("ttl_seconds", json!(0)),
        ("ttl_seconds", json!(-5)),
        ("ttl_seconds", json!(604_801)),
        ("mode", json!("w")),
        ("runtime_id", json!("")),
        ("runtime_id", json!("r".repeat(129))),
        ("runtime_id", json!("r\n1")),
        ("tenant_slug", json!("ACME")),
        ("tenant_slug", json!("")),
        ("workspace", json!("a/b/c")),
    ] {
        let r = app
            .admin("POST", "/v1/tickets", Some(with(field, v.clone())))
            .await;
        assert_eq!(r.0, 422, "{field}={v}: {}", r.1);
        invalid(&r, field);
    }
    // No tenant was created by the refused requests.
    let list = ok(&app.admin("GET", "/v1/tenants", None).await, 200);
    assert_eq!(list["items"], json!([]));
    for ttl in [1, 604_800] {
        let r = app
            .admin("POST", "/v1/tickets", Some(with("ttl_seconds", json!(ttl))))
            .await;
        assert_eq!(r.0, 201, "ttl {ttl}: {}", r.1);
    }
}

#[tokio::test]
async fn revoke_and_list_query_rules() {
    let app = App::new();
    app.tenant("acme").await;
    let r = app
        .admin(
            "POST",
            "/v1/grants/revoke",
            Some(json!({"tenant_slug": "Bad!"})),
        )
        .await;
    invalid(&r, "tenant_slug");
    let r = app
        .admin(
            "POST",
            "/v1/grants/revoke",
            Some(json!({"tenant_slug": "acme", "runtime_id": "a b"})),
        )
        .await;
    invalid(&r, "runtime_id");
    let r = app
        .admin(
            "POST",
            "/v1/grants/revoke",
            Some(json!({"tenant_slug": "acme", "workspace": "x/y/z"})),
        )
        .await;
    invalid(&r, "workspace");
    invalid(
        &app.admin("GET", "/v1/sessions?state=bogus", None).await,
        "state",
    );
    invalid(
        &app.admin("GET", "/v1/sessions?workspace=a/b/c", None).await,
        "workspace",
    );
    invalid(
        &app.admin("GET", "/v1/grants?workspace=-x", None).await,
        "workspace",
    );
    err(
        &app.admin("GET", "/v1/grants?include_inactive=maybe", None)
            .await,
        422,
        "invalid_request",
    );
    for s in ["issued", "active", "ended", "revoked", "expired"] {
        ok(
            &app.admin("GET", &format!("/v1/sessions?state={s}"), None)
                .await,
            200,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// malformed_json and payload_too_large
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_bodies_are_400_malformed_json() {
    let app = App::new();
    let raw = |uri: &str, ct: Option<&str>, body: &str| {
        let mut b = Request::post(uri).header(header::AUTHORIZATION, format!("Bearer {}", app.key));
        if let Some(ct) = ct {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        b.body(Body::from(body.to_owned())).unwrap()
    };
    let json_ct = Some("application/json");
    for (uri, ct, body) in [
        ("/v1/workspaces", json_ct, "not json"),
        ("/v1/workspaces", json_ct, ""),
        ("/v1/workspaces", json_ct, "{\"name\": 5}"),
        ("/v1/workspaces", json_ct, "[\"ws\"]"),
        ("/v1/workspaces", None, "{\"name\": \"ws\"}"),
        ("/v1/workspaces", Some("text/plain"), "{\"name\": \"ws\"}"),
        ("/v1/tenants", json_ct, "{\"slug\": \"a\", \"metadata\": {"),
        (
            "/v1/grants",
            json_ct,
            "{\"workspace\": \"ws\", \"tenant_slug\": \"a\", \"mode\": \"rw\", \"ttl_seconds\": \"10\"}",
        ),
        (
            "/v1/grants",
            json_ct,
            "{\"workspace\": \"ws\", \"tenant_slug\": \"a\", \"mode\": \"rw\", \"ttl_seconds\": 1.5}",
        ),
        (
            "/v1/tickets",
            json_ct,
            "{\"workspace\": \"ws\", \"tenant_slug\": \"a\", \"runtime_id\": \"r\", \"mode\": \"rw\"}",
        ),
        ("/v1/grants/revoke", json_ct, "{}"),
        ("/v1/sessions/exchange", json_ct, "{\"ticket\": 5}"),
        ("/v1/sessions/exchange", json_ct, "nope"),
    ] {
        let (status, _, bytes) = app.raw(raw(uri, ct, body)).await;
        let v = decode(status, &bytes);
        assert_eq!(
            (status.as_u16(), v["code"].as_str()),
            (400, Some("malformed_json")),
            "{uri} {body}: {v}"
        );
    }
    // A missing required field is named.
    let (status, _, bytes) = app
        .raw(raw("/v1/tickets", json_ct, "{\"workspace\": \"ws\", \"tenant_slug\": \"a\", \"runtime_id\": \"r\", \"mode\": \"rw\"}"))
        .await;
    let m = err(&(status, decode(status, &bytes)), 400, "malformed_json");
    assert!(m.contains("ttl_seconds"), "{m}");
}

#[tokio::test]
async fn unknown_fields_are_refused_by_name() {
    let app = App::new();
    app.workspace("ws").await;
    for (uri, body, field) in [
        (
            "/v1/tickets",
            json!({"tenantSlug": "acme", "tenant_slug": "acme", "runtime_id": "r", "workspace": "ws", "mode": "rw", "ttl_seconds": 60}),
            "tenantSlug",
        ),
        (
            "/v1/tenants",
            json!({"slug": "acme", "externalId": "x"}),
            "externalId",
        ),
        (
            "/v1/workspaces",
            json!({"name": "w2", "owner": "x"}),
            "owner",
        ),
        (
            "/v1/grants",
            json!({"workspace": "ws", "tenant_slug": "acme", "mode": "rw", "ttlSeconds": 5}),
            "ttlSeconds",
        ),
        (
            "/v1/grants/revoke",
            json!({"tenant_slug": "acme", "runtime": "r"}),
            "runtime",
        ),
        (
            "/v1/sessions/exchange",
            json!({"ticket": "x", "token": "y"}),
            "token",
        ),
    ] {
        let m = err(
            &app.admin("POST", uri, Some(body)).await,
            400,
            "malformed_json",
        );
        assert!(
            m.contains(field),
            "{uri}: message {m:?} does not name {field}"
        );
    }
    // Nothing was created.
    assert_eq!(
        ok(&app.admin("GET", "/v1/tenants", None).await, 200)["items"],
        json!([])
    );
}

#[tokio::test]
async fn bodies_over_64_kib_are_413_payload_too_large() {
    let app = App::new();
    let big = "x".repeat(grantfs::MAX_BODY_BYTES + 1024);
    for (uri, body) in [
        (
            "/v1/tenants",
            json!({"slug": "acme", "metadata": {"s": big}}),
        ),
        ("/v1/sessions/exchange", json!({ "ticket": big })),
        ("/v1/workspaces", json!({ "name": big })),
    ] {
        let r = app.admin("POST", uri, Some(body)).await;
        err(&r, 413, "payload_too_large");
    }
    // Just under the limit is read and judged on its content.
    let r = app
        .admin(
            "POST",
            "/v1/tenants",
            Some(json!({"slug": "acme", "metadata": {"s": "x".repeat(60 * 1024)}})),
        )
        .await;
    invalid(&r, "metadata");
}

// ---------------------------------------------------------------------------------------------
// unauthorized and not found
// ---------------------------------------------------------------------------------------------

const MANAGEMENT: &[(&str, &str)] = &[
    ("GET", "/v1/workspaces"),
    ("POST", "/v1/workspaces"),
    ("GET", "/v1/workspaces/admin/ws"),
    ("DELETE", "/v1/workspaces/admin/ws"),
    ("GET", "/v1/tenants"),
    ("POST", "/v1/tenants"),
    ("GET", "/v1/tenants/acme"),
    ("DELETE", "/v1/tenants/acme"),
    ("GET", "/v1/grants"),
    ("POST", "/v1/grants"),
    ("GET", "/v1/grants/gr_x"),
    ("DELETE", "/v1/grants/gr_x"),
    ("POST", "/v1/grants/revoke"),
    ("POST", "/v1/tickets"),
    ("GET", "/v1/sessions"),
    ("GET", "/v1/sessions/ses_x"),
    ("DELETE", "/v1/sessions/ses_x"),
];

#[tokio::test]
async fn management_calls_need_a_valid_api_key() {
    let app = App::new();
    app.workspace("ws").await;
    app.tenant("acme").await;
    let admin = Handle::parse("admin").unwrap();
    let second = app
        .state
        .store
        .create_key(&admin, Timestamp::now())
        .unwrap();
    app.state
        .store
        .revoke_key(&admin, &second.key_id, Timestamp::now())
        .unwrap();
    let unknown = format!("gfs_{}", "A".repeat(40));
    // Same lookup prefix as the real key, different secret.
    let mut forged = app.key.clone();
    forged.replace_range(forged.len() - 4.., "zzzz");
    assert_ne!(forged, app.key);
    let keys: [Option<&str>; 6] = [
        None,
        Some(""),
        Some("nonsense"),
        Some(&unknown),
        Some(&forged),
        Some(&second.secret),
    ];
    for (method, uri) in MANAGEMENT {
        let body = (*method == "POST").then(|| json!({}));
        for key in keys {
            let r = app.call(method, uri, key, body.clone()).await;
            err(&r, 401, "unauthorized");
        }
        // Another scheme is no API key either.
        let req = Request::builder()
            .method(*method)
            .uri(*uri)
            .header(header::AUTHORIZATION, format!("Basic {}", app.key))
            .body(Body::empty())
            .unwrap();
        let (status, _, bytes) = app.raw(req).await;
        err(&(status, decode(status, &bytes)), 401, "unauthorized");
    }
    // The workspace and tenant are untouched, and the live key still works.
    ok(
        &app.admin("GET", "/v1/workspaces/admin/ws", None).await,
        200,
    );
    ok(&app.admin("GET", "/v1/tenants/acme", None).await, 200);
}

#[tokio::test]
async fn unknown_objects_are_404_with_their_code() {
    let app = App::new();
    app.workspace("ws").await;
    app.tenant("acme").await;
    for (method, uri, body, code) in [
        ("GET", "/v1/grants/gr_nope", None, "grant_not_found"),
        ("DELETE", "/v1/grants/gr_nope", None, "grant_not_found"),
        ("GET", "/v1/sessions/ses_nope", None, "session_not_found"),
        ("DELETE", "/v1/sessions/ses_nope", None, "session_not_found"),
        ("GET", "/v1/tenants/nope", None, "tenant_not_found"),
        ("DELETE", "/v1/tenants/nope", None, "tenant_not_found"),
        (
            "GET",
            "/v1/workspaces/admin/nope",
            None,
            "workspace_not_found",
        ),
        (
            "DELETE",
            "/v1/workspaces/admin/nope",
            None,
            "workspace_not_found",
        ),
        (
            "POST",
            "/v1/grants",
            Some(json!({"workspace": "ws", "tenant_slug": "nope", "mode": "rw"})),
            "tenant_not_found",
        ),
        (
            "POST",
            "/v1/grants",
            Some(json!({"workspace": "nope", "tenant_slug": "acme", "mode": "rw"})),
            "workspace_not_found",
        ),
        (
            "POST",
            "/v1/grants/revoke",
            Some(json!({"tenant_slug": "nope"})),
            "tenant_not_found",
        ),
        (
            "POST",
            "/v1/grants/revoke",
            Some(json!({"tenant_slug": "acme", "workspace": "nope"})),
            "workspace_not_found",
        ),
        (
            "POST",
            "/v1/tickets",
            Some(
                json!({"workspace": "nope", "tenant_slug": "acme", "runtime_id": "r", "mode": "rw", "ttl_seconds": 5}),
            ),
            "workspace_not_found",
        ),
    ] {
        let r = app.admin(method, uri, body).await;
        assert_eq!(r.0, 404, "{method} {uri}: {}", r.1);
        err(&r, 404, code);
    }
}

#[tokio::test]
async fn other_accounts_objects_are_not_found_never_forbidden() {
    let app = App::new();
    app.workspace("ws").await;
    app.tenant("acme").await;
    let g = app
        .grant(json!({"workspace": "ws", "tenant_slug": "acme", "mode": "rw"}))
        .await;
    let t = app.ticket("acme", "r1", "ws", "rw", 600).await;
    let gid = g["id"].as_str().unwrap();
    let sid = t["session_id"].as_str().unwrap();
    let b = app.account("bee");
    let b = Some(b.as_str());
    for (method, uri, body, code) in [
        (
            "GET",
            "/v1/workspaces/admin/ws".to_owned(),
            None,
            "workspace_not_found",
        ),
        (
            "DELETE",
            "/v1/workspaces/admin/ws".to_owned(),
            None,
            "workspace_not_found",
        ),
        (
            "GET",
            "/v1/tenants/acme".to_owned(),
            None,
            "tenant_not_found",
        ),
        (
            "DELETE",
            "/v1/tenants/acme".to_owned(),
            None,
            "tenant_not_found",
        ),
        ("GET", format!("/v1/grants/{gid}"), None, "grant_not_found"),
        (
            "DELETE",
            format!("/v1/grants/{gid}"),
            None,
            "grant_not_found",
        ),
        (
            "GET",
            format!("/v1/sessions/{sid}"),
            None,
            "session_not_found",
        ),
        (
            "DELETE",
            format!("/v1/sessions/{sid}"),
            None,
            "session_not_found",
        ),
        (
            "POST",
            "/v1/grants/revoke".to_owned(),
            Some(json!({"tenant_slug": "acme"})),
            "tenant_not_found",
        ),
        (
            "POST",
            "/v1/grants".to_owned(),
            Some(json!({"workspace": "admin/ws", "tenant_slug": "acme", "mode": "rw"})),
            "workspace_not_found",
        ),
        (
            "POST",
            "/v1/tickets".to_owned(),
            Some(
                json!({"workspace": "admin/ws", "tenant_slug": "acme", "runtime_id": "r1", "mode": "rw", "ttl_seconds": 60}),
            ),
            "workspace_not_found",
        ),
    ] {
        let r = app.call(method, &uri, b, body).await;
        assert_eq!(r.0, 404, "{method} {uri}: {}", r.1);
        err(&r, 404, code);
    }
    // B sees nothing of A's, and its refused ticket created no tenant.
    for uri in [
        "/v1/workspaces",
        "/v1/tenants",
        "/v1/grants?include_inactive=true",
        "/v1/sessions",
    ] {
        let r = app.call("GET", uri, b, None).await;
        assert_eq!(ok(&r, 200)["items"], json!([]), "{uri}");
    }
    // A's objects are untouched.
    assert_eq!(app.get_grant(gid).await["state"], "active");
    assert_eq!(app.session(sid).await["state"], "issued");
    ok(&app.admin("GET", "/v1/tenants/acme", None).await, 200);
    ok(
        &app.admin("GET", "/v1/workspaces/admin/ws", None).await,
        200,
    );
    // B's names live in B's own namespace.
    let r = app
        .call("POST", "/v1/tenants", b, Some(json!({"slug": "acme"})))
        .await;
    ok(&r, 201);
    let r = app
        .call("POST", "/v1/workspaces", b, Some(json!({"name": "ws"})))
        .await;
    assert_eq!(ok(&r, 201)["ref"], "bee/ws");
    // A bare workspace name means the caller's own.
    let r = app
        .call(
            "POST",
            "/v1/tickets",
            b,
            Some(json!({"workspace": "ws", "tenant_slug": "acme", "runtime_id": "r1", "mode": "rw", "ttl_seconds": 60})),
        )
        .await;
    let bt = ok(&r, 201);
    let (_, claims) = ticket_parts(bt["mount_ticket"].as_str().unwrap());
    assert_eq!(claims["ws"], "bee/ws");
    // A cannot see B's session either.
    let bsid = bt["session_id"].as_str().unwrap();
    err(
        &app.admin("GET", &format!("/v1/sessions/{bsid}"), None)
            .await,
        404,
        "session_not_found",
    );
}

// ---------------------------------------------------------------------------------------------
// The one-shot path
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn one_shot_ticket_creates_tenant_grant_and_issued_session() {
    let app = App::new();
    app.workspace("ws").await;
    let before = Timestamp::now();
    let t = app.ticket("acme", "task-1", "ws", "rw", 300).await;
    let after = Timestamp::now();
    assert_eq!(t["mode"], "rw");
    let sid = t["session_id"].as_str().unwrap();
    let gid = t["grant_id"].as_str().unwrap();
    assert!(sid.starts_with("ses_"), "{sid}");
    assert!(gid.starts_with("gr_"), "{gid}");
    // The tenant now exists.
    let tenant = ok(&app.admin("GET", "/v1/tenants/acme", None).await, 200);
    assert_eq!(tenant["metadata"], json!({}));
    // An auto grant, runtime-scoped, that expires with the ticket.
    let g = app.get_grant(gid).await;
    assert_eq!(g["scope"], "runtime");
    assert_eq!(g["runtime_id"], "task-1");
    assert_eq!(g["tenant_slug"], "acme");
    assert_eq!(g["workspace"], "admin/ws");
    assert_eq!(g["mode"], "rw");
    assert_eq!(g["state"], "active");
    assert_eq!(g["revoked_at"], Value::Null);
    let gexp = ts(&g["expires_at"]);
    assert!(
        gexp >= before.plus_secs(300) && gexp <= after.plus_secs(300),
        "{g}"
    );
    // The session.
    let s = app.session(sid).await;
    assert_eq!(s["state"], "issued");
    assert_eq!(s["grant_id"], gid);
    assert_eq!(s["runtime_id"], "task-1");
    assert_eq!(s["tenant_slug"], "acme");
    assert_eq!(s["workspace"], "admin/ws");
    assert_eq!(s["mode"], "rw");
    assert_eq!(s["exchanged_at"], Value::Null);
    assert_eq!(s["ended_at"], Value::Null);
    assert_eq!(s["expires_at"], t["expires_at"]);
    let exp = ts(&s["expires_at"]);
    assert!(
        exp.millis() > before.plus_secs(299).millis() && exp <= after.plus_secs(300),
        "{s}"
    );
    // The ticket's header and claims.
    let mt = t["mount_ticket"].as_str().unwrap();
    let (h, c) = ticket_parts(mt);
    assert_eq!(h["alg"], "EdDSA");
    assert_eq!(h["typ"], "JWT");
    assert_eq!(h["kid"], app.state.keys.current().kid.as_str());
    assert_eq!(c["iss"], URL);
    assert_eq!(c["aud"], "grantfs-agent");
    assert_eq!(c["sub"], "task-1");
    assert_eq!(c["jti"], sid);
    assert_eq!(c["ws"], "admin/ws");
    assert_eq!(c["tenant"], "acme");
    assert_eq!(c["grant"], gid);
    assert_eq!(c["mode"], "rw");
    // exp is the session's expiry rounded up to a whole second.
    assert_eq!(
        c["exp"].as_i64().unwrap(),
        (exp.millis() + 999).div_euclid(1000)
    );
    assert!(c["iat"].as_i64().unwrap() >= before.unix_secs());
    // A second ticket for the same runtime reuses the grant; each ticket has its own session.
    let t2 = app.ticket("acme", "task-1", "admin/ws", "rw", 60).await;
    assert_eq!(t2["grant_id"], gid);
    assert_ne!(t2["session_id"], sid);
    // An existing tenant is never a conflict; another runtime gets its own grant.
    app.tenant("beta").await;
    let t3 = app
        .ticket("beta", "task-1", "grantfs://admin/ws", "ro", 60)
        .await;
    assert_ne!(t3["grant_id"], gid);
    let t4 = app.ticket("acme", "task-2", "ws", "ro", 60).await;
    assert_ne!(t4["grant_id"], gid);
    let grants = ok(&app.admin("GET", "/v1/grants", None).await, 200);
    assert_eq!(grants["items"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn one_shot_prefers_the_runtime_grant_over_the_tenant_wide_one() {
    let app = App::new();
    app.workspace("ws").await;
    app.tenant("acme").await;
    let wide = app
        .grant(json!({"workspace": "ws", "tenant_slug": "acme", "mode": "rw"}))
        .await;
    assert_eq!(wide["scope"], "tenant");
    assert_eq!(wide["runtime_id"], Value::Null);
    assert_eq!(wide["expires_at"], Value::Null);
    let wid = wide["id"].as_str().unwrap();
    // rw grant + ro ticket: an ro session under the tenant-wide grant.
    let t = app.ticket("acme", "r1", "ws", "ro", 60).await;
    assert_eq!(t["grant_id"], wid);
    assert_eq!(t["mode"], "ro");
    assert_eq!(
        app.session(t["session_id"].as_str().unwrap()).await["mode"],
        "ro"
    );
    let (_, c) = ticket_parts(t["mount_ticket"].as_str().unwrap());
    assert_eq!(c["mode"], "ro");
    // A runtime-scoped ro grant for r1 wins over the tenant-wide rw one ...
    let own = app
        .grant(json!({"workspace": "ws", "tenant_slug": "acme", "runtime_id": "r1", "mode": "ro"}))
        .await;
    assert_eq!(own["scope"], "runtime");
    let t = app.ticket("acme", "r1", "ws", "ro", 60).await;
    assert_eq!(t["grant_id"], own["id"]);
    // ... and is never widened, even though a tenant-wide rw grant exists.
    let r = app.try_ticket("acme", "r1", "ws", "rw", 60).await;
    err(&r, 409, "grant_mode_insufficient");
    // Other runtimes still use the tenant-wide grant, and no auto grant was made.
    let t = app.ticket("acme", "r2", "ws", "rw", 60).await;
    assert_eq!(t["grant_id"], wid);
    assert_eq!(t["mode"], "rw");
    let grants = ok(
        &app.admin("GET", "/v1/grants?include_inactive=true", None)
            .await,
        200,
    );
    assert_eq!(grants["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        app.get_grant(own["id"].as_str().unwrap()).await["mode"],
        "ro"
    );
}

#[tokio::test]
async fn one_shot_ro_grant_is_never_widened() {
    let app = App::new();
    app.workspace("ws").await;
    let t = app.ticket("acme", "r1", "ws", "ro", 60).await;
    let gid = t["grant_id"].as_str().unwrap();
    let r = app.try_ticket("acme", "r1", "ws", "rw", 60).await;
    let m = err(&r, 409, "grant_mode_insufficient");
    assert!(m.contains(gid), "{m}");
    assert_eq!(app.get_grant(gid).await["mode"], "ro");
    // A tenant-wide ro grant refuses rw too.
    app.tenant("beta").await;
    app.grant(json!({"workspace": "ws", "tenant_slug": "beta", "mode": "ro"}))
        .await;
    err(
        &app.try_ticket("beta", "r9", "ws", "rw", 60).await,
        409,
        "grant_mode_insufficient",
    );
    // Only sessions that were issued exist.
    let s = ok(&app.admin("GET", "/v1/sessions", None).await, 200);
    assert_eq!(s["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn after_revocation_a_new_ticket_gets_a_new_grant() {
    let app = App::new();
    app.workspace("ws").await;
    let t1 = app.ticket("acme", "r1", "ws", "ro", 600).await;
    let g1 = t1["grant_id"].as_str().unwrap();
    let r = app.admin("DELETE", &format!("/v1/grants/{g1}"), None).await;
    assert_eq!(ok(&r, 200)["state"], "revoked");
    // rw is allowed now: the revoked ro grant is history, never picked.
    let t2 = app.ticket("acme", "r1", "ws", "rw", 600).await;
    let g2 = t2["grant_id"].as_str().unwrap();
    assert_ne!(g1, g2);
    assert_eq!(app.get_grant(g2).await["mode"], "rw");
    assert_eq!(app.get_grant(g1).await["state"], "revoked");
    // Same after a bulk revoke by runtime.
    let r = app
        .admin(
            "POST",
            "/v1/grants/revoke",
            Some(json!({"tenant_slug": "acme", "runtime_id": "r1"})),
        )
        .await;
    assert_eq!(
        ok(&r, 200),
        json!({"revoked_grants": 1, "revoked_sessions": 1})
    );
    let t3 = app.ticket("acme", "r1", "ws", "rw", 600).await;
    assert!(t3["grant_id"] != g1 && t3["grant_id"] != g2);
    let all = ok(
        &app.admin("GET", "/v1/grants?include_inactive=true", None)
            .await,
        200,
    );
    assert_eq!(all["items"].as_array().unwrap().len(), 3);
    let live = ok(&app.admin("GET", "/v1/grants", None).await, 200);
    assert_eq!(live["items"].as_array().unwrap().len(), 1);
    assert_eq!(live["items"][0]["id"], t3["grant_id"]);
}

#[tokio::test]
async fn session_expiry_is_the_earlier_of_ticket_ttl_and_grant_expiry() {
    let app = App::new();
    app.workspace("ws").await;
    app.tenant("acme").await;
    let g = app
        .grant(json!({"workspace": "ws", "tenant_slug": "acme", "mode": "rw", "ttl_seconds": 100}))
        .await;
    let gexp = ts(&g["expires_at"]);
    let created = ts(&g["created_at"]);
    assert_eq!(gexp.millis() - created.millis(), 100_000, "{g}");
    // A ticket longer than the grant ends with the grant (on a whole second, as JWT exp).
    let long = app.ticket("acme", "r1", "ws", "rw", 3600).await;
    assert_eq!(long["grant_id"], g["id"]);
    let exp = ts(&long["expires_at"]);
    assert!(
        exp <= gexp && gexp.millis() - exp.millis() < 1000,
        "{exp} vs {gexp}"
    );
    // A shorter ticket ends with itself.
    let now = Timestamp::now();
    let short = app.ticket("acme", "r1", "ws", "rw", 10).await;
    let exp = ts(&short["expires_at"]);
    assert!(
        exp.millis() > now.plus_secs(9).millis() && exp <= Timestamp::now().plus_secs(10),
        "{exp}"
    );
    // The explicit grant is not stretched by tickets.
    assert_eq!(
        app.get_grant(g["id"].as_str().unwrap()).await["expires_at"],
        g["expires_at"]
    );
    // Auto grants cover each ticket of their runtime in full.
    let a = app.ticket("beta", "auto", "ws", "rw", 60).await;
    let now = Timestamp::now();
    let b = app.ticket("beta", "auto", "ws", "rw", 600).await;
    assert_eq!(a["grant_id"], b["grant_id"]);
    let exp = ts(&b["expires_at"]);
    assert!(exp.millis() > now.plus_secs(599).millis(), "{b}");
}

#[tokio::test]
async fn grant_create_get_list_filters_and_idempotent_revoke() {
    let app = App::new();
    app.workspace("ws").await;
    app.workspace("other").await;
    app.tenant("acme").await;
    app.tenant("beta").await;
    let g1 = app
        .grant(json!({"workspace": "ws", "tenant_slug": "acme", "runtime_id": "r1", "mode": "rw", "ttl_seconds": 3600}))
        .await;
    assert_eq!(g1["state"], "active");
    assert_eq!(g1["scope"], "runtime");
    assert!(g1["expires_at"].is_string());
    let g2 = app
        .grant(json!({"workspace": "admin/other", "tenant_slug": "acme", "mode": "ro"}))
        .await;
    let g3 = app
        .grant(json!({"workspace": "ws", "tenant_slug": "beta", "runtime_id": "r1", "mode": "ro"}))
        .await;
    assert_eq!(app.get_grant(g1["id"].as_str().unwrap()).await, g1);
    let ids = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let id = |g: &Value| g["id"].as_str().unwrap().to_owned();
    let mut all = ids(&app.get("/v1/grants").await);
    all.sort();
    let mut want = vec![id(&g1), id(&g2), id(&g3)];
    want.sort();
    assert_eq!(all, want);
    assert_eq!(
        ids(&app.get("/v1/grants?tenant_slug=acme").await),
        [id(&g1), id(&g2)]
    );
    assert_eq!(
        ids(&app.get("/v1/grants?runtime_id=r1").await),
        [id(&g1), id(&g3)]
    );
    assert_eq!(ids(&app.get("/v1/grants?workspace=other").await), [id(&g2)]);
    assert_eq!(
        ids(&app.get("/v1/grants?workspace=admin/other").await),
        [id(&g2)]
    );
    assert_eq!(
        ids(&app
            .get("/v1/grants?workspace=grantfs://admin/ws&tenant_slug=beta")
            .await),
        [id(&g3)]
    );
    assert_eq!(
        ids(&app.get("/v1/grants?tenant_slug=nobody").await),
        Vec::<String>::new()
    );
    // Revoke one, twice: same answer, revoked_at unchanged.
    let uri = format!("/v1/grants/{}", id(&g1));
    let r1 = ok(&app.admin("DELETE", &uri, None).await, 200);
    assert_eq!(r1["state"], "revoked");
    assert!(r1["revoked_at"].is_string());
    let r2 = ok(&app.admin("DELETE", &uri, None).await, 200);
    assert_eq!(r1, r2);
    assert_eq!(app.get_grant(&id(&g1)).await, r1);
    // History is listable on request only.
    assert_eq!(
        ids(&app.get("/v1/grants?tenant_slug=acme").await),
        [id(&g2)]
    );
    assert_eq!(
        ids(&app
            .get("/v1/grants?tenant_slug=acme&include_inactive=true")
            .await),
        [id(&g1), id(&g2)]
    );
    assert_eq!(
        ids(&app
            .get("/v1/grants?tenant_slug=acme&include_inactive=false")
            .await),
        [id(&g2)]
    );
}

#[tokio::test]
async fn revoke_by_runtime_also_ends_sessions_under_the_tenant_wide_grant() {
    let app = App::new();
    app.workspace("ws").await;
    app.workspace("other").await;
    app.tenant("acme").await;
    let wide = app
        .grant(json!({"workspace": "ws", "tenant_slug": "acme", "mode": "rw"}))
        .await;
    let a = app.ticket("acme", "r1", "ws", "rw", 600).await; // r1 under the tenant-wide grant
    let b = app.ticket("acme", "r2", "ws", "rw", 600).await; // r2 under the tenant-wide grant
    let own = app
        .grant(json!({"workspace": "ws", "tenant_slug": "acme", "runtime_id": "r1", "mode": "rw"}))
        .await;
    let c = app.ticket("acme", "r1", "ws", "rw", 600).await; // r1 under its own grant
    assert_eq!(a["grant_id"], wide["id"]);
    assert_eq!(b["grant_id"], wide["id"]);
    assert_eq!(c["grant_id"], own["id"]);
    let o = app.ticket("acme", "r1", "other", "rw", 600).await; // r1 elsewhere (auto grant)
    // Scoped to another workspace first: only that one.
    let r = app
        .admin(
            "POST",
            "/v1/grants/revoke",
            Some(json!({"tenant_slug": "acme", "runtime_id": "r1", "workspace": "other"})),
        )
        .await;
    assert_eq!(
        ok(&r, 200),
        json!({"revoked_grants": 1, "revoked_sessions": 1})
    );
    assert_eq!(
        app.session(o["session_id"].as_str().unwrap()).await["state"],
        "revoked"
    );
    assert_eq!(
        app.session(a["session_id"].as_str().unwrap()).await["state"],
        "issued"
    );
    // Now r1 everywhere.
    let r = app
        .admin(
            "POST",
            "/v1/grants/revoke",
            Some(json!({"tenant_slug": "acme", "runtime_id": "r1"})),
        )
        .await;
    assert_eq!(
        ok(&r, 200),
        json!({"revoked_grants": 1, "revoked_sessions": 2})
    );
    for s in [&a, &c] {
        let s = app.session(s["session_id"].as_str().unwrap()).await;
        assert_eq!(s["state"], "revoked");
        assert_eq!(s["end_reason"], "grant_revoked");
        assert!(s["ended_at"].is_string());
    }
    assert_eq!(
        app.session(b["session_id"].as_str().unwrap()).await["state"],
        "issued"
    );
    assert_eq!(
        app.get_grant(wide["id"].as_str().unwrap()).await["state"],
        "active"
    );
    assert_eq!(
        app.get_grant(own["id"].as_str().unwrap()).await["state"],
        "revoked"
    );
    // Again: nothing left to revoke.
    let r = app
        .admin(
            "POST",
            "/v1/grants/revoke",
            Some(json!({"tenant_slug": "acme", "runtime_id": "r1"})),
        )
        .await;
    assert_eq!(
        ok(&r, 200),
        json!({"revoked_grants": 0, "revoked_sessions": 0})
    );
    // Without runtime_id: all of the tenant's grants and sessions.
    let r = app
        .admin(
            "POST",
            "/v1/grants/revoke",
            Some(json!({"tenant_slug": "acme"})),
        )
        .await;
    assert_eq!(
        ok(&r, 200),
        json!({"revoked_grants": 1, "revoked_sessions": 1})
    );
    assert_eq!(
        app.get_grant(wide["id"].as_str().unwrap()).await["state"],
        "revoked"
    );
    assert_eq!(
        app.session(b["session_id"].as_str().unwrap()).await["state"],
        "revoked"
    );
}

#[tokio::test]
async fn session_list_filters_state_history_and_idempotent_revoke() {
    let app = App::new();
    app.workspace("ws").await;
    app.workspace("w2").await;
    let s1 = app.ticket("acme", "r1", "ws", "rw", 600).await;
    let (s2, _) = app.live_session("acme", "r2", "ws", "rw").await;
    let s3 = app.ticket("beta", "r1", "w2", "ro", 600).await;
    let sid = |t: &Value| t["session_id"].as_str().unwrap().to_owned();
    let ids = |v: Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(app.get("/v1/sessions").await).len(), 3);
    assert_eq!(
        ids(app.get("/v1/sessions?tenant_slug=acme").await),
        [sid(&s1), sid(&s2)]
    );
    assert_eq!(
        ids(app.get("/v1/sessions?runtime_id=r1").await),
        [sid(&s1), sid(&s3)]
    );
    assert_eq!(ids(app.get("/v1/sessions?workspace=w2").await), [sid(&s3)]);
    assert_eq!(
        ids(app
            .get("/v1/sessions?workspace=admin/ws&runtime_id=r2")
            .await),
        [sid(&s2)]
    );
    assert_eq!(ids(app.get("/v1/sessions?state=active").await), [sid(&s2)]);
    assert_eq!(
        ids(app.get("/v1/sessions?state=issued").await),
        [sid(&s1), sid(&s3)]
    );
    assert!(ids(app.get("/v1/sessions?state=revoked").await).is_empty());
    // Revoke one, twice.
    let uri = format!("/v1/sessions/{}", sid(&s2));
    let r1 = ok(&app.admin("DELETE", &uri, None).await, 200);
    assert_eq!(r1["state"], "revoked");
    assert_eq!(r1["end_reason"], "session_revoked");
    assert!(r1["ended_at"].is_string());
    assert!(r1["exchanged_at"].is_string());
    let r2 = ok(&app.admin("DELETE", &uri, None).await, 200);
    assert_eq!(r1, r2);
    assert_eq!(ids(app.get("/v1/sessions?state=revoked").await), [sid(&s2)]);
    assert!(ids(app.get("/v1/sessions?state=active").await).is_empty());
    // The grant it was issued under is untouched.
    assert_eq!(
        app.get_grant(s2["grant_id"].as_str().unwrap()).await["state"],
        "active"
    );
    // Still listed by default: history is never deleted.
    assert_eq!(ids(app.get("/v1/sessions").await).len(), 3);
}

#[tokio::test]
async fn deleting_a_tenant_revokes_everything_keeps_history_and_frees_the_slug() {
    let app = App::new();
    app.workspace("ws").await;
    app.tenant("acme").await;
    let wide = app
        .grant(json!({"workspace": "ws", "tenant_slug": "acme", "mode": "rw"}))
        .await;
    let s1 = app.ticket("acme", "r1", "ws", "rw", 600).await;
    let s2 = app.ticket("acme", "r2", "ws", "ro", 600).await;
    app.ticket("acme", "r3", "ws", "ro", 600).await;
    let bystander = app.ticket("beta", "r1", "ws", "rw", 600).await;
    // An already revoked session is not counted again.
    app.admin(
        "DELETE",
        &format!("/v1/sessions/{}", s2["session_id"].as_str().unwrap()),
        None,
    )
    .await;
    let r = app.admin("DELETE", "/v1/tenants/acme", None).await;
    // The tenant-wide grant serves r1..r3, so no auto grant: 1 grant, 2 live sessions.
    assert_eq!(
        ok(&r, 200),
        json!({"revoked_grants": 1, "revoked_sessions": 2})
    );
    err(
        &app.admin("GET", "/v1/tenants/acme", None).await,
        404,
        "tenant_not_found",
    );
    // History keeps its tenant_slug and stays listable.
    let g = app.get_grant(wide["id"].as_str().unwrap()).await;
    assert_eq!(g["state"], "revoked");
    assert_eq!(g["tenant_slug"], "acme");
    let gl = ok(
        &app.admin(
            "GET",
            "/v1/grants?tenant_slug=acme&include_inactive=true",
            None,
        )
        .await,
        200,
    );
    assert_eq!(gl["items"].as_array().unwrap().len(), 1);
    let sl = ok(
        &app.admin("GET", "/v1/sessions?tenant_slug=acme", None)
            .await,
        200,
    );
    let items = sl["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert!(
        items
            .iter()
            .all(|s| s["state"] == "revoked" && s["tenant_slug"] == "acme")
    );
    let s1 = app.session(s1["session_id"].as_str().unwrap()).await;
    assert_eq!(s1["end_reason"], "tenant_deleted");
    // Other tenants are untouched.
    assert_eq!(
        app.session(bystander["session_id"].as_str().unwrap()).await["state"],
        "issued"
    );
    // The slug is free; the new tenant starts with no grants.
    err(
        &app.admin(
            "POST",
            "/v1/grants/revoke",
            Some(json!({"tenant_slug": "acme"})),
        )
        .await,
        404,
        "tenant_not_found",
    );
    app.tenant("acme").await;
    let t = app.ticket("acme", "r1", "ws", "rw", 60).await;
    assert_ne!(t["grant_id"], wide["id"]);
    assert_eq!(
        app.get_grant(t["grant_id"].as_str().unwrap()).await["scope"],
        "runtime"
    );
}

#[tokio::test]
async fn deleting_a_workspace_counts_what_it_revokes() {
    let app = App::new();
    app.workspace("ws").await;
    app.workspace("keep").await;
    app.tenant("acme").await;
    let wide = app
        .grant(json!({"workspace": "ws", "tenant_slug": "acme", "mode": "rw"}))
        .await;
    let a = app.ticket("acme", "r1", "ws", "rw", 600).await;
    let b = app.ticket("beta", "r1", "ws", "rw", 600).await; // auto grant
    let (c, _) = app.live_session("gamma", "r1", "ws", "ro").await; // auto grant
    let kept = app.ticket("acme", "r1", "keep", "rw", 600).await;
    let r = app.admin("DELETE", "/v1/workspaces/admin/ws", None).await;
    assert_eq!(
        ok(&r, 200),
        json!({"revoked_grants": 3, "revoked_sessions": 3})
    );
    for s in [&a, &b, &c] {
        let s = app.session(s["session_id"].as_str().unwrap()).await;
        assert_eq!(s["state"], "revoked");
        assert_eq!(s["end_reason"], "workspace_deleted");
    }
    assert_eq!(
        app.get_grant(wide["id"].as_str().unwrap()).await["state"],
        "revoked"
    );
    assert_eq!(
        app.session(kept["session_id"].as_str().unwrap()).await["state"],
        "issued"
    );
    err(
        &app.try_ticket("acme", "r1", "ws", "rw", 60).await,
        404,
        "workspace_not_found",
    );
    // A recreated workspace of the same name starts with nothing.
    app.workspace("ws").await;
    let t = app.ticket("acme", "r1", "ws", "rw", 60).await;
    assert_ne!(t["grant_id"], wide["id"]);
    let r = app.admin("DELETE", "/v1/workspaces/admin/ws", None).await;
    assert_eq!(
        ok(&r, 200),
        json!({"revoked_grants": 1, "revoked_sessions": 1})
    );
}

#[tokio::test]
async fn revoking_an_api_key_does_not_end_its_sessions() {
    let app = App::new();
    app.workspace("ws").await;
    let admin = Handle::parse("admin").unwrap();
    let k2 = app
        .state
        .store
        .create_key(&admin, Timestamp::now())
        .unwrap();
    let r = app
        .call(
            "POST",
            "/v1/tickets",
            Some(&k2.secret),
            Some(json!({"tenant_slug": "acme", "runtime_id": "r1", "workspace": "ws", "mode": "rw", "ttl_seconds": 60})),
        )
        .await;
    let t = ok(&r, 201);
    app.state
        .store
        .revoke_key(&admin, &k2.key_id, Timestamp::now())
        .unwrap();
    err(
        &app.call("GET", "/v1/sessions", Some(&k2.secret), None)
            .await,
        401,
        "unauthorized",
    );
    assert_eq!(
        app.session(t["session_id"].as_str().unwrap()).await["state"],
        "issued"
    );
    ok(
        &app.exchange(t["mount_ticket"].as_str().unwrap()).await,
        200,
    );
}

// ---------------------------------------------------------------------------------------------
// Exchange and tickets
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn exchange_turns_the_session_active_once() {
    let app = App::new();
    app.workspace("ws").await;
    let t = app.ticket("acme", "r1", "ws", "ro", 600).await;
    let mt = t["mount_ticket"].as_str().unwrap();
    let x = ok(&app.exchange(mt).await, 200);
    let sid = t["session_id"].as_str().unwrap();
    assert_eq!(x["session_id"], sid);
    let token = x["session_token"].as_str().unwrap();
    assert!(token.starts_with("gst_") && token.len() > 30, "{token}");
    assert_eq!(x["workspace"], "admin/ws");
    assert_eq!(x["mode"], "ro");
    assert_eq!(x["expires_at"], t["expires_at"]);
    assert_eq!(x["storage"], json!({"kind": "local", "path": "admin/ws"}));
    assert_eq!(x["events_url"], format!("{URL}/v1/sessions/{sid}/events"));
    assert_eq!(x["keepalive_seconds"], 5);
    let s = app.session(sid).await;
    assert_eq!(s["state"], "active");
    assert!(s["exchanged_at"].is_string());
    // Once only.
    err(&app.exchange(mt).await, 409, "ticket_already_used");
    // Ending needs the token.
    let end = |tok: Option<String>| {
        let mut b = Request::post(format!("/v1/sessions/{sid}/end"));
        if let Some(t) = tok {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        b.body(Body::empty()).unwrap()
    };
    for tok in [None, Some("gst_wrong".to_owned()), Some(app.key.clone())] {
        let (status, _, bytes) = app.raw(end(tok)).await;
        err(&(status, decode(status, &bytes)), 401, "unauthorized");
    }
    assert_eq!(app.session(sid).await["state"], "active");
    let (status, _, bytes) = app.raw(end(Some(token.to_owned()))).await;
    let s = ok(&(status, decode(status, &bytes)), 200);
    assert_eq!(s["state"], "ended");
    assert!(s["ended_at"].is_string());
    assert_eq!(app.session(sid).await["state"], "ended");
    // An ended session's stream refuses; its ticket stays used.
    err(
        &app.open_events(sid, token).await.err().unwrap(),
        403,
        "session_revoked",
    );
    err(&app.exchange(mt).await, 409, "ticket_already_used");
    // An issued session has no token yet: nothing opens its stream.
    let t2 = app.ticket("acme", "r1", "ws", "ro", 600).await;
    let sid2 = t2["session_id"].as_str().unwrap();
    err(
        &app.open_events(sid2, token).await.err().unwrap(),
        401,
        "unauthorized",
    );
    // Another session's token is no good either.
    let x2 = ok(
        &app.exchange(t2["mount_ticket"].as_str().unwrap()).await,
        200,
    );
    err(
        &app.open_events(sid, x2["session_token"].as_str().unwrap())
            .await
            .err()
            .unwrap(),
        401,
        "unauthorized",
    );
}

#[tokio::test]
async fn bad_tickets_are_refused_with_their_code() {
    let app = App::new();
    app.workspace("ws").await;
    let t = app.ticket("acme", "r1", "ws", "ro", 600).await;
    let real = t["mount_ticket"].as_str().unwrap().to_owned();
    let sid = t["session_id"].as_str().unwrap();
    let cur = app.state.keys.current();
    let other_dir = tempfile::tempdir().unwrap();
    let other = KeyRing::open(other_dir.path()).unwrap().current();
    let now = Timestamp::now().unix_secs();
    let (h, c) = ticket_parts(&real);
    let mut good: TicketClaims = serde_json::from_value(c.clone()).unwrap();
    assert_eq!(h["kid"], cur.kid.as_str());
    let signed = |c: &TicketClaims, kid: &str, key: &jsonwebtoken::EncodingKey| {
        ticket::sign(c, kid, key).unwrap()
    };
    // Tampered payload, original signature.
    let p: Vec<&str> = real.split('.').collect();
    let mut payload = c.clone();
    payload["mode"] = json!("rw");
    let tampered = format!(
        "{}.{}.{}",
        p[0],
        B64.encode(serde_json::to_vec(&payload).unwrap()),
        p[2]
    );
    let mut wrong_aud = good.clone();
    wrong_aud.aud = "someone-else".into();
    let mut wrong_iss = good.clone();
    wrong_iss.iss = "http://evil.example".into();
    let cases: Vec<(&str, String)> = vec![
        ("garbage", "garbage".into()),
        ("empty", String::new()),
        ("three dots", "a.b.c".into()),
        ("too long", "x".repeat(9000)),
        ("tampered", tampered),
        ("unknown kid", signed(&good, &other.kid, &other.key)),
        ("other key, our kid", signed(&good, &cur.kid, &other.key)),
        ("wrong audience", signed(&wrong_aud, &cur.kid, &cur.key)),
        ("wrong issuer", signed(&wrong_iss, &cur.kid, &cur.key)),
        (
            "unknown session",
            signed(&claims("ses_doesnotexist", now + 60), &cur.kid, &cur.key),
        ),
    ];
    for (what, tk) in cases {
        let r = app.exchange(&tk).await;
        assert_eq!(
            (r.0.as_u16(), r.1["code"].as_str()),
            (401, Some("ticket_invalid")),
            "{what}: {}",
            r.1
        );
    }
    // Past exp (beyond the 30 s leeway), correctly signed: expired.
    good.exp = now - 3600;
    good.iat = now - 7200;
    err(
        &app.exchange(&signed(&good, &cur.kid, &cur.key)).await,
        401,
        "ticket_expired",
    );
    let mut fresh = claims("ses_doesnotexist", now - 3600);
    fresh.iat = now - 7200;
    err(
        &app.exchange(&signed(&fresh, &cur.kid, &cur.key)).await,
        401,
        "ticket_expired",
    );
    // None of that touched the session; the real ticket still works.
    assert_eq!(app.session(sid).await["state"], "issued");
    ok(&app.exchange(&real).await, 200);
}

#[tokio::test]
async fn exchange_after_revocation_is_403_session_revoked() {
    let app = App::new();
    app.workspace("ws").await;
    let a = app.ticket("acme", "r1", "ws", "rw", 600).await;
    app.admin(
        "DELETE",
        &format!("/v1/sessions/{}", a["session_id"].as_str().unwrap()),
        None,
    )
    .await;
    err(
        &app.exchange(a["mount_ticket"].as_str().unwrap()).await,
        403,
        "session_revoked",
    );
    let b = app.ticket("acme", "r1", "ws", "rw", 600).await;
    app.admin(
        "DELETE",
        &format!("/v1/grants/{}", b["grant_id"].as_str().unwrap()),
        None,
    )
    .await;
    err(
        &app.exchange(b["mount_ticket"].as_str().unwrap()).await,
        403,
        "session_revoked",
    );
    let c = app.ticket("acme", "r1", "ws", "rw", 600).await;
    app.admin("DELETE", "/v1/tenants/acme", None).await;
    err(
        &app.exchange(c["mount_ticket"].as_str().unwrap()).await,
        403,
        "session_revoked",
    );
}

#[tokio::test]
async fn expired_session_refuses_exchange_and_stream() {
    let app = App::new();
    app.workspace("ws").await;
    early_in_second().await;
    let t = app.ticket("acme", "r1", "ws", "rw", 1).await;
    let (_, x) = app.live_session("acme", "r2", "ws", "rw").await;
    let sid = t["session_id"].as_str().unwrap();
    // Short-lived live session, too: exchanged now, stream refused once it is over.
    early_in_second().await;
    let t2 = app.ticket("acme", "r3", "ws", "rw", 1).await;
    let x2 = ok(
        &app.exchange(t2["mount_ticket"].as_str().unwrap()).await,
        200,
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let s = app.session(sid).await;
        if s["state"] == "expired" {
            assert_eq!(s["end_reason"], "expired");
            break;
        }
        assert_eq!(s["state"], "issued");
        assert!(
            tokio::time::Instant::now() < deadline,
            "session never expired: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The ticket is still inside the verifier's leeway: the session decides.
    err(
        &app.exchange(t["mount_ticket"].as_str().unwrap()).await,
        403,
        "session_expired",
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while app.session(t2["session_id"].as_str().unwrap()).await["state"] != "expired" {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = app
        .open_events(
            x2["session_id"].as_str().unwrap(),
            x2["session_token"].as_str().unwrap(),
        )
        .await
        .err()
        .unwrap();
    err(&r, 403, "session_expired");
    // The state filter sees them as expired, the long one as active.
    let l = ok(
        &app.admin("GET", "/v1/sessions?state=expired", None).await,
        200,
    );
    assert_eq!(l["items"].as_array().unwrap().len(), 2);
    let l = ok(
        &app.admin("GET", "/v1/sessions?state=active", None).await,
        200,
    );
    assert_eq!(l["items"][0]["id"], x["session_id"]);
}

// ---------------------------------------------------------------------------------------------
// Event streams: one per revocation path
// ---------------------------------------------------------------------------------------------

const EVENT_WAIT: Duration = Duration::from_secs(3);

#[tokio::test]
async fn stream_gets_revoked_on_grant_delete() {
    let app = App::new();
    app.workspace("ws").await;
    let (t, _, mut ev) = app.watched("acme", "r1", "ws").await;
    let r = app
        .admin(
            "DELETE",
            &format!("/v1/grants/{}", t["grant_id"].as_str().unwrap()),
            None,
        )
        .await;
    ok(&r, 200);
    ev.expect_revoked("grant_revoked", EVENT_WAIT).await;
}

#[tokio::test]
async fn stream_gets_revoked_on_grants_revoke() {
    let app = App::new();
    app.workspace("ws").await;
    app.tenant("acme").await;
    app.grant(json!({"workspace": "ws", "tenant_slug": "acme", "mode": "rw"}))
        .await;
    let (_, _, mut ev) = app.watched("acme", "r1", "ws").await;
    let (_, _, mut other) = app.watched("acme", "r2", "ws").await;
    let r = app
        .admin(
            "POST",
            "/v1/grants/revoke",
            Some(json!({"tenant_slug": "acme", "runtime_id": "r1"})),
        )
        .await;
    assert_eq!(
        ok(&r, 200),
        json!({"revoked_grants": 0, "revoked_sessions": 1})
    );
    ev.expect_revoked("grant_revoked", EVENT_WAIT).await;
    // r2 (same tenant-wide grant) hears nothing until the tenant-wide revoke.
    let r = app
        .admin(
            "POST",
            "/v1/grants/revoke",
            Some(json!({"tenant_slug": "acme"})),
        )
        .await;
    assert_eq!(
        ok(&r, 200),
        json!({"revoked_grants": 1, "revoked_sessions": 1})
    );
    other.expect_revoked("grant_revoked", EVENT_WAIT).await;
}

#[tokio::test]
async fn stream_gets_revoked_on_tenant_delete() {
    let app = App::new();
    app.workspace("ws").await;
    let (_, _, mut ev) = app.watched("acme", "r1", "ws").await;
    ok(&app.admin("DELETE", "/v1/tenants/acme", None).await, 200);
    ev.expect_revoked("tenant_deleted", EVENT_WAIT).await;
}

#[tokio::test]
async fn stream_gets_revoked_on_workspace_delete() {
    let app = App::new();
    app.workspace("ws").await;
    let (_, _, mut ev) = app.watched("acme", "r1", "ws").await;
    ok(
        &app.admin("DELETE", "/v1/workspaces/admin/ws", None).await,
        200,
    );
    ev.expect_revoked("workspace_deleted", EVENT_WAIT).await;
}

#[tokio::test]
async fn stream_gets_keepalives_then_revoked_on_session_delete() {
    let app = App::with_keepalive(Duration::from_secs(1));
    app.workspace("ws").await;
    let (_, x, mut ev) = app.watched("acme", "r1", "ws").await;
    let sid = x["session_id"].as_str().unwrap();
    let token = x["session_token"].as_str().unwrap();
    // A second stream of the same session hears the same revocation.
    let mut second = app.open_events(sid, token).await.unwrap();
    assert_eq!(second.next_event(EVENT_WAIT).await.unwrap().event, "state");
    assert_eq!(app.metric("grantfs_event_streams_open").await, 2);
    let k = ev.next_raw(Duration::from_millis(2500)).await.unwrap();
    assert_eq!(k.event, "keepalive", "{k:?}");
    ok(
        &app.admin("DELETE", &format!("/v1/sessions/{sid}"), None)
            .await,
        200,
    );
    ev.expect_revoked("session_revoked", EVENT_WAIT).await;
    second.expect_revoked("session_revoked", EVENT_WAIT).await;
    assert_eq!(
        app.metric("grantfs_revocation_events_delivered_total")
            .await,
        2
    );
    // A stream opened afterwards is refused.
    err(
        &app.open_events(sid, token).await.err().unwrap(),
        403,
        "session_revoked",
    );
    drop((ev, second));
    assert_eq!(app.metric("grantfs_event_streams_open").await, 0);
}

#[tokio::test]
async fn stream_gets_revoked_expired_when_the_session_runs_out() {
    let app = App::new();
    app.workspace("ws").await;
    early_in_second().await;
    let t = app.ticket("acme", "r1", "ws", "rw", 1).await;
    let x = ok(
        &app.exchange(t["mount_ticket"].as_str().unwrap()).await,
        200,
    );
    let mut ev = app
        .open_events(
            x["session_id"].as_str().unwrap(),
            x["session_token"].as_str().unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(ev.next_event(EVENT_WAIT).await.unwrap().event, "state");
    let data = ev
        .expect_revoked("expired", Duration::from_millis(2500))
        .await;
    assert_eq!(data["at"], t["expires_at"]);
}

// ---------------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_one_shot_tickets_share_one_tenant_and_one_grant() {
    let app = App::new();
    app.workspace("ws").await;
    let key = app.key.clone();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let r = app.router();
            let key = key.clone();
            tokio::spawn(async move {
                send(
                    r,
                    "POST",
                    "/v1/tickets",
                    Some(&key),
                    Some(json!({"tenant_slug": "fresh", "runtime_id": "r1", "workspace": "ws", "mode": "rw", "ttl_seconds": 600})),
                )
                .await
            })
        })
        .collect();
    let answers = futures_util::future::join_all(tasks).await;
    let mut sessions = HashSet::new();
    let mut grants = HashSet::new();
    for a in answers {
        let t = ok(&a.unwrap(), 201);
        sessions.insert(t["session_id"].as_str().unwrap().to_owned());
        grants.insert(t["grant_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(sessions.len(), 100);
    assert_eq!(grants.len(), 1);
    let tenants = ok(&app.admin("GET", "/v1/tenants", None).await, 200);
    assert_eq!(tenants["items"].as_array().unwrap().len(), 1);
    let g = ok(
        &app.admin("GET", "/v1/grants?include_inactive=true", None)
            .await,
        200,
    );
    assert_eq!(g["items"].as_array().unwrap().len(), 1);
    let s = ok(
        &app.admin("GET", "/v1/sessions?tenant_slug=fresh", None)
            .await,
        200,
    );
    assert_eq!(s["items"].as_array().unwrap().len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_exchanges_of_one_ticket_have_exactly_one_winner() {
    let app = App::new();
    app.workspace("ws").await;
    for round in 0..3 {
        let t = app.ticket("acme", "r1", "ws", "rw", 600).await;
        let mt = t["mount_ticket"].as_str().unwrap().to_owned();
        let barrier = Arc::new(tokio::sync::Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let r = app.router();
                let mt = mt.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    send(
                        r,
                        "POST",
                        "/v1/sessions/exchange",
                        None,
                        Some(json!({ "ticket": mt })),
                    )
                    .await
                })
            })
            .collect();
        let mut wins = 0;
        for a in futures_util::future::join_all(tasks).await {
            let r = a.unwrap();
            if r.0 == StatusCode::OK {
                wins += 1;
            } else {
                err(&r, 409, "ticket_already_used");
            }
        }
        assert_eq!(wins, 1, "round {round}");
        assert_eq!(
            app.session(t["session_id"].as_str().unwrap()).await["state"],
            "active"
        );
    }
}

#[tokio::test]
async fn undecodable_path_segments_answer_json_errors() {
    let app = App::new();
    for (uri, field) in [
        ("/v1/grants/%FF", "id"),
        ("/v1/sessions/%FF", "id"),
        ("/v1/workspaces/admin/%FF", "name"),
        ("/v1/tenants/%FF", "slug"),
        ("/v1/sessions/%FF/events", "id"),
    ] {
        let req = Request::get(uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", app.key))
            .body(Body::empty())
            .unwrap();
        let (status, _, bytes) = app.raw(req).await;
        invalid(&(status, decode(status, &bytes)), field);
    }
}

// ---------------------------------------------------------------------------------------------
// Audit trail and rate limits
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn audit_trail_records_changes_tickets_exchanges_and_refusals_per_account() {
    let app = App::new();
    app.workspace("ws").await;
    app.tenant("acme").await;
    let t = app.ticket("acme", "task-1", "admin/ws", "rw", 60).await;
    let sid = t["session_id"].as_str().unwrap().to_owned();
    let gid = t["grant_id"].as_str().unwrap().to_owned();
    let ex = send(
        app.router(),
        "POST",
        "/v1/sessions/exchange",
        None,
        Some(json!({"ticket": t["mount_ticket"]})),
    )
    .await;
    ok(&ex, 200);
    // A refused change is recorded with its error code.
    let dup = app
        .admin("POST", "/v1/tenants", Some(json!({"slug": "acme"})))
        .await;
    assert_eq!(dup.0, StatusCode::CONFLICT);
    ok(
        &app.admin(
            "POST",
            "/v1/grants/revoke",
            Some(json!({"tenant_slug": "acme", "runtime_id": "task-1"})),
        )
        .await,
        200,
    );

    let page = ok(&app.admin("GET", "/v1/audit", None).await, 200);
    let items = page["items"].as_array().unwrap();
    let actions: Vec<(&str, &str)> = items
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("workspace.create", "ok"),
            ("tenant.create", "ok"),
            ("ticket.issue", "ok"),
            ("session.exchange", "ok"),
            ("tenant.create", "tenant_exists"),
            ("grants.revoke", "ok"),
        ]
    );
    let issue = &items[2];
    assert_eq!(issue["tenant"], "acme");
    assert_eq!(issue["runtime"], "task-1");
    assert_eq!(issue["workspace"], "admin/ws");
    assert_eq!(issue["grant_id"], gid.as_str());
    assert_eq!(issue["session_id"], sid.as_str());
    assert!(
        issue["actor"].as_str().unwrap().starts_with("key_"),
        "actor is the key id"
    );
    assert_eq!(items[3]["actor"], format!("session:{sid}"));
    assert_eq!(items[3]["account"], "admin");
    assert_eq!(
        items[5]["detail"],
        json!({"revoked_grants": 1, "revoked_sessions": 1})
    );
    // Never a secret in the trail.
    let text = page.to_string();
    assert!(!text.contains(&app.key) && !text.contains("gfs_") && !text.contains("gst_"));
    assert!(!text.contains(t["mount_ticket"].as_str().unwrap()));

    // Paging with since/limit.
    let first = ok(&app.admin("GET", "/v1/audit?limit=2", None).await, 200);
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let next = first["next_since"].as_i64().unwrap();
    let rest = ok(
        &app.admin("GET", &format!("/v1/audit?since={next}"), None)
            .await,
        200,
    );
    assert_eq!(rest["items"].as_array().unwrap().len(), 4);
    assert_eq!(
        app.admin("GET", "/v1/audit?limit=0", None).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        app.admin("GET", "/v1/audit?since=x", None).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    // Another account sees none of it.
    let other = app.account("other");
    let theirs = ok(&app.call("GET", "/v1/audit", Some(&other), None).await, 200);
    let theirs = theirs["items"].as_array().unwrap();
    assert_eq!(theirs.len(), 1, "only its own creation: {theirs:?}");
    assert_eq!(theirs[0]["action"], "account.create");
    assert_eq!(theirs[0]["account"], "other");
}

#[tokio::test]
async fn ticket_issuance_is_rate_limited_per_api_key_with_retry_after() {
    let mut app = App::new();
    app.state.limits = Arc::new(grantfs_control::ratelimit::RateLimits {
        tickets: grantfs_control::ratelimit::RateLimiter::new(3),
        exchanges: grantfs_control::ratelimit::RateLimiter::new(0),
    });
    app.workspace("ws").await;
    for i in 0..3 {
        ok(
            &app.try_ticket("acme", &format!("r{i}"), "admin/ws", "rw", 60)
                .await,
            201,
        );
    }
    let req = Request::builder()
        .method("POST")
        .uri("/v1/tickets")
        .header(header::AUTHORIZATION, format!("Bearer {}", app.key))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"tenant_slug": "acme", "runtime_id": "r9", "workspace": "admin/ws", "mode": "rw", "ttl_seconds": 60}).to_string(),
        ))
        .unwrap();
    let (status, headers, body) = app.raw(req).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers[header::RETRY_AFTER], "1");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["code"], "rate_limited");
    // Another key of another account has its own bucket.
    let other = app.account("other");
    ok(
        &app.call(
            "POST",
            "/v1/workspaces",
            Some(&other),
            Some(json!({"name": "ws"})),
        )
        .await,
        201,
    );
    let r = app
        .call(
            "POST",
            "/v1/tickets",
            Some(&other),
            Some(json!({"tenant_slug": "acme", "runtime_id": "r1", "workspace": "other/ws", "mode": "rw", "ttl_seconds": 60})),
        )
        .await;
    ok(&r, 201);
}
