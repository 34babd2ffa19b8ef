//! End to end: a real grantfs-control process, real FUSE mounts by the grantfs-agent command line,
//! real syscalls and real tools on them. Needs `cargo build --workspace --bins` first.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

#[macro_use]
#[path = "e2e/support.rs"]
mod support;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::os::unix::io::IntoRawFd;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use grantfs::api::{CreateGrant, CreateTenant, GrantState, RevokeGrants, SessionState};
use support::{
    Control, Host, Mount, assert_errno, errno_of, is_mounted, ms_until, percentile, pid_alive,
    signal, wait_for,
};

const EACCES: i32 = libc::EACCES;
const EROFS: i32 = libc::EROFS;
const DELIVERED: &str = "grantfs_revocation_events_delivered_total";

/// Polls a warm `stat` (every 0.5 ms) until it fails with EACCES; returns how long that took.
fn wait_eacces(path: &Path, within: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        match fs::metadata(path) {
            Err(e) if e.raw_os_error() == Some(EACCES) => return t0.elapsed(),
            Err(e) => panic!("stat {}: expected EACCES, got {e}", path.display()),
            Ok(_) => {}
        }
        assert!(
            t0.elapsed() < within,
            "stat {} still served {within:?} later",
            path.display()
        );
        std::thread::sleep(Duration::from_micros(500));
    }
}

fn c_path(p: &Path) -> std::ffi::CString {
    std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn truncate(p: &Path, len: i64) -> io::Result<()> {
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::truncate(c_path(p).as_ptr(), len) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// close(2) with its result, which `drop(File)` would hide.
fn close(f: File) -> io::Result<()> {
    // SAFETY: we own the descriptor and give it up here.
    if unsafe { libc::close(f.into_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn read_dir_names(p: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for e in fs::read_dir(p)? {
        names.push(e?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// A started control plane, a host dir, workspace `admin/ws` and a live mount of it.
fn setup(mode: &str, ttl: i64, extra: &[&str]) -> (Control, Host, Mount) {
    let ctl = Control::start();
    let host = Host::new();
    let ws = ctl.workspace("ws");
    let t = ctl.ticket(&ws, "acme", "task-1", mode, ttl);
    let mp = host.mountpoint("m");
    let m = host.mount(&ws, &mp, &t.mount_ticket, extra);
    (ctl, host, m)
}

// ---- 1. What a live mount answers ------------------------------------------------------------

#[test]
fn active_rw_session_is_served_and_lands_in_the_backing_dir() {
    require_fuse!();
    let (_ctl, host, m) = setup("rw", 300, &[]);
    let backing = host.backing("admin/ws");
    assert_eq!(m.event["mode"], "rw");
    assert_eq!(m.event["workspace"], "admin/ws");

    fs::write(m.path("a.txt"), b"hello grantfs").unwrap();
    assert_eq!(fs::read(m.path("a.txt")).unwrap(), b"hello grantfs");
    assert_eq!(fs::read(backing.join("a.txt")).unwrap(), b"hello grantfs");

    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(m.path("a.txt"))
        .unwrap();
    f.write_all(b", appended").unwrap();
    close(f).unwrap();
    assert_eq!(
        fs::read(backing.join("a.txt")).unwrap(),
        b"hello grantfs, appended"
    );

    fs::create_dir(m.path("d")).unwrap();
    fs::write(m.path("d/b.txt"), b"bee").unwrap();
    assert!(backing.join("d").is_dir());
    fs::rename(m.path("d/b.txt"), m.path("d/c.txt")).unwrap();
    assert!(!backing.join("d/b.txt").exists());
    assert_eq!(fs::read(backing.join("d/c.txt")).unwrap(), b"bee");
    assert_eq!(read_dir_names(&m.path("d")).unwrap(), vec!["c.txt"]);
    fs::set_permissions(m.path("d/c.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        fs::metadata(backing.join("d/c.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    truncate(&m.path("d/c.txt"), 1).unwrap();
    assert_eq!(fs::read(backing.join("d/c.txt")).unwrap(), b"b");
    fs::remove_file(m.path("d/c.txt")).unwrap();
    assert!(!backing.join("d/c.txt").exists());
    fs::remove_dir(m.path("d")).unwrap();
    assert!(!backing.join("d").exists());
    assert_eq!(read_dir_names(&m.mountpoint).unwrap(), vec!["a.txt"]);
}

#[test]
fn active_ro_session_serves_reads_and_refuses_changes_with_erofs() {
    require_fuse!();
    let ctl = Control::start();
    let host = Host::new();
    let ws = ctl.workspace("ws");
    let backing = host.backing("admin/ws");
    fs::create_dir_all(backing.join("sub")).unwrap();
    fs::write(backing.join("hello.txt"), b"read me").unwrap();
    let t = ctl.ticket(&ws, "acme", "task-1", "ro", 300);
    let m = host.mount(&ws, &host.mountpoint("m"), &t.mount_ticket, &[]);
    assert_eq!(m.event["mode"], "ro");

    assert_eq!(fs::read(m.path("hello.txt")).unwrap(), b"read me");
    assert_eq!(
        read_dir_names(&m.mountpoint).unwrap(),
        vec!["hello.txt", "sub"]
    );
    assert_eq!(fs::metadata(m.path("hello.txt")).unwrap().len(), 7);

    let existing = m.path("hello.txt");
    assert_errno(
        fs::OpenOptions::new().write(true).open(&existing),
        EROFS,
        "open for write",
    );
    assert_errno(File::create(m.path("new.txt")), EROFS, "create");
    assert_errno(fs::create_dir(m.path("newdir")), EROFS, "mkdir");
    assert_errno(fs::remove_file(&existing), EROFS, "unlink");
    assert_errno(fs::remove_dir(m.path("sub")), EROFS, "rmdir");
    assert_errno(fs::rename(&existing, m.path("moved.txt")), EROFS, "rename");
    assert_errno(
        fs::set_permissions(&existing, fs::Permissions::from_mode(0o600)),
        EROFS,
        "chmod",
    );
    assert_errno(truncate(&existing, 0), EROFS, "truncate");
    assert_errno(
        std::os::unix::fs::symlink("hello.txt", m.path("ln")),
        EROFS,
        "symlink",
    );
    // Nothing changed underneath.
    assert_eq!(fs::read(backing.join("hello.txt")).unwrap(), b"read me");
    assert!(!backing.join("new.txt").exists());
    assert_eq!(
        fs::metadata(backing.join("hello.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        fs::metadata(&existing).unwrap().permissions().mode() & 0o777
    );
}

#[test]
fn past_expires_at_every_call_fails_with_eacces() {
    require_fuse!();
    let (ctl, _host, m) = setup("rw", 2, &[]);
    fs::write(m.path("f"), b"data").unwrap();
    let mut fd = File::open(m.path("f")).unwrap();
    let mut buf = Vec::new();
    fd.read_to_end(&mut buf).unwrap();
    fs::metadata(m.path("f")).unwrap();
    fs::metadata(m.path("f")).unwrap();
    let exp = m.expires_at();
    let left = ms_until(exp);
    assert!(
        left > 0,
        "mount took so long the session already expired ({left} ms)"
    );
    wait_eacces(
        &m.path("f"),
        Duration::from_millis(u64::try_from(left).unwrap() + 1000),
    );
    let late = -ms_until(exp);
    println!("expiry: EACCES {late} ms after expires_at");
    assert!(
        late <= 1000,
        "EACCES came {late} ms after expires_at (limit 1000)"
    );
    assert_errno(
        fd.read_at(&mut buf, 0),
        EACCES,
        "read on an fd opened before",
    );
    assert_errno(fs::read_dir(&m.mountpoint), EACCES, "readdir");
    assert_errno(File::create(m.path("g")), EACCES, "create");
    close(fd).unwrap();
    let s = ctl.session(&m.session_id());
    assert_eq!(s.state, SessionState::Expired);
}

#[test]
fn control_plane_unreachable_past_offline_grace_fails_closed_then_reopens() {
    require_fuse!();
    let (mut ctl, _host, m) = setup("rw", 300, &["--offline-grace", "2"]);
    fs::write(m.path("f"), b"data").unwrap();
    fs::metadata(m.path("f")).unwrap();
    fs::metadata(m.path("f")).unwrap();
    // Served while the control plane keeps in touch, past the grace.
    std::thread::sleep(Duration::from_millis(2500));
    fs::metadata(m.path("f")).expect("served while the control plane is reachable");

    ctl.kill9();
    let t0 = Instant::now();
    let closed = wait_eacces(&m.path("f"), Duration::from_secs(5));
    println!(
        "offline: EACCES {} ms after kill -9 (grace 2 s)",
        closed.as_millis()
    );
    assert!(
        closed >= Duration::from_millis(900),
        "gate closed {closed:?} after the control plane died, before the 2 s grace (less the 1 s keepalive)"
    );
    assert_errno(fs::read(m.path("f")), EACCES, "read while offline");
    assert_errno(File::create(m.path("g")), EACCES, "create while offline");

    ctl.restart();
    let t1 = Instant::now();
    wait_for(
        "the gate to reopen after the control plane came back",
        Duration::from_secs(10),
        || fs::metadata(m.path("f")).ok(),
    );
    println!(
        "offline: served again {} ms after restart ({} ms offline in total)",
        t1.elapsed().as_millis(),
        t0.elapsed().as_millis()
    );
    assert_eq!(fs::read(m.path("f")).unwrap(), b"data");
    fs::write(m.path("g"), b"back").unwrap();
    assert_eq!(ctl.session(&m.session_id()).state, SessionState::Active);
}

/// kill -9 of the control plane while clients issue tickets and two mounts are live: after the
/// restart every acknowledged ticket is still there, tickets issue again, and the agents reconnect
/// with their gates right: the session revoked right after the restart closes, the other stays open.
#[test]
fn kill9_of_the_control_plane_under_load_keeps_acknowledged_state_and_gates_right() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    require_fuse!();
    let mut ctl = Control::start();
    let host = Host::new();
    let ws = ctl.workspace("ws");
    let ta = ctl.ticket(&ws, "acme", "task-a", "rw", 300);
    let tb = ctl.ticket(&ws, "acme", "task-b", "rw", 300);
    let a = host.mount(&ws, &host.mountpoint("a"), &ta.mount_ticket, &[]);
    let b = host.mount(&ws, &host.mountpoint("b"), &tb.mount_ticket, &[]);
    fs::write(a.path("fa"), b"a").unwrap();
    fs::write(b.path("fb"), b"b").unwrap();

    // Load: a client issuing tickets as fast as it can, recording what was acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let loader = {
        let (stop, url, key, ws) = (stop.clone(), ctl.url.clone(), ctl.key.clone(), ws.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let client = grantfs::client::Client::new(&url, Some(key)).unwrap();
            let mut acked = Vec::new();
            let mut refused = 0u32;
            for i in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let req = grantfs::api::CreateTicket {
                    tenant_slug: "load".into(),
                    runtime_id: format!("load-{i}"),
                    workspace: ws.clone(),
                    mode: "ro".into(),
                    ttl_seconds: 300,
                };
                match rt.block_on(client.create_ticket(&req)) {
                    Ok(t) => acked.push(t.session_id),
                    Err(e) => {
                        assert!(
                            e.is_transport(),
                            "only a dead server may fail a ticket: {e}"
                        );
                        refused += 1;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
            (acked, refused)
        })
    };
    wait_for(
        "some load before the crash",
        Duration::from_secs(10),
        || (ctl.metric("grantfs_tickets_issued_total") > 50).then_some(()),
    );
    ctl.restart(); // kill -9, then the same state dir, port and public URL
    ctl.block(ctl.client.revoke_session(&ta.session_id))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (acked, refused) = loader.join().unwrap();
    println!(
        "{} tickets acknowledged, {refused} refused while the server was down",
        acked.len()
    );

    // Revoked meanwhile: closed, whether the agent learned it from the stream or on reconnect.
    let closed = wait_eacces(&a.path("fa"), Duration::from_secs(10));
    println!(
        "revoked across the restart: EACCES after {} ms",
        closed.as_millis()
    );
    // Still valid: open, served throughout and after the reconnection.
    wait_for(
        "mount b's agent to reconnect",
        Duration::from_secs(10),
        || (ctl.metric("grantfs_event_streams_open") >= 1).then_some(()),
    );
    assert_eq!(fs::read(b.path("fb")).unwrap(), b"b");
    fs::write(b.path("fb2"), b"still writable").unwrap();
    assert_eq!(ctl.session(&tb.session_id).state, SessionState::Active);
    // Nothing acknowledged was lost; tickets issue again.
    for id in &acked {
        ctl.block(ctl.client.get_session(id))
            .unwrap_or_else(|e| panic!("acknowledged ticket session {id} lost: {e}"));
    }
    ctl.ticket(&ws, "acme", "task-after", "rw", 60);
    drop((a, b));
}

// ---- 2. Every revocation path ---------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum RevokePath {
    DeleteGrant,
    RevokeByRuntime,
    DeleteTenant,
    DeleteWorkspace,
    DeleteSession,
}

fn revocation_path(path: RevokePath) {
    let ctl = Control::start();
    let host = Host::new();
    let ws = ctl.workspace("ws");
    // For the runtime-wide revoke, the session hangs off a tenant-wide grant that must survive.
    let tenant_grant = matches!(path, RevokePath::RevokeByRuntime).then(|| {
        ctl.block(ctl.client.create_tenant(&CreateTenant {
            slug: "acme".into(),
            external_id: None,
            metadata: None,
        }))
        .unwrap();
        ctl.block(ctl.client.create_grant(&CreateGrant {
            workspace: ws.clone(),
            tenant_slug: "acme".into(),
            runtime_id: None,
            mode: "rw".into(),
            ttl_seconds: None,
        }))
        .unwrap()
    });
    let t = ctl.ticket(&ws, "acme", "task-1", "rw", 300);
    if let Some(g) = &tenant_grant {
        assert_eq!(
            t.grant_id, g.id,
            "the ticket should use the tenant-wide grant"
        );
    }
    let m = host.mount(&ws, &host.mountpoint("m"), &t.mount_ticket, &[]);
    fs::write(m.path("f"), b"some data").unwrap();
    fs::create_dir(m.path("d")).unwrap();
    // Warm every cache: attributes, entries, pages, the directory listing.
    let fd = File::open(m.path("f")).unwrap();
    let mut buf = vec![0u8; 64];
    assert_eq!(fd.read_at(&mut buf, 0).unwrap(), 9);
    fs::metadata(m.path("f")).unwrap();
    fs::metadata(m.path("f")).unwrap();
    assert_eq!(read_dir_names(&m.mountpoint).unwrap(), vec!["d", "f"]);
    ctl.wait_streams(1);
    let delivered = ctl.metric(DELIVERED);

    let client = &ctl.client;
    match path {
        RevokePath::DeleteGrant => {
            ctl.block(client.revoke_grant(&t.grant_id)).unwrap();
        }
        RevokePath::RevokeByRuntime => {
            let n = ctl
                .block(client.revoke_grants(&RevokeGrants {
                    tenant_slug: "acme".into(),
                    runtime_id: Some("task-1".into()),
                    workspace: None,
                }))
                .unwrap();
            assert_eq!(n.revoked_sessions, 1);
        }
        RevokePath::DeleteTenant => {
            ctl.block(client.delete_tenant("acme")).unwrap();
        }
        RevokePath::DeleteWorkspace => {
            ctl.block(client.delete_workspace("admin", "ws")).unwrap();
        }
        RevokePath::DeleteSession => {
            ctl.block(client.revoke_session(&t.session_id)).unwrap();
        }
    }
    let t0 = Instant::now();
    let latency = wait_eacces(&m.path("f"), Duration::from_secs(1));
    // Each probe must fail within the same second; the cache invalidation runs on its own thread.
    let deadline = t0 + Duration::from_secs(1);
    loop {
        match fd.read_at(&mut buf, 0) {
            Err(e) if e.raw_os_error() == Some(EACCES) => break,
            r => assert!(
                Instant::now() < deadline,
                "read on an fd opened before: still {r:?} 1 s after the revoke call"
            ),
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_errno(read_dir_names(&m.mountpoint), EACCES, "readdir");
    assert_errno(File::create(m.path("new")), EACCES, "create");
    assert_errno(fs::metadata(m.path("d")), EACCES, "stat of a cached dir");
    let all = t0.elapsed();
    println!(
        "{path:?}: warm stat EACCES {} us after the revoke call returned; all four checks by {} us",
        latency.as_micros(),
        all.as_micros()
    );
    assert!(all < Duration::from_secs(1), "{path:?}: took {all:?}");
    assert_eq!(
        ctl.metric(DELIVERED),
        delivered + 1,
        "{path:?}: the revocation was not pushed on the open event stream"
    );
    close(fd).expect("close of a descriptor opened before the revocation");

    let s = ctl.session(&t.session_id);
    assert_eq!(s.state, SessionState::Revoked, "{s:?}");
    if let Some(g) = tenant_grant {
        let g = ctl.block(client.get_grant(&g.id)).unwrap();
        assert_eq!(g.state, GrantState::Active, "the tenant-wide grant stays");
    }
}

#[test]
fn revoke_by_delete_grant() {
    require_fuse!();
    revocation_path(RevokePath::DeleteGrant);
}

#[test]
fn revoke_by_runtime_under_a_tenant_wide_grant() {
    require_fuse!();
    revocation_path(RevokePath::RevokeByRuntime);
}

#[test]
fn revoke_by_delete_tenant() {
    require_fuse!();
    revocation_path(RevokePath::DeleteTenant);
}

#[test]
fn revoke_by_delete_workspace() {
    require_fuse!();
    revocation_path(RevokePath::DeleteWorkspace);
}

#[test]
fn revoke_by_delete_session() {
    require_fuse!();
    revocation_path(RevokePath::DeleteSession);
}

#[test]
fn revocation_latency_over_30_revocations() {
    require_fuse!();
    let ctl = Control::start();
    let host = Host::new();
    let ws = ctl.workspace("ws");
    fs::create_dir_all(host.backing(&ws)).unwrap();
    fs::write(host.backing(&ws).join("f"), b"x").unwrap();
    let mp = host.mountpoint("lat");
    // Even iterations revoke as soon as the agent's event stream is registered; odd ones once
    // the stream has settled (a measurement choice, not a correctness wait).
    let (mut fresh, mut settled) = (Vec::new(), Vec::new());
    for i in 0..30 {
        let t = ctl.ticket(&ws, "acme", &format!("task-{i}"), "rw", 300);
        let m = host.mount(&ws, &mp, &t.mount_ticket, &[]);
        let f = m.path("f");
        fs::metadata(&f).unwrap();
        fs::metadata(&f).unwrap();
        ctl.wait_streams(1);
        if i % 2 == 1 {
            std::thread::sleep(Duration::from_millis(200));
            fs::metadata(&f).unwrap();
        }
        match i % 3 {
            0 => drop(ctl.block(ctl.client.revoke_session(&t.session_id)).unwrap()),
            1 => drop(ctl.block(ctl.client.revoke_grant(&t.grant_id)).unwrap()),
            _ => drop(
                ctl.block(ctl.client.revoke_grants(&RevokeGrants {
                    tenant_slug: "acme".into(),
                    runtime_id: Some(format!("task-{i}")),
                    workspace: None,
                }))
                .unwrap(),
            ),
        }
        let l = wait_eacces(&f, Duration::from_secs(2));
        if i % 2 == 1 {
            settled.push(l)
        } else {
            fresh.push(l)
        }
        drop(m);
    }
    assert_eq!(ctl.metric(DELIVERED), 30, "every revocation was pushed");
    let mut all: Vec<_> = fresh.iter().chain(&settled).copied().collect();
    for (name, v) in [
        ("all 30", &mut all),
        ("15 fresh streams", &mut fresh),
        ("15 settled streams", &mut settled),
    ] {
        v.sort();
        println!(
            "revocation latency, {name}: p50 {} us, p99 {} us, max {} us",
            percentile(v, 50.0).as_micros(),
            percentile(v, 99.0).as_micros(),
            v[v.len() - 1].as_micros()
        );
    }
    let max = all[all.len() - 1];
    assert!(max < Duration::from_secs(1), "max {max:?}");
    let p50 = percentile(&settled, 50.0);
    assert!(p50 < Duration::from_millis(100), "settled p50 {p50:?}");
}

// ---- 3. TTL expiry while the control plane is frozen ----------------------------------------

#[test]
fn ttl_expiry_closes_the_gate_with_the_control_plane_frozen() {
    require_fuse!();
    let (mut ctl, _host, m) = setup("rw", 3, &[]);
    fs::write(m.path("f"), b"data").unwrap();
    fs::metadata(m.path("f")).unwrap();
    fs::metadata(m.path("f")).unwrap();
    ctl.sigstop();
    fs::metadata(m.path("f")).expect("served right after the control plane froze");
    let exp = m.expires_at();
    let left = ms_until(exp);
    assert!(
        left > 0,
        "session expired before the test could start ({left} ms)"
    );
    wait_eacces(
        &m.path("f"),
        Duration::from_millis(u64::try_from(left).unwrap() + 1000),
    );
    let late = -ms_until(exp);
    println!("frozen control plane: EACCES {late} ms after expires_at");
    assert!(late <= 1000, "EACCES {late} ms after expires_at");
    assert_errno(File::create(m.path("g")), EACCES, "create after expiry");
    ctl.sigcont();
    // Still closed once the control plane is back: expiry is for good.
    std::thread::sleep(Duration::from_millis(300));
    assert_errno(fs::metadata(m.path("f")), EACCES, "stat after SIGCONT");
}

// ---- 4. Refusals ----------------------------------------------------------------------------

fn assert_refused(out: &std::process::Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit status; stderr: {stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("grantfs-agent: "))
        .unwrap_or_else(|| panic!("no `grantfs-agent: ` line on stderr: {stderr}"));
    assert!(
        line.to_lowercase().contains(needle),
        "expected {needle:?} in {line:?}"
    );
}

#[test]
fn a_ticket_is_single_use() {
    require_fuse!();
    let ctl = Control::start();
    let host = Host::new();
    let ws = ctl.workspace("ws");
    let t = ctl.ticket(&ws, "acme", "task-1", "rw", 300);
    let _a = host.mount(&ws, &host.mountpoint("a"), &t.mount_ticket, &[]);
    let b = host.mountpoint("b");
    let out = host.mount_cmd(&ws, &b, &t.mount_ticket, &[]);
    assert_refused(&out, "already used");
    assert!(!is_mounted(&b));
}

#[test]
fn wrong_workspace_is_refused_before_any_network_call() {
    require_fuse!();
    let ctl = Control::start();
    let host = Host::new();
    let ws = ctl.workspace("ws");
    ctl.workspace("other");
    let t = ctl.ticket(&ws, "acme", "task-1", "rw", 300);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mp = host.mountpoint("m");
    let control = format!("http://127.0.0.1:{closed}");
    let out = host.mount_cmd(
        "admin/other",
        &mp,
        &t.mount_ticket,
        &["--control", &control],
    );
    assert_refused(&out, "admin/other");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("unreachable"), "{stderr}");
    assert!(!is_mounted(&mp));
    // The ticket was never exchanged: it still mounts the right workspace.
    let m = host.mount(&ws, &mp, &t.mount_ticket, &[]);
    assert_eq!(m.event["workspace"], "admin/ws");
}

#[test]
fn expired_and_garbage_tickets_are_refused() {
    require_fuse!();
    let ctl = Control::start();
    let host = Host::new();
    let ws = ctl.workspace("ws");
    let mp = host.mountpoint("m");
    for garbage in ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30."] {
        let out = host.mount_cmd(&ws, &mp, garbage, &[]);
        assert_refused(&out, "ticket");
    }
    let out = host.mount_cmd(&ws, &mp, "", &[]);
    assert_refused(&out, "ticket");
    let t = ctl.ticket(&ws, "acme", "task-1", "rw", 1);
    wait_for("the ticket to expire", Duration::from_secs(5), || {
        (ms_until(t.expires_at) < -1000).then_some(())
    });
    let out = host.mount_cmd(&ws, &mp, &t.mount_ticket, &[]);
    assert_refused(&out, "expired");
    assert!(!is_mounted(&mp));
    // Usage errors are exit 2.
    let out = host.agent().args(["mount", "admin/ws"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// RFC 8725-style attacks on a real ticket: each forgery is refused by the agent itself (its JWKS
/// check), before any exchange, and the genuine ticket still mounts afterwards.
#[test]
fn forged_tickets_are_refused_by_the_agent_before_any_exchange() {
    use base64::Engine;
    require_fuse!();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let ctl = Control::start();
    let host = Host::new();
    let ws = ctl.workspace("ws");
    let mp = host.mountpoint("m");
    let t = ctl.ticket(&ws, "acme", "task-1", "ro", 300);
    let parts: Vec<&str> = t.mount_ticket.split('.').collect();
    let header: serde_json::Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    let enc = |v: &serde_json::Value| b64.encode(serde_json::to_vec(v).unwrap());
    let with_header = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut h = header.clone();
        f(&mut h);
        format!("{}.{}.{}", enc(&h), parts[1], parts[2])
    };
    let with_claims = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims.clone();
        f(&mut c);
        format!("{}.{}.{}", parts[0], enc(&c), parts[2])
    };
    // HS256 "signed" with the published public key as the HMAC secret.
    let jwks = ctl.block(ctl.client.jwks()).unwrap();
    let public = b64.decode(&jwks.keys[0].x).unwrap();
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = header["kid"].as_str().map(str::to_owned);
    let hs256 = jsonwebtoken::encode(
        &hs,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&public),
    )
    .unwrap();
    let forgeries: Vec<(&str, String)> = vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                enc(&serde_json::json!({"alg": "none", "typ": "JWT", "kid": header["kid"]})),
                parts[1]
            ),
        ),
        ("HS256 with the public key", hs256),
        (
            "ro widened to rw",
            with_claims(&|c| c["mode"] = "rw".into()),
        ),
        (
            "another runtime",
            with_claims(&|c| c["sub"] = "task-2".into()),
        ),
        (
            "exp pushed out",
            with_claims(&|c| c["exp"] = (c["exp"].as_i64().unwrap() + 86_400).into()),
        ),
        (
            "wrong audience",
            with_claims(&|c| c["aud"] = "someone-else".into()),
        ),
        (
            "no kid",
            with_header(&|h| {
                h.as_object_mut().unwrap().remove("kid");
            }),
        ),
        (
            "unknown kid",
            with_header(&|h| h["kid"] = "k-not-ours".into()),
        ),
        ("wrong typ", with_header(&|h| h["typ"] = "at+jwt".into())),
        (
            "truncated",
            t.mount_ticket[..t.mount_ticket.len() - 10].to_owned(),
        ),
        (
            "oversized",
            format!("{}{}", t.mount_ticket, "A".repeat(9000)),
        ),
        (
            "duplicate claim keys",
            format!(
                "{}.{}.{}",
                parts[0],
                b64.encode(format!(
                    "{{\"mode\":\"rw\",{}",
                    &String::from_utf8(b64.decode(parts[1]).unwrap()).unwrap()[1..]
                )),
                parts[2]
            ),
        ),
    ];
    let exchanges = ctl.metric("grantfs_exchanges_total");
    for (what, forged) in &forgeries {
        let out = host.mount_cmd(&ws, &mp, forged, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        assert!(stderr.contains("ticket"), "{what}: {stderr}");
        assert!(!is_mounted(&mp), "{what} mounted");
    }
    assert_eq!(
        ctl.metric("grantfs_exchanges_total"),
        exchanges,
        "a forgery reached the exchange"
    );
    assert_eq!(ctl.session(&t.session_id).state, SessionState::Issued);
    // The genuine ticket mounts, read-only as issued.
    let m = host.mount(&ws, &mp, &t.mount_ticket, &[]);
    assert_errno(
        fs::write(m.path("x"), b"x"),
        libc::EROFS,
        "write on the ro mount",
    );
}

#[test]
fn a_busy_mountpoint_is_refused() {
    require_fuse!();
    let ctl = Control::start();
    let host = Host::new();
    let ws = ctl.workspace("ws");
    let mp = host.mountpoint("m");
    let t1 = ctl.ticket(&ws, "acme", "task-1", "rw", 300);
    let _m = host.mount(&ws, &mp, &t1.mount_ticket, &[]);
    let t2 = ctl.ticket(&ws, "acme", "task-2", "rw", 300);
    let out = host.mount_cmd(&ws, &mp, &t2.mount_ticket, &[]);
    assert_refused(&out, "busy");
    // Refused before the exchange: the second session was never used.
    assert_eq!(ctl.session(&t2.session_id).state, SessionState::Issued);
}

// ---- 5. Path safety -------------------------------------------------------------------------

/// A directory swapped for a symlink to the outside in a tight loop (on the backing tree, as a
/// concurrent process on the host or another mount of the workspace would), while readers walk it
/// through the mount by path, by a held directory descriptor and by readdir: the daemon never
/// serves a byte from outside the workspace.
#[test]
fn a_directory_swapped_for_a_symlink_in_a_tight_loop_never_leaks_outside_content() {
    use std::os::unix::io::{AsRawFd, FromRawFd};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    require_fuse!();
    let ctl = Control::start();
    let host = Host::new();
    let ws = ctl.workspace("ws");
    let root = host.dir.path().canonicalize().unwrap();
    let outside = root.join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("f"), b"SECRET").unwrap();
    let backing = host.backing(&ws);
    fs::create_dir_all(backing.join("d")).unwrap();
    fs::write(backing.join("d/f"), b"inside").unwrap();
    let t = ctl.ticket(&ws, "acme", "task-1", "rw", 300);
    let mp = root.join("mnt").join("m");
    fs::create_dir_all(&mp).unwrap();
    let m = host.mount(&ws, &mp, &t.mount_ticket, &[]);

    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (stop, swaps, backing) = (stop.clone(), swaps.clone(), backing.clone());
        std::thread::spawn(move || {
            // A relative link: from the backing root it reaches the outside dir; from the mount (at
            // another depth) the kernel resolves it to nothing, so any SECRET read through the
            // mount could only come from the daemon following it. (An absolute link would be
            // followed by the kernel in the reader's own namespace: not the daemon's doing.)
            let rel = "../../../outside";
            for _ in 0..200_000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let _ = fs::rename(backing.join("d"), backing.join("d.real"));
                let _ = std::os::unix::fs::symlink(rel, backing.join("d"));
                let _ = fs::remove_file(backing.join("d"));
                let _ = fs::rename(backing.join("d.real"), backing.join("d"));
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let leaked = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..3)
        .map(|kind| {
            let (stop, leaked, reads) = (stop.clone(), leaked.clone(), reads.clone());
            let d = m.path("d");
            std::thread::spawn(move || {
                let name = std::ffi::CString::new("f").unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let got: Option<Vec<u8>> = match kind {
                        0 => fs::read(d.join("f")).ok(),
                        1 => File::open(&d).ok().and_then(|dir| {
                            // SAFETY: valid dirfd and NUL-terminated name.
                            let fd = unsafe {
                                libc::openat(dir.as_raw_fd(), name.as_ptr(), libc::O_RDONLY)
                            };
                            (fd >= 0).then(|| {
                                // SAFETY: openat just returned this descriptor to us.
                                let mut f = unsafe { File::from_raw_fd(fd) };
                                let mut v = Vec::new();
                                let _ = f.read_to_end(&mut v);
                                v
                            })
                        }),
                        _ => fs::read_dir(&d).ok().map(|rd| {
                            rd.flatten()
                                .filter_map(|e| fs::read(e.path()).ok())
                                .flatten()
                                .collect()
                        }),
                    };
                    reads.fetch_add(1, Ordering::Relaxed);
                    if got
                        .as_deref()
                        .is_some_and(|g| g.windows(6).any(|w| w == b"SECRET"))
                    {
                        leaked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    for r in readers {
        r.join().unwrap();
    }
    let (n_swaps, n_reads) = (swaps.load(Ordering::Relaxed), reads.load(Ordering::Relaxed));
    println!("{n_swaps} swaps, {n_reads} reads through the mount");
    assert!(
        n_swaps > 100 && n_reads > 100,
        "the race did not run: {n_swaps} swaps, {n_reads} reads"
    );
    assert_eq!(
        leaked.load(Ordering::Relaxed),
        0,
        "outside content was served through the mount"
    );
}

#[test]
fn the_daemon_never_serves_content_from_outside_the_workspace() {
    require_fuse!();
    let ctl = Control::start();
    let host = Host::new();
    let ws = ctl.workspace("ws");
    let root = host.dir.path().canonicalize().unwrap();
    // Outside the data root: root/outside/secret.
    let outside = root.join("outside");
    fs::create_dir_all(&outside).unwrap();
    let secret = b"TOP-SECRET outside the workspace";
    fs::write(outside.join("secret"), secret).unwrap();
    // backing = root/data/admin/ws, so `../../../outside` from the backing root reaches it on the
    // host; the mountpoint root/mnt/m is at another depth, so the kernel resolving the same text
    // relative to the mount lands on root/../outside, which does not exist.
    let backing = host.backing(&ws);
    fs::create_dir_all(backing.join("sub")).unwrap();
    fs::write(backing.join("sub/secret"), b"inside").unwrap();
    std::os::unix::fs::symlink("../../../outside/secret", backing.join("rel-link")).unwrap();
    std::os::unix::fs::symlink("../../../outside", backing.join("rel-dir")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), backing.join("abs-link")).unwrap();
    assert_eq!(
        fs::read(backing.join("rel-link")).unwrap(),
        secret,
        "test layout"
    );
    let t = ctl.ticket(&ws, "acme", "task-1", "rw", 300);
    let mp = root.join("mnt").join("m");
    fs::create_dir_all(&mp).unwrap();
    let m = host.mount(&ws, &mp, &t.mount_ticket, &[]);
    assert!(
        !root.parent().unwrap().join("outside").exists(),
        "test layout"
    );

    // Symlinks are served as symlinks (never followed by the daemon), with their text intact.
    for (name, target) in [
        ("rel-link", "../../../outside/secret".to_owned()),
        ("rel-dir", "../../../outside".to_owned()),
        (
            "abs-link",
            outside.join("secret").to_string_lossy().into_owned(),
        ),
    ] {
        let md = fs::symlink_metadata(m.path(name)).unwrap();
        assert!(md.file_type().is_symlink(), "{name} is served as {md:?}");
        assert_eq!(
            fs::read_link(m.path(name)).unwrap().to_string_lossy(),
            target
        );
    }
    // Read through the mount, relative links resolve relative to the mount (to nothing here).
    for p in ["rel-link", "rel-dir/secret"] {
        let r = fs::read(m.path(p));
        assert!(
            r.as_deref().ok() != Some(&secret[..]),
            "{p} through the mount served the outside file"
        );
        assert_eq!(errno_of(&r), Some(libc::ENOENT), "{p}: {r:?}");
    }

    // Swap a directory the kernel already knows for a symlink to the outside, under a live mount.
    assert_eq!(fs::read(m.path("sub/secret")).unwrap(), b"inside");
    let dir = File::open(m.path("sub")).unwrap();
    fs::rename(backing.join("sub"), backing.join("sub.orig")).unwrap();
    std::os::unix::fs::symlink(&outside, backing.join("sub")).unwrap();
    // openat on the held directory: the kernel asks the daemon for `secret` in the inode it knows
    // as `sub`; the daemon must not walk the new symlink out of the workspace.
    let name = std::ffi::CString::new("secret").unwrap();
    use std::os::unix::io::{AsRawFd, FromRawFd};
    // SAFETY: valid dirfd and NUL-terminated name.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), libc::O_RDONLY) };
    if fd >= 0 {
        // SAFETY: openat just returned this descriptor to us.
        let mut f = unsafe { File::from_raw_fd(fd) };
        let mut got = Vec::new();
        let r = f.read_to_end(&mut got);
        assert!(
            got != secret,
            "openat(<mnt>/sub, secret) served the outside file ({r:?})"
        );
    } else {
        println!(
            "openat through the swapped dir refused: {}",
            io::Error::last_os_error()
        );
    }
    // By path, with entries cached or not: never the outside content.
    let r = fs::read(m.path("sub/secret"));
    assert!(
        r.as_deref().ok() != Some(&secret[..]),
        "<mnt>/sub/secret served the outside file"
    );
    // Same swap with a relative symlink that the kernel cannot follow to the outside.
    fs::remove_file(backing.join("sub")).unwrap();
    std::os::unix::fs::symlink("../../../outside", backing.join("sub")).unwrap();
    let r = fs::read(m.path("sub/secret"));
    assert!(
        r.as_deref().ok() != Some(&secret[..]),
        "<mnt>/sub/secret (relative swap) served the outside file"
    );
    drop(dir);
    drop(m);
}

// ---- 6. Real tools --------------------------------------------------------------------------

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn git_works_on_a_rw_mount() {
    require_fuse!();
    assert!(have("git"), "git is not installed");
    let (_ctl, host, m) = setup("rw", 300, &[]);
    let repo = m.path("repo");
    fs::create_dir(&repo).unwrap();
    let git = |args: &[&str]| {
        run(Command::new("git")
            .args([
                "-c",
                "user.name=grantfs e2e",
                "-c",
                "user.email=e2e@grantfs.invalid",
                "-c",
                "init.defaultBranch=main",
                "-c",
                "safe.directory=*",
            ])
            .args(args)
            .current_dir(&repo)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", host.dir.path()))
    };
    git(&["init", "-q"]);
    fs::write(repo.join("README"), b"hello\n").unwrap();
    fs::create_dir(repo.join("src")).unwrap();
    fs::write(repo.join("src/lib.rs"), b"pub fn f() {}\n").unwrap();
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "first"]);
    fs::write(repo.join("README"), b"hello again\n").unwrap();
    git(&["commit", "-q", "-am", "second"]);
    let log = git(&["log", "--format=%s"]);
    assert_eq!(log, "second\nfirst\n");
    git(&["fsck", "--strict"]);
    assert_eq!(git(&["status", "--porcelain"]), "");
    assert!(host.backing("admin/ws").join("repo/.git/HEAD").is_file());
}

#[test]
fn sqlite_in_wal_mode_works_on_a_rw_mount() {
    require_fuse!();
    let (_ctl, _host, m) = setup("rw", 300, &[]);
    let db = m.path("app.db");
    let sql = "PRAGMA journal_mode=WAL;\n\
               CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);\n\
               BEGIN;\n\
               WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 1000)\n\
               INSERT INTO t(id, v) SELECT i, printf('row-%04d', i) FROM n;\n\
               COMMIT;\n\
               SELECT count(*), sum(id), max(v) FROM t;\n\
               PRAGMA integrity_check;\n";
    let out = if have("sqlite3") {
        run(Command::new("sqlite3").arg(&db).arg(sql))
    } else {
        let py = format!(
            "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\n\
             print(c.execute('PRAGMA journal_mode=WAL').fetchone()[0])\n\
             c.executescript('''{}''')\n\
             print('|'.join(map(str,c.execute('SELECT count(*), sum(id), max(v) FROM t').fetchone())))\n\
             print(c.execute('PRAGMA integrity_check').fetchone()[0])\n",
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL); BEGIN; \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 1000) \
             INSERT INTO t(id, v) SELECT i, printf('row-%04d', i) FROM n; COMMIT;"
        );
        run(Command::new("python3").arg("-c").arg(py).arg(&db))
    };
    assert_eq!(out, "wal\n1000|500500|row-1000\nok\n");
    // A second connection reads it back (through the WAL and after a checkpoint).
    let sql = "SELECT count(*) FROM t WHERE v LIKE 'row-%';\nPRAGMA wal_checkpoint(TRUNCATE);\nPRAGMA integrity_check;\n";
    if have("sqlite3") {
        let out = run(Command::new("sqlite3").arg(&db).arg(sql));
        assert_eq!(out, "1000\n0|0|0\nok\n");
    }
}

#[test]
fn tar_extract_matches_the_source_tree() {
    require_fuse!();
    let (_ctl, host, m) = setup("rw", 300, &[]);
    let src = host.dir.path().join("src-tree");
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for d in 0..6 {
        let dir = src.join(format!("dir{d}")).join(format!("nested{}", d % 3));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..8 {
            let len = match f {
                0 => 0,
                1 => 1,
                2 => 4095,
                3 => 4097,
                4 => 300_000,
                _ => (next() % 70_000) as usize,
            };
            let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            fs::write(dir.join(format!("file{f}.bin")), data).unwrap();
        }
        std::os::unix::fs::symlink("file1.bin", dir.join("link")).unwrap();
    }
    fs::set_permissions(src.join("dir0"), fs::Permissions::from_mode(0o750)).unwrap();
    let tarball = host.dir.path().join("tree.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&tarball)
        .arg("-C")
        .arg(&src)
        .arg("."));
    let dest = m.path("tree");
    fs::create_dir(&dest).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(&tarball)
        .arg("-C")
        .arg(&dest));
    run(Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(&src)
        .arg(&dest));
    run(Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(&src)
        .arg(host.backing("admin/ws").join("tree")));
    assert_eq!(
        fs::metadata(dest.join("dir0"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o750
    );
}

// ---- 7. status, a killed agent, unmount -----------------------------------------------------

#[test]
fn status_lists_the_mount_and_a_killed_agent_leaves_a_stale_mount_that_unmount_clears() {
    require_fuse!();
    let (ctl, host, m) = setup("rw", 300, &[]);
    let mp = m.mountpoint.clone();
    let st = host.status_json();
    let rows = st["mounts"].as_array().expect("mounts array");
    assert_eq!(rows.len(), 1, "{st}");
    let r = &rows[0];
    assert_eq!(r["mountpoint"], mp.to_string_lossy().as_ref());
    assert_eq!(r["workspace"], "admin/ws");
    assert_eq!(r["mode"], "rw");
    assert_eq!(r["session_id"], m.event["session_id"]);
    assert_eq!(r["gate"], "active");
    assert_eq!(r["expires_at"], m.event["expires_at"]);
    assert_eq!(r["health"], "live");
    assert_eq!(r["pid"].as_u64(), Some(u64::from(m.pid)));

    signal(m.pid, libc::SIGKILL);
    // Regression: an exited agent not yet reaped by init counted as running (`live`).
    wait_for("status to say stale", Duration::from_secs(1), || {
        let st = host.status_json();
        (st["mounts"][0]["health"] == "stale").then_some(())
    });
    assert!(
        is_mounted(&mp),
        "the killed agent's mount is still in the table"
    );

    let t2 = ctl.ticket("admin/ws", "acme", "task-2", "rw", 300);
    let out = host.mount_cmd("admin/ws", &mp, &t2.mount_ticket, &[]);
    assert_refused(&out, "busy");

    let out = m.unmount_cmd();
    assert!(
        out.status.success(),
        "unmount of a stale mount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(&mp), "still in /proc/self/mountinfo");
    assert_eq!(host.status_json()["mounts"], serde_json::json!([]));
    // And the mountpoint is usable again.
    let m2 = host.mount("admin/ws", &mp, &t2.mount_ticket, &[]);
    fs::write(m2.path("after"), b"ok").unwrap();
}

// ---- 8. Ending a session --------------------------------------------------------------------

#[test]
fn sigterm_to_the_agent_ends_the_session() {
    require_fuse!();
    let (ctl, _host, m) = setup("rw", 300, &[]);
    let id = m.session_id();
    assert_eq!(ctl.session(&id).state, SessionState::Active);
    signal(m.pid, libc::SIGTERM);
    wait_for("the mount to go", Duration::from_secs(10), || {
        (!is_mounted(&m.mountpoint)).then_some(())
    });
    wait_for("the session to be ended", Duration::from_secs(10), || {
        (ctl.session(&id).state == SessionState::Ended).then_some(())
    });
    wait_for("the agent to exit", Duration::from_secs(10), || {
        (!pid_alive(m.pid)).then_some(())
    });
}

#[test]
fn unmount_ends_the_session() {
    require_fuse!();
    let (ctl, host, m) = setup("rw", 300, &[]);
    let id = m.session_id();
    let t0 = Instant::now();
    let out = m.unmount_cmd();
    let took = t0.elapsed();
    assert!(
        out.status.success(),
        "unmount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(&m.mountpoint));
    // Regression: `unmount` took as long as init took to reap the exited agent (2 s here, for
    // ever under an init that never reaps), because a zombie counted as a running agent.
    println!("unmount took {} ms", took.as_millis());
    assert!(took < Duration::from_secs(1), "unmount took {took:?}");
    wait_for("the session to be ended", Duration::from_secs(10), || {
        (ctl.session(&id).state == SessionState::Ended).then_some(())
    });
    assert_eq!(host.status_json()["mounts"], serde_json::json!([]));
}

/// `--foreground --json`: the ticket from GRANTFS_TICKET or --ticket-file, one JSON line per event
/// (mounted, revoked with its reason, unmounted), and a clean exit 0 on SIGTERM.
#[test]
fn foreground_json_reports_mounted_revoked_and_unmounted() {
    use std::io::BufRead;
    require_fuse!();
    let ctl = Control::start_with_keepalive(1);
    let host = Host::new();
    let ws = ctl.workspace("ws");
    for source in ["env", "file"] {
        let mp = host.mountpoint(source);
        let t = ctl.ticket(&ws, "acme", &format!("task-{source}"), "rw", 300);
        let mut cmd = host.agent();
        cmd.arg("mount")
            .arg(&ws)
            .arg(&mp)
            .arg("--data-root")
            .arg(&host.data_root)
            .args(["--foreground", "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        let ticket_file = host.dir.path().join("ticket");
        if source == "env" {
            cmd.env("GRANTFS_TICKET", &t.mount_ticket);
        } else {
            fs::write(&ticket_file, &t.mount_ticket).unwrap();
            cmd.arg("--ticket-file").arg(&ticket_file);
        }
        let mut child = cmd.spawn().unwrap();
        // Read the agent's lines on a thread, so a missing event fails the test instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let pid = child.id();
        let next = || -> serde_json::Value {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(line) => serde_json::from_str(&line).unwrap(),
                Err(e) => {
                    signal(pid, libc::SIGKILL);
                    panic!("no event line from the agent within 10 s ({e})");
                }
            }
        };
        let mounted = next();
        assert_eq!(mounted["event"], "mounted", "{source}: {mounted}");
        assert_eq!(mounted["session_id"], t.session_id.as_str());
        assert_eq!(mounted["mode"], "rw");
        fs::write(mp.join("hello"), b"hi").unwrap();
        ctl.block(ctl.client.revoke_session(&t.session_id)).unwrap();
        let revoked = next();
        assert_eq!(revoked["event"], "revoked", "{source}: {revoked}");
        assert_eq!(revoked["reason"], "session_revoked");
        assert_errno(
            fs::read(mp.join("hello")),
            libc::EACCES,
            "read after revoke",
        );
        signal(child.id(), libc::SIGTERM);
        let unmounted = next();
        assert_eq!(unmounted["event"], "unmounted", "{source}: {unmounted}");
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{source}");
        assert!(!is_mounted(&mp), "{source}: still mounted after SIGTERM");
        assert_eq!(fs::read(host.backing(&ws).join("hello")).unwrap(), b"hi");
        fs::remove_file(host.backing(&ws).join("hello")).unwrap();
    }
}

/// Two runtimes mounting the same workspace on one host (a tenant-wide grant): with the default
/// options each sees the other's new files and rewritten contents within the 1 s cache timeout.
#[test]
fn two_mounts_of_one_workspace_see_each_others_changes() {
    require_fuse!();
    let ctl = Control::start();
    let host = Host::new();
    let ws = ctl.workspace("ws");
    let ta = ctl.ticket(&ws, "acme", "task-a", "rw", 300);
    let tb = ctl.ticket(&ws, "acme", "task-b", "rw", 300);
    let a = host.mount(&ws, &host.mountpoint("a"), &ta.mount_ticket, &[]);
    let b = host.mount(&ws, &host.mountpoint("b"), &tb.mount_ticket, &[]);
    fs::write(a.path("shared.txt"), b"version 1").unwrap();
    assert_eq!(fs::read(b.path("shared.txt")).unwrap(), b"version 1");
    // b has the file's pages and attributes cached now; a rewrites it (same length) and adds one.
    assert_eq!(fs::read(b.path("shared.txt")).unwrap(), b"version 1");
    fs::write(a.path("shared.txt"), b"version 2").unwrap();
    fs::write(a.path("new.txt"), b"new").unwrap();
    wait_for("b to see a's rewrite", Duration::from_secs(3), || {
        (fs::read(b.path("shared.txt")).unwrap() == b"version 2").then_some(())
    });
    wait_for("b to list a's new file", Duration::from_secs(3), || {
        fs::read_dir(b.path(""))
            .unwrap()
            .flatten()
            .any(|e| e.file_name() == "new.txt")
            .then_some(())
    });
    fs::remove_file(b.path("new.txt")).unwrap();
    wait_for("a to see b's unlink", Duration::from_secs(3), || {
        (!a.path("new.txt").exists()).then_some(())
    });
}
