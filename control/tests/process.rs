//! Process-level tests: the real `grantfs-control` binary on 127.0.0.1:0 with a temporary state
//! dir, driven through `grantfs::client::Client` and the admin command lines.
// clippy's allow-unwrap-in-tests covers #[test] fns only, not this test crate's helpers.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use grantfs::api::{CreateGrant, CreateTenant, CreateTicket, GrantFilter, SessionState};
use grantfs::client::{Client, ClientError, SseEvent};
use grantfs::{ErrorCode, GrantId};
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_grantfs-control");

/// A running server; killed (SIGKILL) and reaped on drop.
struct Server {
    child: Option<Child>,
    state_dir: PathBuf,
    log: PathBuf,
    /// Where it listens, from `<state-dir>/control.addr`.
    base: String,
    /// The bootstrap account's API key, from `<state-dir>/admin.key`.
    key: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A command line of the binary with no inherited `GRANTFS_*` settings.
fn command() -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("GRANTFS_") {
            c.env_remove(k);
        }
    }
    c
}

impl Server {
    /// Starts `serve` on 127.0.0.1:0; waits for control.addr and /healthz.
    async fn start(state_dir: &Path, extra: &[&str]) -> Server {
        let addr_file = state_dir.join("control.addr");
        let _ = fs::remove_file(&addr_file);
        let log = state_dir.with_extension(format!(
            "{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let child = command()
            .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(state_dir)
            .args(extra)
            .env("GRANTFS_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut s = Server {
            child: Some(child),
            state_dir: state_dir.to_owned(),
            log,
            base: String::new(),
            key: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        s.base = loop {
            if let Some(status) = s.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("server exited with {status}:\n{}", s.log_text());
            }
            if let Ok(a) = fs::read_to_string(&addr_file)
                && a.ends_with('\n')
            {
                break a.trim().to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no control.addr:\n{}",
                s.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(s.base.starts_with("http://127.0.0.1:"), "{}", s.base);
        let probe = Client::new(&s.base, None).unwrap();
        loop {
            match probe.healthz().await {
                Ok(v) => {
                    assert_eq!(v["status"], "ok");
                    break;
                }
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "no /healthz: {e}\n{}",
                        s.log_text()
                    )
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        s.key = fs::read_to_string(state_dir.join("admin.key"))
            .unwrap()
            .trim()
            .to_owned();
        s
    }

    fn client(&self) -> Client {
        Client::new(&self.base, Some(self.key.clone())).unwrap()
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// kill -9 and reap.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs an admin command line on this server's state dir; returns (ok, stdout, stderr).
    fn cli(&self, args: &[&str]) -> (bool, String, String) {
        cli(&self.state_dir, args)
    }
}

fn cli(state_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = command()
        .args(args)
        .arg("--state-dir")
        .arg(state_dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn ticket_req(tenant: &str, runtime: &str, ws: &str, ttl: i64) -> CreateTicket {
    CreateTicket {
        tenant_slug: tenant.into(),
        runtime_id: runtime.into(),
        workspace: ws.into(),
        mode: "rw".into(),
        ttl_seconds: ttl,
    }
}

fn kid_of(ticket: &str) -> String {
    jsonwebtoken::decode_header(ticket).unwrap().kid.unwrap()
}

#[track_caller]
fn code(e: ClientError) -> ErrorCode {
    e.code().unwrap_or_else(|| panic!("not an API error: {e}"))
}

/// The next event that is not a keepalive, within `within`.
async fn next_event<S>(events: &mut S, within: Duration) -> SseEvent
where
    S: futures_util::Stream<Item = Result<SseEvent, ClientError>> + Unpin,
{
    let deadline = Instant::now() + within;
    loop {
        let e = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("no event in time")
            .expect("event stream ended")
            .expect("event stream failed");
        if e.event != "keepalive" {
            return e;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_flow_through_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&dir.path().join("state"), &[]).await;
    let c = srv.client();
    let ws = c.create_workspace("ws").await.unwrap();
    assert_eq!(ws.reference, "admin/ws");
    assert_eq!(
        code(c.create_workspace("ws").await.unwrap_err()),
        ErrorCode::WorkspaceExists
    );
    let t = c
        .create_tenant(&CreateTenant {
            slug: "acme".into(),
            external_id: Some("cus_1".into()),
            metadata: None,
        })
        .await
        .unwrap();
    assert_eq!(t.external_id.as_deref(), Some("cus_1"));
    let g = c
        .create_grant(&CreateGrant {
            workspace: "ws".into(),
            tenant_slug: "acme".into(),
            runtime_id: Some("task-1".into()),
            mode: "rw".into(),
            ttl_seconds: Some(3600),
        })
        .await
        .unwrap();
    let issued = c
        .create_ticket(&ticket_req("acme", "task-1", "admin/ws", 600))
        .await
        .unwrap();
    assert_eq!(issued.grant_id, g.id);
    // The exchange needs no API key.
    let agent = Client::new(&srv.base, None).unwrap();
    let x = agent.exchange(&issued.mount_ticket).await.unwrap();
    assert_eq!(x.session_id, issued.session_id);
    assert_eq!(x.storage.path, "admin/ws");
    assert_eq!(
        x.events_url,
        format!("{}/v1/sessions/{}/events", srv.base, x.session_id)
    );
    assert_eq!(
        code(agent.exchange(&issued.mount_ticket).await.unwrap_err()),
        ErrorCode::TicketAlreadyUsed
    );
    let mut events = Box::pin(agent.events(&x.session_id, &x.session_token).await.unwrap());
    let first = next_event(&mut events, Duration::from_secs(5)).await;
    assert_eq!(first.event, "state");
    let s: grantfs::api::Session = serde_json::from_str(&first.data).unwrap();
    assert_eq!(s.state, SessionState::Active);
    let revoked = c.revoke_session(&x.session_id).await.unwrap();
    assert_eq!(revoked.state, SessionState::Revoked);
    let e = next_event(&mut events, Duration::from_secs(3)).await;
    assert_eq!(e.event, "revoked");
    let data: grantfs::api::RevokedEvent = serde_json::from_str(&e.data).unwrap();
    assert_eq!(data.reason, grantfs::api::RevokeReason::SessionRevoked);
    // A stream opened now is refused with the contract's code.
    let refused = agent
        .events(&x.session_id, &x.session_token)
        .await
        .err()
        .unwrap();
    assert_eq!(code(refused), ErrorCode::SessionRevoked);
    // Listing and an API error through the client.
    let grants = c.list_grants(&GrantFilter::default()).await.unwrap();
    assert_eq!(grants.items.len(), 1);
    let missing = c.get_grant(&GrantId::from_string("gr_nope".into())).await;
    assert_eq!(code(missing.unwrap_err()), ErrorCode::GrantNotFound);
    let anon = agent.list_workspaces().await.unwrap_err();
    assert_eq!(code(anon), ErrorCode::Unauthorized);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_key_is_private_and_secrets_never_reach_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut srv = Server::start(&state, &[]).await;
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state.join("admin.key")), 0o600);
    assert_eq!(mode(&state), 0o700);
    let key = srv.key.clone();
    assert!(
        key.len() == 44
            && key.starts_with("gfs_")
            && key[4..].bytes().all(|b| b.is_ascii_alphanumeric()),
        "{key}"
    );
    let c = srv.client();
    c.create_workspace("ws").await.unwrap();
    let issued = c
        .create_ticket(&ticket_req("acme", "r1", "ws", 600))
        .await
        .unwrap();
    let agent = Client::new(&srv.base, None).unwrap();
    let x = agent.exchange(&issued.mount_ticket).await.unwrap();
    // Failures log too: a wrong key, a replayed ticket, a wrong session token.
    let wrong = Client::new(&srv.base, Some(format!("gfs_{}", "Z".repeat(40)))).unwrap();
    assert!(wrong.list_tenants().await.is_err());
    assert!(agent.exchange(&issued.mount_ticket).await.is_err());
    assert!(agent.events(&x.session_id, "gst_wrong").await.is_err());
    agent
        .end_session(&x.session_id, &x.session_token)
        .await
        .unwrap();
    srv.kill();
    let log = srv.log_text();
    assert!(log.contains("listening"), "log not captured:\n{log}");
    assert!(
        log.contains("ticket exchanged"),
        "debug log not captured:\n{log}"
    );
    assert!(!log.contains(&key), "the API key is in the log");
    assert!(!log.contains("gfs_"), "an API key is in the log");
    assert!(!log.contains("gst_"), "a session token is in the log");
    assert!(!log.contains(&x.session_token));
    assert!(
        !log.contains(&issued.mount_ticket),
        "the ticket is in the log"
    );
    // Nor any part of it (the signature is the secret-bearing part).
    let sig = issued.mount_ticket.rsplit('.').next().unwrap();
    assert!(!log.contains(sig), "the ticket signature is in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_grants_and_issued_tickets_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let public = ["--public-url", "http://grantfs.test"];
    let mut srv = Server::start(&state, &public).await;
    let c = srv.client();
    c.create_workspace("ws").await.unwrap();
    c.create_tenant(&CreateTenant {
        slug: "acme".into(),
        external_id: None,
        metadata: None,
    })
    .await
    .unwrap();
    let before = c
        .create_ticket(&ticket_req("acme", "survivor", "ws", 600))
        .await
        .unwrap();
    let old_kid = kid_of(&before.mount_ticket);
    // One task creates grants as fast as it can, recording every acknowledged id.
    let acked: Arc<Mutex<Vec<GrantId>>> = Arc::default();
    let writer = {
        let (c, acked) = (c.clone(), acked.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            loop {
                i += 1;
                let r = c
                    .create_grant(&CreateGrant {
                        workspace: "ws".into(),
                        tenant_slug: "acme".into(),
                        runtime_id: Some(format!("rt-{i}")),
                        mode: "ro".into(),
                        ttl_seconds: None,
                    })
                    .await;
                match r {
                    Ok(g) => acked.lock().unwrap().push(g.id),
                    Err(e) => {
                        assert!(e.is_transport(), "{e}");
                        return;
                    }
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 200 {
        assert!(!writer.is_finished(), "the writer stopped early");
        assert!(Instant::now() < deadline, "too slow to ack 200 grants");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    srv.kill();
    // The writer sees the connection die; anything it got acknowledged is what must survive.
    tokio::time::timeout(Duration::from_secs(40), writer)
        .await
        .expect("the writer hangs after the kill")
        .unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 200);
    let srv = Server::start(&state, &public).await;
    let c = srv.client();
    for id in &acked {
        let g = c
            .get_grant(id)
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(&g.id, id);
    }
    let all = c
        .list_grants(&GrantFilter {
            include_inactive: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(all.items.len() > acked.len());
    // Same signing key, same issuer: the ticket issued before the kill still exchanges.
    let jwks = c.jwks().await.unwrap();
    assert!(jwks.keys.iter().any(|k| k.kid == old_kid));
    let x = Client::new(&srv.base, None)
        .unwrap()
        .exchange(&before.mount_ticket)
        .await
        .unwrap();
    assert_eq!(x.session_id, before.session_id);
    assert!(
        x.events_url.starts_with("http://grantfs.test/"),
        "{}",
        x.events_url
    );
    let after = c
        .create_ticket(&ticket_req("acme", "survivor", "ws", 600))
        .await
        .unwrap();
    assert_eq!(kid_of(&after.mount_ticket), old_kid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_key_rotation_is_picked_up_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let srv = Server::start(&state, &[]).await;
    let c = srv.client();
    c.create_workspace("ws").await.unwrap();
    let old = c
        .create_ticket(&ticket_req("acme", "r1", "ws", 600))
        .await
        .unwrap();
    let old_kid = kid_of(&old.mount_ticket);
    let jwks = c.jwks().await.unwrap();
    assert_eq!(jwks.keys.len(), 1);
    assert_eq!(jwks.keys[0].kid, old_kid);
    let (ok, out, err) = srv.cli(&["signing-key", "rotate"]);
    assert!(ok, "{err}");
    let new_kid = out.trim().to_owned();
    assert!(!new_kid.is_empty() && new_kid != old_kid, "{out}");
    let deadline = Instant::now() + Duration::from_secs(4);
    loop {
        let jwks = c.jwks().await.unwrap();
        let kids: Vec<&str> = jwks.keys.iter().map(|k| k.kid.as_str()).collect();
        if kids.len() == 2 {
            assert!(kids.contains(&old_kid.as_str()) && kids.contains(&new_kid.as_str()));
            break;
        }
        assert_eq!(kids, [old_kid.as_str()]);
        assert!(
            Instant::now() < deadline,
            "rotation not picked up within 3 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let new = c
        .create_ticket(&ticket_req("acme", "r1", "ws", 600))
        .await
        .unwrap();
    assert_eq!(kid_of(&new.mount_ticket), new_kid);
    let agent = Client::new(&srv.base, None).unwrap();
    agent.exchange(&old.mount_ticket).await.unwrap();
    agent.exchange(&new.mount_ticket).await.unwrap();
    let (ok, out, _) = srv.cli(&["signing-key", "list"]);
    assert!(ok);
    assert!(out.contains(&format!("{new_kid}\tcurrent")), "{out}");
    assert!(out.contains(&old_kid), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_and_key_command_lines() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let srv = Server::start(&state, &[]).await;
    let (ok, out, err) = srv.cli(&["account", "create", "acme-platform"]);
    assert!(ok, "{err}");
    let first = out.trim().to_owned();
    assert!(first.starts_with("gfs_") && first.len() == 44, "{out}");
    assert!(!err.contains(&first), "the key is printed on stderr too");
    let (ok, _, err) = srv.cli(&["account", "create", "acme-platform"]);
    assert!(!ok, "a second create of the same account succeeded: {err}");
    let acme = Client::new(&srv.base, Some(first.clone())).unwrap();
    assert_eq!(
        acme.create_workspace("ws").await.unwrap().reference,
        "acme-platform/ws"
    );
    // Accounts are isolated: admin does not see acme's workspace.
    assert!(
        srv.client()
            .list_workspaces()
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let (ok, out, err) = srv.cli(&["key", "create", "acme-platform"]);
    assert!(ok, "{err}");
    let second = out.trim().to_owned();
    let second_id = err
        .split_whitespace()
        .find(|w| w.starts_with("key_"))
        .unwrap_or_else(|| panic!("no key id in {err:?}"))
        .to_owned();
    let acme2 = Client::new(&srv.base, Some(second.clone())).unwrap();
    assert_eq!(acme2.list_workspaces().await.unwrap().items.len(), 1);
    let (ok, out, _) = srv.cli(&["key", "list", "acme-platform"]);
    assert!(ok);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains(&second_id), "{out}");
    assert!(
        !out.contains(&first) && !out.contains(&second),
        "key list shows secrets"
    );
    let (ok, _, err) = srv.cli(&["key", "revoke", "acme-platform", &second_id]);
    assert!(ok, "{err}");
    let (_, out, _) = srv.cli(&["key", "list", "acme-platform"]);
    let line = out.lines().find(|l| l.contains(&second_id)).unwrap();
    assert!(line.contains("revoked"), "{out}");
    assert_eq!(
        code(acme2.list_workspaces().await.unwrap_err()),
        ErrorCode::Unauthorized
    );
    acme.list_workspaces().await.unwrap();
    // Unknown account / key: the command fails.
    assert!(!srv.cli(&["key", "create", "nobody"]).0);
    assert!(!srv.cli(&["key", "revoke", "acme-platform", "key_nope"]).0);
    assert!(!srv.cli(&["account", "create", "Bad_Handle"]).0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_trail_through_the_client_and_audit_tail() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let srv = Server::start(&state, &[]).await;
    let c = srv.client();
    c.create_workspace("ws").await.unwrap();
    let t = c
        .create_ticket(&ticket_req("acme", "task-1", "admin/ws", 60))
        .await
        .unwrap();
    c.revoke_session(&t.session_id).await.unwrap();
    let page = c.audit(0, 100).await.unwrap();
    let actions: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["workspace.create", "ticket.issue", "session.revoke"]
    );
    // The local command line reads the same trail (every account), as JSON lines.
    let (ok, out, err) = srv.cli(&["audit", "tail", "--limit", "2"]);
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0]["action"], "ticket.issue");
    assert_eq!(lines[1]["action"], "session.revoke");
    assert_eq!(lines[1]["session_id"], t.session_id.as_str());
    let (ok, out, _) = srv.cli(&["audit", "tail", "--account", "admin", "--since", "0"]);
    assert!(ok);
    assert_eq!(out.lines().count(), 3);
    assert!(!out.contains(&srv.key) && !out.contains(&t.mount_ticket));
}
